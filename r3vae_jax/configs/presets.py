"""Presets: each published row of the results table as one named config, per dataset.

  python -m r3vae_jax.main --config=r3vae_jax/configs/beauty.py:diger --workdir=DIR --mode=all

The config argument's first name is a preset of the dataset (rqkmeans | rqvae | r3vae | diger):
the tokenizer of that name with the field overrides below (dotted paths, applied to the dataset
config). A preset is what the table's row of that method on that dataset ran; its test NDCG@10
(mean ± std over seeds, docs/results.md) is in the comment. Ablations (`ablations.py`) apply on
top of a preset: `beauty.py:r3vae+no_sc`.
"""
from typing import Any

# DIGER as every published DIGER row runs it, on top of its starting RQ-VAE: the recommender
# reads the noiseless codes and its loss does not reach the tokenizer (detach_codes,
# reader_codes greedy), the codes' logits mapped to [-1, 1] as the released code does, Gumbel
# scale 0.1 annealed to 0 over the first half of training, and the tokenizer's rate following
# the recommender's warm-up and decay with a peak of 1e-7. With raw logits at scale 1 the noisy
# codes scattered on full Beauty (collisions 0.10 -> 0.71, test N@10 0.0161 against 0.0272
# detached); at tokenizer lr 1e-5 instead of 1e-7 Adam rewrote 84% of LastFM's SIDs in 720 steps
# (validation N@10 0.0473 vs 0.0545; docs/experiments.md).
DIGER_RECIPE: dict[str, Any] = {
    "diger.detach_codes": True, "diger.reader_codes": "greedy", "diger.normalize_logits": True,
    "diger.noise_scale": 0.1, "diger.noise_anneal_fraction": 0.5,
    "diger.tokenizer_schedule": "follow", "diger.tokenizer_lr": 1e-7,
}
# The RQ-VAE table from the tokenizer's last epoch (as TIGER) instead of its lowest-collision
# one: Toys' RQ-VAE keeps epoch 10 of 200 by collisions while its reconstruction error is still
# 60% above the final one; the last table gave test N@10 0.0360 against 0.0314.
LAST_TABLE: dict[str, Any] = {"sid.select": "last"}
# The RQ-VAE's AdamW rate rising from 0 over its first 300 steps: at the full rate from step 1
# the Beauty codes contract onto 4 level-1 codewords (collisions 0.999 at step 30).
WARMUP: dict[str, Any] = {"rqvae.warmup_steps": 300}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # MiniLM text vectors, 60 recommender epochs (configs/beauty.py).
    "beauty": {
        "r3vae": {},                                  # 0.0411 ± 0.0003, 3 seeds
        "rqvae": {},                                  # 0.0376 ± 0.0009, 2 seeds
        "rqkmeans": {},                               # 0.0399, 1 seed
        "diger": {**DIGER_RECIPE, **WARMUP, **LAST_TABLE},  # 0.0385 ± 0.0013, 3 seeds
    },
    # Interaction-SVD vectors, 30 recommender epochs (configs/sports.py).
    "sports": {
        "r3vae": {},                                  # 0.0226 ± 0.0007, 3 seeds
        "rqvae": {},                                  # 0.0207, 1 seed
        "rqkmeans": {},                               # 0.0228, 1 seed
        "diger": dict(DIGER_RECIPE),                  # 0.0224 ± 0.0004, 3 seeds
    },
    # Interaction-SVD vectors, 45 recommender epochs for R3-VAE, 30 for the others (configs/toys.py).
    "toys": {
        "r3vae": {},                                  # 0.0369 ± 0.0011, 3 seeds
        "rqvae": {**LAST_TABLE, "train.epochs": 30},  # 0.0360, 1 seed
        "rqkmeans": {"train.epochs": 30},             # 0.0378, 1 seed
        "diger": {**DIGER_RECIPE, **LAST_TABLE, "train.epochs": 30},  # 0.0352 ± 0.0004, 3 seeds
    },
    # MiniLM vectors of the artist names, 40 recommender epochs (configs/lastfm.py).
    "lastfm": {
        "r3vae": {},                                  # 0.0582 ± 0.0067, 3 seeds
        "rqvae": {},                                  # 0.0561 ± 0.0036, 3 seeds
        "rqkmeans": {},                               # 0.0539, 1 seed
        "diger": dict(DIGER_RECIPE),                  # 0.0503 ± 0.0050, 3 seeds
    },
    # No published rows: the methods at their defaults, DIGER with the recipe of the other rows.
    "ml1m": {"r3vae": {}, "rqvae": {}, "rqkmeans": {}, "diger": dict(DIGER_RECIPE)},
    # The embedded synthetic default (configs/default.py): every method at its defaults.
    "synthetic": {"r3vae": {}, "rqvae": {}, "rqkmeans": {}, "diger": {}},
}


def set_fields(config: Any, fields: dict[str, Any], what: str) -> None:
  """Sets each dotted path of `fields` on `config`; a path that is no field is a KeyError
  naming `what`."""
  for path, value in fields.items():
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f"{what}: no field {path!r}")
    node[leaf] = value


def apply(config: Any, dataset: str, name: str) -> None:
  """Sets `config.tokenizer` and `config.preset` to `name` and the preset's fields."""
  presets = PRESETS[dataset]
  if name not in presets:
    raise ValueError(f"config preset {name!r} of {dataset}: expected one of {sorted(presets)}")
  config.tokenizer = config.preset = name
  set_fields(config, presets[name], f"config preset {dataset}:{name}")
