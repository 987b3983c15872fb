"""Popularity and Markov baselines (baselines/popularity.py, markov.py) and their scoring under
both protocols (baselines/scoring.py): hand-computed rankings and metrics, and agreement with the
project's own seen-item removal (recommender/ranking.drop_seen)."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from r3vae_jax import evaluate, io
from r3vae_jax.baselines import markov, popularity, scoring
from r3vae_jax.data import splits as splits_lib
from r3vae_jax.recommender import ranking

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_top_items_orders_by_score_then_id():
  scores = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0], [0.0, 0.0, 5.0, 1.0, 1.0]])
  assert scoring.top_items(scores, 3).tolist() == [[1, 2, 4], [2, 3, 4]]
  assert scoring.top_items(scores, 5)[0, -1] == 3
  with pytest.raises(ValueError, match="k=6"):
    scoring.top_items(scores, 6)


def test_top_items_matches_a_full_sort_on_distinct_scores():
  rng = np.random.default_rng(0)
  scores = rng.permutation(40 * 30).reshape(40, 30).astype(np.float64)
  np.testing.assert_array_equal(scoring.top_items(scores, 7),
                                np.argsort(-scores, axis=1)[:, :7])


def test_popularity_counts_training_parts_and_breaks_ties_by_id():
  spl = splits_lib.leave_one_out([np.array([0, 2, 2, 3, 4]), np.array([1, 2, 3, 4])])
  counts = popularity.item_counts(spl.train, 5)      # trains: [0, 2, 2], [1, 2]
  assert counts.tolist() == [1, 1, 3, 0, 0]
  score = popularity.scorer(spl.train, 5)(np.arange(2))
  assert scoring.top_items(score, 5).tolist() == [[2, 0, 1, 3, 4]] * 2
  with pytest.raises(ValueError, match=r"\[0, 5\)"):
    popularity.item_counts([np.array([5])], 5)


def test_markov_ranks_followers_of_the_last_item_then_popularity():
  train = [np.array([0, 1, 2]), np.array([0, 1]), np.array([0, 3]), np.array([4, 4, 4])]
  trans = markov.transition_counts(train, 5).toarray()
  assert trans[0].tolist() == [0, 2, 0, 1, 0] and trans[4, 4] == 2 and trans.sum() == 6
  # popularity counts [3, 2, 1, 1, 3]: item 0 before item 4 (a tie, the lower id first)
  score = markov.scorer(train, [np.array([2, 0]), np.array([3]), np.array([1])], 5)
  ranked = scoring.top_items(score(np.arange(3)), 5)
  assert ranked[0].tolist() == [1, 3, 0, 4, 2]   # followers of 0 (2, 1 times), then popularity
  assert ranked[1].tolist() == [0, 4, 1, 2, 3]   # nothing followed 3: popularity, ties by id
  assert ranked[2].tolist() == [2, 0, 4, 1, 3]
  with pytest.raises(ValueError, match="user 1 has an empty history"):
    markov.scorer(train, [np.array([1]), np.array([], np.int32)], 5)


def test_both_protocols_hand_computed():
  # Scores rank items 0 > 1 > 2 > 3 > 4 for every user.
  score = lambda users: np.tile(np.array([5.0, 4.0, 3.0, 2.0, 1.0]), (len(users), 1))
  histories = [np.array([0]), np.array([0, 1]), np.array([3])]
  targets = np.array([1, 2, 4])
  got = scoring.evaluate_scores(score, histories, targets, ks=(1, 2), batch_size=2)
  # untouched: user 0 target at rank 1, user 1 at rank 2, user 2 at rank 4
  full = got["full_ranking"]
  assert full["recall@1"] == 0 and full["recall@2"] == pytest.approx(1 / 3)
  assert full["ndcg@2"] == pytest.approx((1 / np.log2(3)) / 3)
  # seen removed: user 0 -> rank 0, user 1 -> rank 0, user 2 -> rank 3
  excl = got["exclude_seen"]
  assert excl["recall@1"] == pytest.approx(2 / 3) and excl["ndcg@2"] == pytest.approx(2 / 3)
  assert excl["users"] == full["users"] == 3


def test_exclude_seen_equals_the_projects_drop_seen():
  rng = np.random.default_rng(1)
  n, users = 25, 60
  scores = rng.normal(size=(users, n))
  histories = [rng.choice(n, size=rng.integers(1, 9), replace=False) for _ in range(users)]
  targets = rng.integers(0, n, users)
  got = scoring.evaluate_scores(lambda u: scores[u], histories, targets, ks=(5, 10),
                                batch_size=16)
  full_order = np.argsort(-scores, axis=1)
  seen = splits_lib.pad_histories(histories, 8)
  for protocol, drop in (("exclude_seen", seen), ("full_ranking", None)):
    expected = ranking.metrics_of(full_order, targets, drop, (5, 10))
    assert got[protocol] == pytest.approx(expected)
  assert evaluate.ranking_metrics(full_order, targets)["ndcg@10"] == pytest.approx(
      got["full_ranking"]["ndcg@10"])


def test_as_results_names_the_protocols():
  valid = {"exclude_seen": {"a": 1}, "full_ranking": {"a": 2}}
  test = {"exclude_seen": {"a": 3}, "full_ranking": {"a": 4}}
  got = scoring.as_results(valid, test, exclude_seen=True)
  assert got == {"valid": {"a": 1}, "test": {"a": 3}, "valid_full_ranking": {"a": 2},
                 "test_full_ranking": {"a": 4}}
  assert scoring.as_results(valid, test, exclude_seen=False)["test"] == {"a": 4}


def test_a_markov_row_through_main(tmp_path):
  # `--mode=all` with a baseline config: prepare, fit, both protocols, results.json.
  command = [sys.executable, "-m", "r3vae_jax.main",
             "--config=r3vae_jax/configs/default.py:markov",
             f"--workdir={tmp_path}", "--config.eval.exclude_seen=True"]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  subprocess.run(command + ["--mode=all"], check=True, cwd=REPO, env=env, capture_output=True)
  saved = io.read_json(str(tmp_path / "results.json"))
  assert saved["kind"] == "baseline" and saved["method"] == saved["preset"] == "markov"
  assert set(saved["metrics"]) == {"valid", "test", "valid_full_ranking", "test_full_ranking"}
  users = saved["data_stats"]["users"]
  for split in saved["metrics"].values():
    assert split["users"] == users and 0 < split["ndcg@10"] <= split["recall@10"] <= 1
  other = subprocess.run(command + ["--mode=train"], cwd=REPO, env=env, capture_output=True,
                         text=True)
  assert other.returncode == 2
  assert other.stderr.strip().splitlines()[-1].startswith(
      "error: train: config.method=markov: baseline rows run with --mode=all")
