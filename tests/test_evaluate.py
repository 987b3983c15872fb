"""Recall@K / NDCG@K on hand-computed cases, and batched, sharded evaluation with padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r3vae_jax import evaluate, parallel


def test_metrics_hand_computed():
  ranked = np.asarray([[3, 1, 2, -1],    # target 1 at rank 1
                       [5, 6, 7, 8],     # target 8 at rank 3
                       [-1, -1, -1, -1],  # empty ranking: miss
                       [9, 4, 0, 2]])    # target 0 at rank 2
  targets = np.asarray([1, 8, 0, 0])
  m = evaluate.ranking_metrics(ranked, targets, ks=(1, 2, 4))
  assert m["recall@1"] == 0.0 and m["ndcg@1"] == 0.0
  assert m["recall@2"] == pytest.approx(1 / 4)
  assert m["ndcg@2"] == pytest.approx((1 / np.log2(3)) / 4)
  assert m["recall@4"] == pytest.approx(3 / 4)
  assert m["ndcg@4"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5) + 1 / np.log2(4)) / 4)


def test_metrics_top1_hit_is_one_and_empty_slot_never_matches():
  m = evaluate.ranking_metrics(np.asarray([[7, 1], [-1, 2]]), np.asarray([7, 2]), ks=(1, 2))
  assert m == {"recall@1": 0.5, "ndcg@1": 0.5, "recall@2": 1.0,
               "ndcg@2": pytest.approx((1 + 1 / np.log2(3)) / 2)}
  np.testing.assert_array_equal(evaluate.hit_ranks([[3, 3, 4]], [3]), [0])


def test_metrics_reject_bad_arguments():
  with pytest.raises(ValueError, match="K=10"):
    evaluate.ranking_metrics(np.zeros((2, 5), int), np.zeros(2, int), ks=(5, 10))
  with pytest.raises(ValueError, match=r"\[U\]"):
    evaluate.ranking_metrics(np.zeros((2, 5), int), np.zeros(3, int))
  with pytest.raises(ValueError, match="targets"):
    evaluate.ranking_metrics(np.zeros((1, 5), int), np.asarray([-1]))


def test_rank_in_batches_pads_last_batch_and_keeps_order():
  mesh = parallel.make_mesh()
  users = 21                                     # 3 batches of 8, the last one padded by 3
  inputs = {"user": np.arange(users, dtype=np.int32),
            "hist": np.arange(users * 2, dtype=np.int32).reshape(users, 2)}
  calls = []

  @jax.jit
  def rank_fn(batch):
    calls.append(batch["user"].shape)
    return jnp.stack([batch["user"], batch["hist"][:, 1], batch["user"] * 0 - 1], axis=1)

  ranked = evaluate.rank_in_batches(rank_fn, inputs, 8, mesh)
  assert calls == [(8,)]                         # one shape, one trace
  np.testing.assert_array_equal(ranked[:, 0], np.arange(users))
  np.testing.assert_array_equal(ranked[:, 1], inputs["hist"][:, 1])
  targets = np.where(np.arange(users) % 2 == 0, np.arange(users), 10**6)
  m = evaluate.evaluate_ranked(rank_fn, inputs, targets, 8, mesh, ks=(1,))
  assert m == {"recall@1": 11 / 21, "ndcg@1": pytest.approx(11 / 21), "users": 21}
  with pytest.raises(ValueError, match="multiple of the data axis"):
    evaluate.rank_in_batches(rank_fn, inputs, 12, mesh)
  # A pytree output (ids and scores) comes back in the same structure, rows in input order.
  ids, scores = evaluate.rank_in_batches(
      jax.jit(lambda b: (rank_fn(b), b["user"].astype(jnp.float32) / 2)), inputs, 8, mesh)
  np.testing.assert_array_equal(ids, ranked)
  np.testing.assert_array_equal(scores, np.arange(users) / 2)
