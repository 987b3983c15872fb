"""Ablations: named field changes applied on top of a preset (`presets.py`), as data.

Chosen by the config argument `preset[+ablation...][,vectors]`, e.g.

  python -m r3vae_jax.main --config=r3vae_jax/configs/beauty.py:r3vae+no_sc --workdir=DIR

Each ablation names the tokenizers it applies to and the config fields it sets (dotted paths);
`config.variant` records the `+`-joined names, and results JSON carry it. The R3-VAE paper's
ablations remove one component each; the others are settings measured against the presets
(docs/experiments.md), kept so that their rows can be run again.
"""
from typing import Any

from r3vae_jax.configs import presets

R3VAE = ("r3vae",)
FIXED_TABLE = ("rqkmeans", "rqvae", "r3vae")  # the recommender trainer (not DIGER's joint one)
DIGER = ("diger",)
RQVAE_BASED = ("rqvae", "diger")  # the RQ-VAE row and DIGER, which starts from an RQ-VAE
ALL = ("rqkmeans", "rqvae", "r3vae", "diger")
# The R3-VAE paper's ablations each remove a component: a row with one of them is not the
# published method, so the results table sets no published numbers beside it.
PAPER_ABLATIONS = ("no_ref", "straight_through", "no_sc", "no_pd")

# DIGER with the recommender reading the noiseless codes and its loss kept from the tokenizer,
# the logits mapped to [-1, 1], Gumbel scale 0.1 annealed to 0 over the first half of training,
# at DIGER's tokenizer rate (1e-5, constant); the DIGER presets add the following rate at 1e-7.
_DETACHED = {"diger.detach_codes": True, "diger.reader_codes": "greedy",
             "diger.normalize_logits": True, "diger.noise_scale": 0.1,
             "diger.noise_anneal_fraction": 0.5}

ABLATIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    # R3-VAE paper, ablation table: remove one component at a time.
    "no_ref": (R3VAE, {"r3vae.reference_vector": False}),      # quantise z, not z - alpha r
    "straight_through": (R3VAE, {"r3vae.rating": "straight_through"}),  # VQ-VAE residuals
    "no_sc": (R3VAE, {"r3vae.use_sc": False}),                 # no Semantic Cohesion term
    "no_pd": (R3VAE, {"r3vae.use_pd": False}),                 # no Preference Discrimination
    # The re-implementation's recommender schedule (RecBoard): constant lr 5e-4, 200 epochs.
    "recboard_schedule": (FIXED_TABLE, {"train.lr": 5e-4, "train.schedule": "constant",
                                        "train.epochs": 200}),
    # Training examples from whole sequences instead of their last 20 items (the released DIGER
    # code's protocol): Beauty DIGER test N@10 0.0297 (40 epochs, tokenizer lr 1e-5).
    "whole_sequences": (ALL, {"train.example_window": 0}),
    "detached": (DIGER, _DETACHED),
    # The same with the tokenizer's rate following the recommender's warm-up and decay: on a CPU
    # slice it removed the late rise of the training loss and the late loss of NDCG@10.
    "detached_follow": (DIGER, {**_DETACHED, "diger.tokenizer_schedule": "follow"}),
    # The RQ-VAE trained on Sinkhorn-balanced assignments at epsilon 0.003, as DIGER's released
    # RQ-VAE: Beauty level-1 usage 1.0 and collisions 0.02, but test N@10 0.0313 vs 0.0346.
    "sinkhorn": (RQVAE_BASED, {"rqvae.balance_epsilon": 0.003}),
    # The RQ-VAE encodes the item vectors minus their mean: Beauty collisions 0.081 against 0.129
    # at step 600, but test N@10 0.0323 vs 0.0346 (40 epochs).
    "centered": (RQVAE_BASED, {"rqvae.center_inputs": True}),
    # The SID table of the tokenizer's last epoch (presets.LAST_TABLE).
    "last_table": (RQVAE_BASED, presets.LAST_TABLE),
    # The RQ-VAE's rate warmed up over 300 steps (presets.WARMUP); with last_table, Beauty's
    # fixed-table test N@10 0.0366 against 0.0346 (40 epochs).
    "warmup": (RQVAE_BASED, presets.WARMUP),
    # DIGER's joint phase moves only the codebooks and the decoder (RecBoard's DIGER
    # `freeze_id_encoder`): LastFM, one seed, test N@10 0.0478 vs 0.0454 unfrozen at lr 1e-5.
    "frozen_encoder": (DIGER, {"diger.freeze_encoder": True}),
    # The joint tokenizer at 1/100 of DIGER's rate (part of the DIGER presets).
    "tokenizer_lr_1e-7": (DIGER, {"diger.tokenizer_lr": 1e-7}),
}


def apply(config: Any, tokenizer: str, names: str) -> None:
  """Sets `config.variant` to `names` and the fields of each `+`-joined ablation, e.g.
  "detached_follow+sinkhorn"; unknown names, other tokenizers and two names setting one field
  are errors."""
  set_by: dict[str, str] = {}
  for name in names.split("+"):
    if name not in ABLATIONS:
      raise ValueError(f"config variant {name!r}: expected one of {sorted(ABLATIONS)}")
    applies_to, fields = ABLATIONS[name]
    if tokenizer not in applies_to:
      raise ValueError(f"config variant {name!r} applies to tokenizers {applies_to}, not "
                       f"{tokenizer!r}")
    for path in fields:
      if path in set_by:
        raise ValueError(f"config variants {set_by[path]!r} and {name!r} both set {path!r}")
      set_by[path] = name
    presets.set_fields(config, fields, f"config variant {name!r}")
  config.variant = names
