"""DIGER on a real Beauty slice: how the Gumbel noise scale trades code collapse against the
joint recommender's validation NDCG@10 (CPU, minutes). Writes results/diger_noise_slice_cpu.json.

  python results/diger_noise_sweep.py [OUT.json]
  DIGER_SWEEP=anneal,reader python results/diger_noise_sweep.py results/diger_reader_slice_cpu.json
  DIGER_SWEEP=tokschedule DIGER_EPOCHS=12 DIGER_RECOMMENDER_SCHEDULE=cosine \
      python results/diger_noise_sweep.py results/diger_tokschedule_slice_cpu_s0.json
  DIGER_SWEEP=freeze DIGER_EPOCHS=12 DIGER_RECOMMENDER_SCHEDULE=cosine DIGER_SEED=0 \
      python results/diger_noise_sweep.py results/diger_freeze_slice_cpu_s0.json
  DIGER_SWEEP=toklr DIGER_EPOCHS=12 DIGER_RECOMMENDER_SCHEDULE=cosine DIGER_SEED=0 \
      python results/diger_noise_sweep.py results/diger_toklr_slice_cpu_s0.json

DIGER_SWEEP picks the settings (comma-separated keys of SWEEPS; default "noise"); the
fixed-table baseline always runs. DIGER_EPOCHS (default 4), DIGER_RECOMMENDER_SCHEDULE
(default constant) and DIGER_SEED (default 0: the RQ-VAE's and recommenders' seed) set
train.epochs, train.schedule and seed of every run, the baseline's too.

The slice and sizes of tests/test_diger_collapse.py (the first 2,000 Beauty items, 32-d PPMI-SVD
vectors of their training part, 2 x 32 codes, one 8-epoch RQ-VAE shared by every run, T5 1+1
d32, history 8), 4 joint epochs, recommender lr 1e-3 constant, validation every epoch. Baseline:
the same recommender trained on the RQ-VAE's fixed SID table for 4 epochs.
"""
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from r3vae_jax import io
from r3vae_jax.configs import default
from r3vae_jax.data import slices
from r3vae_jax.diger import train as diger_train
from r3vae_jax.recommender import train as rec_train
from r3vae_jax.tokenizer import api as tok_api

NUM_ITEMS = 2000
EPOCHS = int(os.environ.get("DIGER_EPOCHS", "4"))
RECOMMENDER_SCHEDULE = os.environ.get("DIGER_RECOMMENDER_SCHEDULE", "constant")
SEED = int(os.environ.get("DIGER_SEED", "0"))


def setting(decay, normalize, scale, tokenizer_lr, noisy_targets=True, **more):
  """config.diger overrides of one run."""
  return dict(decay=decay, normalize_logits=normalize, noise_scale=scale,
              tokenizer_lr=tokenizer_lr, noisy_targets=noisy_targets, **more)


SWEEPS = {
    # constant noise scales
    "noise": [setting("none", False, 1.0, 1e-5), setting("frequency", False, 1.0, 1e-5),
              setting("frequency", True, 1.0, 1e-5), setting("frequency", True, 0.1, 1e-5),
              setting("frequency", True, 0.02, 1e-5), setting("gumbel", True, 0.02, 1e-5),
              setting("none", False, 1.0, 1e-4), setting("frequency", True, 0.02, 1e-4),
              setting("learned_sigma", True, 0.02, 1e-4),
              # noise on the history only, greedy targets
              setting("frequency", False, 1.0, 1e-5, False),
              setting("frequency", False, 1.0, 1e-4, False),
              setting("gumbel", False, 1.0, 1e-4, False),
              setting("learned_sigma", True, 0.02, 1e-4, False)],
    # the scale times a factor falling linearly from 1 to 0 over the first fraction of the steps
    "anneal": [setting("frequency", False, 1.0, 1e-5, noise_anneal_fraction=0.5),
               setting("frequency", False, 1.0, 1e-4, noise_anneal_fraction=0.5),
               setting("frequency", False, 1.0, 1e-4, noise_anneal_fraction=1.0),
               setting("gumbel", True, 1.0, 1e-4, noise_anneal_fraction=0.5)],
    # the recommender reads noiseless straight-through codes; the noise acts on the tokenizer
    # losses (as in the released code, whose recommender reads the epoch's table)
    "reader": [setting("none", False, 1.0, 1e-4, reader_codes="greedy"),
               setting("frequency", False, 1.0, 1e-5, reader_codes="greedy"),
               setting("frequency", False, 1.0, 1e-4, reader_codes="greedy"),
               setting("gumbel", True, 1.0, 1e-4, reader_codes="greedy"),
               setting("learned_sigma", True, 1.0, 1e-4, reader_codes="greedy")],
    # ... and the recommendation loss does not reach the tokenizer (the released code's path)
    "detached": [setting("frequency", False, 1.0, 1e-5, reader_codes="greedy", detach_codes=True),
                 setting("frequency", False, 1.0, 1e-4, reader_codes="greedy", detach_codes=True)],
    # variant diger+detached (session 7) with the tokenizer's lr constant or following the
    # recommender's schedule (diger.tokenizer_schedule)
    "tokschedule": [setting("frequency", True, 0.1, lr, reader_codes="greedy", detach_codes=True,
                            noise_anneal_fraction=0.5, tokenizer_schedule=schedule)
                    for lr in (1e-5, 1e-4) for schedule in ("constant", "follow")],
    # variant diger+detached_follow with the tokenizer's encoder frozen (diger.freeze_encoder,
    # RecBoard's DIGER config): only codebooks and decoder move
    "freeze": [setting("frequency", True, 0.1, lr, reader_codes="greedy", detach_codes=True,
                       noise_anneal_fraction=0.5, tokenizer_schedule="follow", freeze_encoder=True)
               for lr in (1e-5, 1e-4)],
    # diagnostic: detached_follow without any Gumbel noise (decay none): what the codes' own
    # movement costs, apart from the noise
    "nonoise": [setting("none", True, 0.0, 1e-5, reader_codes="greedy", detach_codes=True,
                        tokenizer_schedule="follow")],
    # variant diger+detached_follow at smaller tokenizer rates: how far the codes move (share of
    # items whose SID differs from the pretrained one) against what the recommender scores
    "toklr": [setting("frequency", True, 0.1, lr, reader_codes="greedy", detach_codes=True,
                      noise_anneal_fraction=0.5, tokenizer_schedule="follow")
              for lr in (1e-5, 1e-6, 1e-7)],
    # diagnostic: a frozen tokenizer (lr 1e-12, no noise) makes the joint trainer a fixed-table
    # one; any gap to the fixed-table baseline is the trainer's, not the moving codes'
    "frozen": [setting("none", False, 0.0, 1e-12, reader_codes="greedy", detach_codes=True)],
}


def run_name(d: dict) -> str:
  """A readable name of one run's overrides."""
  name = (f"{d['decay']}_norm{int(d['normalize_logits'])}_scale{d['noise_scale']:g}"
          f"_toklr{d['tokenizer_lr']:g}{'' if d['noisy_targets'] else '_greedytargets'}")
  if d.get("noise_anneal_fraction"):
    name += f"_anneal{d['noise_anneal_fraction']:g}"
  if d.get("reader_codes", "noisy") != "noisy":
    name += f"_reader{d['reader_codes']}"
  if d.get("detach_codes"):
    name += "_detached"
  if d.get("tokenizer_schedule", "constant") != "constant":
    name += f"_tok{d['tokenizer_schedule']}"
  if d.get("freeze_encoder"):
    name += "_frozenencoder"
  return name


def config(diger_overrides: dict | None = None):
  c = default.get_config("diger")
  c.seed = SEED
  c.diger.update(diger_overrides or {})
  c.data.max_history = 8
  c.sid.update(dict(levels=2, codebook_size=32, max_collisions=256))
  c.rqvae.update(dict(epochs=8, eval_every=8, batch_size=128, hidden=(64,), latent_dim=16,
                      kmeans_iters=10))
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32,
                            num_heads=2, d_kv=16, d_ff=64, dropout=0.0))
  c.train.update(dict(batch_size=128, epochs=EPOCHS, warmup_steps=0, patience=100, prefetch=1,
                      eval_every_epochs=1, log_every_steps=100000, lr=1e-3,
                      schedule=RECOMMENDER_SCHEDULE))
  c.eval.update(dict(beam_size=10, batch_size=128, popularity_alphas=()))
  c.mesh.data = 1
  return c


def selected_settings(sweeps: str) -> list[dict]:
  """The settings of the comma-separated sweep names (keys of SWEEPS), in order."""
  names = [n.strip() for n in sweeps.split(",") if n.strip()]
  unknown = [n for n in names if n not in SWEEPS]
  if unknown or not names:
    raise ValueError(f"DIGER_SWEEP: expected names from {sorted(SWEEPS)}, got {sweeps!r}")
  return [setting for n in names for setting in SWEEPS[n]]


def main(out_path: str, sweeps: str = "noise") -> None:
  settings = selected_settings(sweeps)
  splits, vectors = slices.beauty_prefix(NUM_ITEMS, dim=32)
  result = {"kind": "diger_noise_sweep", "commit": io.source_commit(), "device": "cpu",
            "num_items": NUM_ITEMS, "epochs": EPOCHS, "recommender_schedule": RECOMMENDER_SCHEDULE,
            "seed": SEED,
            "sweeps": sweeps, "runs": {}}
  with tempfile.TemporaryDirectory() as tmp:
    pre = config()
    pre.tokenizer = "rqvae"
    tok_api.fit_tokenizer(pre, vectors, os.path.join(tmp, "pre"))
    table = np.load(os.path.join(tmp, "pre", "tokenizer", "sid_table.npy"))
    fixed = config()
    fixed.tokenizer = "rqvae"
    start = time.time()
    best = rec_train.train_recommender(fixed, os.path.join(tmp, "fixed"), table, splits)
    result["fixed_table"] = {"best_valid_ndcg@10": best["best_valid"]["ndcg@10"],
                             "seconds": time.time() - start}
    print("fixed table", result["fixed_table"], flush=True)
    for overrides in settings:
      name = run_name(overrides)
      workdir = os.path.join(tmp, name)
      shutil.copytree(os.path.join(tmp, "pre", "tokenizer"), os.path.join(workdir, "tokenizer"))
      start = time.time()
      summary = diger_train.train_diger(
          config(overrides), workdir, vectors, splits)
      history = summary["history"]
      result["runs"][name] = {
          "valid_ndcg@10": [h.get("valid_ndcg@10") for h in history],
          "usage_level1": [h["usage_per_level"][0] for h in history],
          "noisy_fraction": [h.get("train_noisy_fraction") for h in history],
          "noise_factor": [h.get("train_noise_factor") for h in history],
          "train_rec_ce": [h.get("train_rec_ce") for h in history],
          "collision_rate": [h["collision_rate"] for h in history],
          "max_group_size": [h["max_group_size"] for h in history],
          "best_epoch": summary["best_epoch"],
          # share of items whose saved (best-epoch) SID differs from the pretrained table's
          "sid_changed": float(np.mean(np.any(np.load(os.path.join(
              workdir, "tokenizer", "sid_table.npy")) != table, axis=1))),
          "seconds": time.time() - start}
      print(name, result["runs"][name], flush=True)
      io.write_json(out_path, result)
  io.write_json(out_path, result)


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "diger_noise_slice_cpu.json"),
      os.environ.get("DIGER_SWEEP", "noise"))
