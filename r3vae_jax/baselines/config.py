"""The baselines' config: a dataset config plus `config.method` and `config.sasrec`.

  --config=r3vae_jax/configs/beauty.py:sasrec   (popularity | markov | sasrec; `configs/paths.py`)

SASRec's settings are its paper's for the sparse Amazon sets (Kang & McAuley 2018, section IV):
2 blocks, 1 head, dropout 0.5, the last 50 items, Adam lr 1e-3, batch 128; d_model 64 (the
paper: 50). Up to 200 epochs, validation every 5, stop after 10 validations without improvement.
`sasrec.num_seeds` > 1 trains seeds seed, seed + 1, ... side by side in one program (one row each).
"""
from __future__ import annotations

import ml_collections

METHODS = ("popularity", "markov", "sasrec")


def sasrec_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      d_model=64, num_blocks=2, num_heads=1, dropout=0.5, max_len=50, lr=1e-3, batch_size=128,
      epochs=200, eval_every=5, patience=10, eval_batch_size=1024, num_seeds=1))


def apply(config: ml_collections.ConfigDict, method: str) -> None:
  """Makes `config` (a dataset config) run the baseline `method`."""
  if method not in METHODS:
    raise ValueError(f"baseline method must be one of {METHODS}, got {method!r}")
  config.method = config.preset = method
  config.sasrec = sasrec_config()

