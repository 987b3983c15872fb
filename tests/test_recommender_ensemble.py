"""Ensembles of recommenders on one SID table (`train.ensemble_size`), through `main.run_all`."""
import json
import os

import jax
import numpy as np
import pytest

from r3vae_jax import fuse, main, parallel
from r3vae_jax.configs import default, validate
from r3vae_jax.data import dataset, splits as splits_lib
from r3vae_jax.recommender import ensemble
from r3vae_jax.recommender import train as rec_train
from r3vae_jax.tokenizer import sid_table

KEYS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def tiny_config(size=2):
  c = default.get_config("rqkmeans")
  c.data.synthetic.update(num_items=200, num_users=300, num_topics=8, dim=16)
  c.sid.update(codebook_size=8, max_collisions=32)
  c.rqkmeans.iters = 10
  c.recommender.update(num_encoder_layers=1, num_decoder_layers=1, d_model=16, num_heads=2,
                       d_kv=8, d_ff=32)
  c.train.update(epochs=1, batch_size=64, warmup_steps=5, log_every_steps=20,
                 ensemble_size=size)
  c.eval.update(beam_size=10, batch_size=128)
  return c


def test_two_members_trained_scored_alone_and_together(tmp_path):
  """One test, so that pytest-xdist trains the workdir once."""
  config, workdir = tiny_config(), str(tmp_path / "run")
  results = main.run_all(config, workdir)
  metrics = results["metrics"]

  # Member 1 trained in its own folder with its own seed; both scored alone on test.
  member_dirs = ensemble.member_workdirs(workdir, 2)
  assert member_dirs[1] == os.path.join(workdir, "ensemble", "member1")
  assert len(results["train"]["ensemble_members"]) == 1
  assert ensemble.member_config(config, 1).seed == config.seed + ensemble.SEED_STRIDE
  assert [m["ndcg@10"] for m in metrics["test_members"]][0] == metrics["test"]["ndcg@10"]
  table, _ = sid_table.load_sid_table(workdir)
  mesh = parallel.config_mesh(config)
  params = [rec_train.restore_params(ensemble.member_config(config, k), d, table, mesh)[1]
            for k, d in enumerate(member_dirs)]
  differ = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), *params))
  assert any(differ), "the two members have the same parameters"

  # Together: metrics of the same shape, written next to the member-0 metrics.
  for split in ("valid", "test"):
    together = metrics[f"{split}_ensemble"]
    assert together["members"] == 2 and len(together["steps"]) == 2
    assert all(0.0 <= together[k] <= 1.0 for k in KEYS)
    with open(os.path.join(workdir, "recommender", f"{split}_ensemble_metrics.json"),
              encoding="utf-8") as f:
      assert json.load(f)["ndcg@10"] == together["ndcg@10"]
    saved = fuse.fuse_runs([os.path.join(workdir, "recommender", f"{split}_ensemble_ranking.npz")],
                           split, None, (5, 10))
    assert saved["fused"]["ndcg@10"] == together["ndcg@10"]

  # A model decoding together with itself ranks exactly as it does alone.
  splits = splits_lib.leave_one_out(dataset.load_prepared(workdir).sequences)
  alone = rec_train.evaluate_recommender(config, workdir, table, splits, split="valid")
  twice = ensemble.evaluate_members([config, config], [workdir, workdir], table, splits,
                                    split="valid")
  for k in KEYS:
    assert twice[k] == pytest.approx(alone[k], abs=1e-9)


@pytest.mark.parametrize("size,tokenizer", [(0, "rqkmeans"), (-2, "rqkmeans"), (2, "diger")])
def test_bad_ensemble_size_names_the_field(size, tokenizer):
  config = tiny_config()
  config.train.ensemble_size = size
  config.tokenizer = tokenizer
  with pytest.raises(ValueError, match="config.train.ensemble_size"):
    ensemble.check_size(config)
  with pytest.raises(ValueError, match="config.train.ensemble_size"):
    validate.validate(config)


def test_trained_members_are_those_with_a_checkpoint(tmp_path):
  workdir = str(tmp_path)
  dirs = ensemble.member_workdirs(workdir, 3)
  for k, name in ((0, "120"), (2, "120.orbax-checkpoint-tmp")):
    os.makedirs(os.path.join(dirs[k], "recommender", "checkpoints", name))
  assert ensemble.trained_members(workdir, 3) == [0]
  os.makedirs(os.path.join(dirs[2], "recommender", "checkpoints", "40"))
  assert ensemble.trained_members(workdir, 3) == [0, 2]
