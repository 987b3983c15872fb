"""SASRec (baselines/sasrec.py, sasrec_train.py): causality, padding, the compacted loss against
a dense cross-entropy, on-device ranking against numpy, and a short training run that learns a
deterministic successor chain."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from r3vae_jax.baselines import config as baseline_config
from r3vae_jax.baselines import sasrec, sasrec_train, scoring
from r3vae_jax.data import splits as splits_lib


def _config(**overrides):
  c = baseline_config.sasrec_config()
  c.update({**dict(d_model=16, max_len=8, dropout=0.0, num_blocks=1), **overrides})
  return c


_hidden = nnx.jit(lambda model, history: model.hidden(history))
_scores = nnx.jit(lambda model, history: model(history))


def test_hidden_is_causal_and_ignores_padding():
  model = sasrec.from_config(30, _config(num_blocks=2), 0)
  a = jnp.array([[-1, -1, 3, 4, 5, 6, 7, 8]])
  b = a.at[0, -1].set(20)
  ha, hb = _hidden(model, a), _hidden(model, b)
  np.testing.assert_allclose(ha[:, :-1], hb[:, :-1], atol=1e-6)
  assert not np.allclose(ha[:, -1], hb[:, -1])
  short = jnp.array([[3, 4, 5, 6, 7, 8]])   # the same items with two pads fewer
  np.testing.assert_allclose(_scores(model, short), _scores(model, a), atol=1e-5)


def test_compacted_loss_equals_dense_cross_entropy():
  model = sasrec.from_config(30, _config(), 1)
  rng = np.random.default_rng(0)
  seqs = splits_lib.pad_histories([rng.integers(0, 30, rng.integers(2, 10)) for _ in range(6)],
                                  9)
  inputs, targets = sasrec_train.training_arrays(
      [s[s >= 0] for s in seqs], 8)
  got = nnx.jit(sasrec.loss, static_argnums=4)(model, jnp.asarray(inputs), jnp.asarray(targets),
                                               jax.random.key(0), 64)
  logits = np.asarray(model.item_scores(_hidden(model, jnp.asarray(inputs))))
  rows = targets >= 0
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -np.mean(np.take_along_axis(logp, np.maximum(targets, 0)[..., None], -1)[..., 0][rows])
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_training_arrays_and_batch_capacity():
  inputs, targets = sasrec_train.training_arrays([np.array([1, 2, 3]), np.array([4, 5])], 3)
  assert inputs.tolist() == [[-1, 1, 2], [-1, -1, 4]]
  assert targets.tolist() == [[-1, 2, 3], [-1, -1, 5]]
  orders = sasrec_train.epoch_orders(2, 2, 3, seed=0)
  assert orders.shape == (3, 1, 2) and sorted(orders[1, 0].tolist()) == [0, 1]
  assert sasrec_train.batch_capacity(targets, orders, multiple=2) == 4   # 2 + 1 targets
  filled = sasrec_train.epoch_orders(3, 2, 1, seed=0)
  assert filled.shape == (1, 2, 2) and filled[0, -1, -1] == 3             # the padding row


def test_rank_both_matches_numpy():
  rng = np.random.default_rng(2)
  scores = rng.normal(size=(12, 40)).astype(np.float32)
  seen = np.full((12, 5), -1, np.int32)
  for u in range(12):
    seen[u, :u % 6] = rng.choice(40, u % 6, replace=False)
  full, excl = sasrec_train.rank_both(jnp.asarray(scores), jnp.asarray(seen), 10)
  np.testing.assert_array_equal(full, scoring.top_items(scores, 10))
  np.testing.assert_array_equal(excl, scoring.top_items(scoring.mask_seen(scores, seen), 10))


def test_short_training_learns_a_successor_chain(tmp_path):
  # Item i is always followed by i + 1 (mod 12): after training, the next item ranks first.
  rng = np.random.default_rng(0)
  seqs = [(rng.integers(0, 12) + np.arange(rng.integers(5, 9))) % 12 for _ in range(96)]
  spl = splits_lib.leave_one_out(seqs)
  config = ml_collections.ConfigDict(dict(
      seed=0, sasrec=_config(epochs=20, eval_every=10, batch_size=32, lr=1e-2, dropout=0.1,
                     num_seeds=2),
      eval=dict(exclude_seen=False, ks=(1, 5)), train=dict(select_metric="ndcg@5", stop_at=0.0)))
  config.sasrec.eval_batch_size = 64
  graphdef, params, summaries = sasrec_train.train_sasrec(config, str(tmp_path), spl, 12)
  got = sasrec_train.evaluate_split(graphdef, params, spl, "test", (1, 5), 8, 64)
  assert len(got) == len(summaries) == 2 and [s["seed"] for s in summaries] == [0, 1]
  for seed_metrics, summary in zip(got, summaries):
    assert seed_metrics["full_ranking"]["recall@1"] > 0.9
    assert summary["best_epoch"] in (10, 20) and len(summary["history"]) == 2
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]
  assert len((tmp_path / "sasrec" / "metrics.jsonl").read_text().splitlines()) == 4
  # A passed deadline (`train.stop_at`) ends training after the epoch under way, validated.
  config.train.stop_at = 1.0
  _, _, stopped = sasrec_train.train_sasrec(config, str(tmp_path / "stopped"), spl, 12)
  assert [(s["finished"], s["epochs_run"], s["best_epoch"]) for s in stopped] == [
      ("stopped", 1, 1)] * 2


def test_bad_sizes_are_one_clear_error():
  with pytest.raises(ValueError, match=r"config.sasrec.d_model \(16\) must be a multiple"):
    sasrec.from_config(10, _config(num_heads=3), 0)
  with pytest.raises(ValueError, match="config.sasrec.max_len"):
    sasrec.from_config(10, _config(max_len=0), 0)
