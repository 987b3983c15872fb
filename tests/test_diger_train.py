"""DIGER joint training end to end on a small synthetic catalogue (8 fake devices)."""
import os

import numpy as np
import pytest

from r3vae_jax.configs import default
from r3vae_jax.data import splits as splits_lib
from r3vae_jax.data import synthetic
from r3vae_jax.diger import train as diger_train
from r3vae_jax.recommender import train as rec_train
from r3vae_jax.tokenizer import sid_table


def small_config(decay: str = "frequency"):
  c = default.get_config("diger")
  c.diger.decay = decay
  c.data.synthetic.update(dict(num_items=240, num_users=160, num_topics=8, dim=16, max_len=12))
  c.data.max_history = 6
  c.sid.update(dict(codebook_size=16, max_collisions=64))
  c.rqvae.update(dict(epochs=4, eval_every=4, batch_size=64, hidden=(32,), latent_dim=8,
                      kmeans_iters=10))
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=16,
                            num_heads=2, d_kv=8, d_ff=32, dropout=0.0))
  c.train.update(dict(batch_size=64, epochs=2, warmup_steps=5, patience=5, prefetch=1,
                      log_every_steps=1000))
  c.eval.update(dict(beam_size=10, batch_size=64))
  return c


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
  config = small_config()
  inter, vectors = synthetic.make_synthetic(config.data.synthetic)
  splits = splits_lib.leave_one_out(inter.sequences)
  workdir = str(tmp_path_factory.mktemp("diger"))
  summary = diger_train.train_diger(config, workdir, vectors, splits)
  return config, workdir, vectors, splits, summary


def test_history_logs_usage_collisions_sigma_and_validation(synthetic_run):
  config, _, _, _, summary = synthetic_run
  history = summary["history"]
  assert [h["epoch"] for h in history] == [0, 1, 2]
  for h in history:
    assert len(h["usage_per_level"]) == config.sid.levels
    assert all(0 < u <= 1 for u in h["usage_per_level"])
    assert 0 <= h["collision_rate"] <= 1
    assert len(h["sigma"]) == config.sid.levels
  for h in history[1:]:
    assert 0 <= h["valid_ndcg@10"] <= 1 and h["valid_users"] == 160
    assert h["train_codebook_grad_norm"] > 0          # the tokenizer is being trained
    assert 0 <= h["train_noisy_fraction"] <= 1
    assert np.isfinite(h["train_loss"])
  assert summary["best_epoch"] in (1, 2)


def test_saved_table_recommender_and_tokenizer_belong_together(synthetic_run):
  config, workdir, _, splits, summary = synthetic_run
  table = np.load(os.path.join(workdir, "diger", "sid_table.npy"))
  loaded, metrics = sid_table.load_sid_table(workdir)
  np.testing.assert_array_equal(table, loaded)
  assert metrics["tokenizer"] == "diger" and metrics["meta"]["best_epoch"] == summary["best_epoch"]
  assert len(np.unique(table, axis=0)) == len(table) == 240
  assert os.path.isdir(os.path.join(workdir, "diger", "model"))
  # --mode=evaluate's path reads the exported recommender with the saved table: same ranking.
  valid = rec_train.evaluate_recommender(config, workdir, table, splits, split="valid")
  assert valid["ndcg@10"] == pytest.approx(summary["valid"]["ndcg@10"], abs=1e-6)


def test_rerun_resumes_without_training_again(synthetic_run):
  config, workdir, vectors, splits, summary = synthetic_run
  again = diger_train.train_diger(config, workdir, vectors, splits)
  assert again["history"] == summary["history"]
  assert again["best_epoch"] == summary["best_epoch"]


def test_bad_decay_is_a_clear_error(tmp_path):
  config = small_config("annealed")
  with pytest.raises(ValueError, match="config.diger.decay"):
    diger_train.train_diger(config, str(tmp_path), np.zeros((4, 2), np.float32),
                            splits_lib.leave_one_out([np.arange(4)]))
