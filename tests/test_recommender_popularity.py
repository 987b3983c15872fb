"""The popularity prior (recommender/popularity.py): counts from training parts only, the
re-ranking against a brute-force sort, alpha 0 = the beam's order, selection on validation."""
import numpy as np
import pytest

from r3vae_jax.recommender import popularity


def test_log_popularity_counts_training_items():
  got = popularity.log_popularity([np.array([0, 2, 2]), np.array([2]), np.array([], np.int32)], 4)
  np.testing.assert_allclose(got, np.log1p([1, 0, 3, 0]), rtol=1e-6)
  with pytest.raises(ValueError, match=r"\[0, 4\)"):
    popularity.log_popularity([np.array([4])], 4)


def test_rerank_matches_a_brute_force_sort():
  rng = np.random.default_rng(0)
  log_pop = rng.uniform(0, 5, 30).astype(np.float32)
  ids = np.stack([rng.permutation(30)[:8] for _ in range(50)]).astype(np.int32)
  ids[::7, -3:] = -1
  scores = np.sort(rng.normal(-5, 2, ids.shape), axis=1)[:, ::-1]
  scores = np.where(ids >= 0, scores, -np.inf)
  for alpha in (0.0, 0.3, 2.0):
    got = popularity.rerank(ids, scores, log_pop, alpha)
    for row_ids, row_scores, row_got in zip(ids, scores, got):
      items = [(s + alpha * log_pop[i], -pos, i) for pos, (i, s) in
               enumerate(zip(row_ids, row_scores)) if i >= 0]
      expected = [i for _, _, i in sorted(items, reverse=True)]
      expected += [-1] * (len(row_ids) - len(expected))
      assert row_got.tolist() == expected, alpha
  np.testing.assert_array_equal(popularity.rerank(ids, scores, log_pop, 0.0), ids)


def test_rerank_moves_a_popular_item_up():
  ids, scores = np.array([[5, 7]]), np.array([[-1.0, -1.5]])
  log_pop = np.zeros(8, np.float32)
  log_pop[7] = 1.0
  assert popularity.rerank(ids, scores, log_pop, 0.4).tolist() == [[5, 7]]
  assert popularity.rerank(ids, scores, log_pop, 0.6).tolist() == [[7, 5]]


def test_select_takes_the_best_validation_alpha_and_the_smaller_on_ties():
  valid = {"0": {"ndcg@10": 0.030}, "0.5": {"ndcg@10": 0.034}, "0.25": {"ndcg@10": 0.034},
           "2": {"ndcg@10": 0.020}}
  assert popularity.select(valid, "ndcg@10") == "0.25"
  with pytest.raises(ValueError):
    popularity.select({}, "ndcg@10")
