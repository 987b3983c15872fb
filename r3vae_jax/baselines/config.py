"""The baselines' config: a dataset config plus `config.method` and `config.sasrec`.

  --config=r3vae_jax/baselines/config.py:beauty,sasrec   (dataset module of r3vae_jax/configs)

SASRec's settings are its paper's for the sparse Amazon sets (Kang & McAuley 2018, section IV):
2 blocks, 1 head, dropout 0.5, the last 50 items, Adam lr 1e-3, batch 128; d_model 64 (the
paper: 50). Up to 200 epochs, validation every 5, stop after 10 validations without improvement.
`sasrec.num_seeds` > 1 trains seeds seed, seed + 1, ... side by side in one program (one row each).
"""
from __future__ import annotations

import importlib

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
  config.method = method
  config.sasrec = sasrec_config()


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """`arg` = "dataset,method", dataset a module of r3vae_jax/configs (beauty, sports, toys,
  default for the synthetic catalogue)."""
  dataset, _, method = (arg or "").partition(",")
  if not dataset or not method:
    raise ValueError(f"baselines config argument {arg!r}: expected 'dataset,method'")
  config = importlib.import_module(f"r3vae_jax.configs.{dataset}").get_config()
  apply(config, method)
  return config
