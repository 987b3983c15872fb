"""Validation inside training vs the evaluate path used for the test split.

On a real Beauty slice: the validation split scored through `evaluate_recommender` (the path
that scores the test split) on the restored best checkpoint equals the validation line that
training logged for that checkpoint, also when later epochs are worse (the best checkpoint, not
the latest, is restored); the test split's histories are the validation histories plus the
validation item, capped at the last `max_history`; seen items are dropped as RecBoard does; the
per-epoch line says where the wall time went; the ranking file each evaluation writes scores
the same.
"""
import json
import os

import numpy as np
import pytest

from r3vae_jax import fuse
from r3vae_jax.configs import default
from r3vae_jax.recommender import data, evaluation, fusion, ranking, train

USERS = 200
KEYS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


@pytest.fixture(scope="module")
def setup(beauty_users):
  """(config, sid_table, splits): the first USERS users of Beauty, dense ids, a random SID."""
  splits, table = beauty_users(USERS, levels=2, k=8)
  c = default.base_config()
  c.sid.levels, c.sid.codebook_size, c.sid.max_collisions = 2, 8, int(table[:, -1].max()) + 1
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32, num_heads=2,
                            d_kv=16, d_ff=64, dropout=0.0))
  c.data.max_history = 5
  c.train.update(dict(batch_size=128, epochs=3, lr=5e-3, schedule="constant",
                      eval_every_epochs=1, patience=10,
                      log_every_steps=4, checkpoint_keep=1, nonfinite="skip", length_buckets=()))
  c.eval.update(dict(beam_size=10, batch_size=200))
  c.mesh.update(dict(data=1, model=1))
  return c, table, splits


def _valid_lines(workdir):
  with open(os.path.join(workdir, "recommender", "metrics.jsonl"), encoding="utf-8") as f:
    return [r for r in map(json.loads, f) if r["kind"] == "valid"]


def test_valid_through_the_evaluate_path_equals_the_logged_best(setup, tmp_path):
  config, table, splits = setup
  workdir = str(tmp_path / "run")
  train.train_recommender(config, workdir, table, splits)
  # Train on with a ruinous learning rate (not part of the checkpoint fingerprint): the later
  # validations are worse, so the best checkpoint is not the latest one.
  ruin = config.copy_and_resolve_references()
  ruin.train.update(dict(epochs=5, lr=0.5))
  result = train.train_recommender(ruin, workdir, table, splits)

  lines = _valid_lines(workdir)
  assert [r["epoch"] for r in lines] == [1, 2, 3, 4, 5]
  best = max(lines, key=lambda r: r["ndcg@10"])  # first of equal scores, as training keeps it
  assert best["epoch"] <= 3 and lines[-1]["ndcg@10"] < best["ndcg@10"]
  assert result["best_step"] == best["step"] and result["best_epoch"] == best["epoch"]

  metrics = evaluation.evaluate_recommender(ruin, workdir, table, splits, split="valid")
  assert metrics["step"] == best["step"] and metrics["users"] == USERS
  for key in KEYS:
    assert metrics[key] == pytest.approx(best[key], abs=1e-12), key
  test = evaluation.evaluate_recommender(ruin, workdir, table, splits, split="test")
  assert test["step"] == best["step"] and test["users"] == USERS
  # Removing seen items only moves a (never seen) target up: the untouched ranking scores lower.
  for key in KEYS:
    assert test["full_ranking"][key] <= test[key], key
  # The ranking file that `fuse` reads scores as evaluate did, and holds no seen item.
  for split, scored in (("valid", metrics), ("test", test)):
    saved = fuse.fuse_runs([workdir], split, None, (5, 10))
    for key in KEYS:
      assert saved["members"][0][key] == saved["fused"][key] == scored[key], (split, key)
  shown = fusion.load_ranking(os.path.join(workdir, "recommender", "test_ranking.npz"))
  seen = data.eval_examples(splits, "test", config.data.max_history).seen
  assert not any(np.isin(shown.items[u], seen[u][seen[u] >= 0]).any() for u in range(USERS))
  later, earlier = shown.log_probs[:, 1:], shown.log_probs[:, :-1]
  assert np.all(np.isneginf(later) | (later <= earlier + 1e-6))  # best first, empty slots last

  epochs = [r for r in map(json.loads, open(os.path.join(workdir, "recommender",
                                                         "metrics.jsonl"), encoding="utf-8"))
            if r["kind"] == "epoch"]
  assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5]
  for r in epochs:
    assert set(train.EPOCH_TIMING) <= set(r)
    parts = r["train_step_s"] + r["input_wait_s"] + r["valid_s"] + r["checkpoint_s"]
    assert 0.0 < parts <= r["wall_s"] + 1e-6
    assert r["outside_step_frac"] == pytest.approx(1 - r["train_step_s"] / r["wall_s"])
    assert r["valid_s"] > 0


def test_test_histories_add_the_validation_item_and_keep_the_last_ones(setup):
  config, _, splits = setup
  h = config.data.max_history
  valid = data.eval_examples(splits, "valid", h)
  test = data.eval_examples(splits, "test", h)
  np.testing.assert_array_equal(valid.target, splits.valid_target)
  np.testing.assert_array_equal(test.target, splits.test_target)
  np.testing.assert_array_equal(test.history[:, -1], splits.valid_target)
  np.testing.assert_array_equal(test.history[:, :-1], valid.history[:, 1:])
  for u in range(USERS):
    full = splits.valid_history[u]
    np.testing.assert_array_equal(valid.history[u][valid.history[u] >= 0], full[-h:])
    np.testing.assert_array_equal(valid.seen[u][valid.seen[u] >= 0], full)
    np.testing.assert_array_equal(test.seen[u][test.seen[u] >= 0],
                                  np.append(full, splits.valid_target[u]))
  assert valid.seen.shape[1] > h  # some users' whole histories are longer than the cap


def test_drop_seen_keeps_the_order_of_unseen_items():
  ranked = np.array([[5, 1, 7, 2], [3, -1, 4, 9], [8, 8, 0, 6]])
  seen = np.array([[-1, 1, 2], [-1, -1, 9], [-1, -1, -1]])
  np.testing.assert_array_equal(ranking.drop_seen(ranked, seen),
                                [[5, 7, -1, -1], [3, 4, -1, -1], [8, 8, 0, 6]])
  with pytest.raises(ValueError, match="drop_seen"):
    ranking.drop_seen(ranked, seen[:2])
