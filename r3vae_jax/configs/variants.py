"""Named config variants, as data: the R3-VAE paper's ablations, the re-implementation's
recommender schedule and our own change (issue 9).

Chosen by the config argument `tokenizer+variant[+variant...][,vectors]`, e.g.

  python -m r3vae_jax.main --config=r3vae_jax/configs/beauty.py:r3vae+no_sc --workdir=DIR

Each variant names the tokenizers it applies to and the config fields it sets (dotted paths);
`config.variant` records the name, and results JSON and the results table carry it.
"""
from typing import Any

R3VAE = ("r3vae",)
FIXED_TABLE = ("rqkmeans", "rqvae", "r3vae")  # the recommender trainer (not DIGER's joint one)
DIGER = ("diger",)
RQVAE_BASED = ("rqvae", "diger")  # the RQ-VAE row and DIGER, which starts from an RQ-VAE
# The R3-VAE paper's ablations each remove a component: a row with one of them is not the
# published method, so the results table sets no published numbers beside it.
PAPER_ABLATIONS = ("no_ref", "straight_through", "no_sc", "no_pd")

# DIGER as the released code and the re-implementation run it: the recommender reads the
# noiseless codes and its loss does not reach the tokenizer (results/README.md, session 6), the
# logits mapped to [-1, 1] as the released code does, Gumbel scale 0.1 and the noise annealed to
# 0 over the first half of training. With raw logits at scale 1 the noisy VQ targets scattered
# the codes on full data (Beauty collisions 0.10 -> 0.71, test N@10 0.0161; this setting: 0.09,
# 0.0272; results/README.md, session 7). Training examples are the fixed-table rows' (the last
# 20 items, `train.example_window`): with them and `tokenizer_lr_1e-7` the rows reach 105 / 108 /
# 108% of the reference on Beauty / Sports / Toys, Beauty from the `warmup+last_table` RQ-VAE
# table and Toys from `last_table` (results/README.md, sessions 18-20). The
# released code, and our DIGER rows before session 18, train on whole sequences
# (`--config.train.example_window=0`).
_DETACHED = {"diger.detach_codes": True, "diger.reader_codes": "greedy",
             "diger.normalize_logits": True, "diger.noise_scale": 0.1,
             "diger.noise_anneal_fraction": 0.5}

VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    # R3-VAE paper, ablation table: remove one component at a time.
    "no_ref": (R3VAE, {"r3vae.reference_vector": False}),      # quantise z, not z - alpha r
    "straight_through": (R3VAE, {"r3vae.rating": "straight_through"}),  # VQ-VAE residuals
    "no_sc": (R3VAE, {"r3vae.use_sc": False}),                 # no Semantic Cohesion term
    "no_pd": (R3VAE, {"r3vae.use_pd": False}),                 # no Preference Discrimination
    # The re-implementation's recommender schedule (RecBoard): constant lr 5e-4, 200 epochs.
    "recboard_schedule": (FIXED_TABLE, {"train.lr": 5e-4, "train.schedule": "constant",
                                        "train.epochs": 200}),
    # Ours: validate, select and test the moving average of the recommender's parameters
    # (recommender/ema.py). 0.999 averages over ~1,000 steps, ~3 Beauty epochs at batch 512.
    "ema": (FIXED_TABLE, {"train.ema_decay": 0.999}),
    # Ours: K recommenders on the one SID table, decoded together (recommender/ensemble.py);
    # the run also scores its first member alone, the plain row's model.
    "ensemble2": (FIXED_TABLE, {"train.ensemble_size": 2}),
    "ensemble3": (FIXED_TABLE, {"train.ensemble_size": 3}),
    "detached": (DIGER, _DETACHED),
    # The same with the tokenizer's rate following the recommender's warm-up and decay (peak
    # `diger.tokenizer_lr`) instead of staying constant: on the CPU slice it removed the late
    # rise of the training loss and the late loss of NDCG@10 (results/README.md, session 7).
    "detached_follow": (DIGER, {**_DETACHED, "diger.tokenizer_schedule": "follow"}),
    # The RQ-VAE (DIGER's starting tokenizer) trained on Sinkhorn-balanced assignments at
    # epsilon 0.003, as DIGER's released RQ-VAE and RecBoard's DIGER config (`sk_epsilons`):
    # our plain RQ-VAE leaves level-1 codes unused (Beauty usage 0.20-0.59). Measured: usage 1.0,
    # collisions 0.02, but Beauty N@10 0.0313 vs 0.0346 (results/README.md, session 9).
    "sinkhorn": (RQVAE_BASED, {"rqvae.balance_epsilon": 0.003}),
    # The RQ-VAE encodes the item vectors minus their mean: the Beauty MiniLM codes collapse in
    # the first 10 steps (collisions 0.026 -> 0.98) and recover to 0.129 and 101 level-1 codes by
    # step 600 uncentred, to 0.081 and 136 centred (CPU, results/rqvae_early_steps_cpu.json).
    "centered": (RQVAE_BASED, {"rqvae.center_inputs": True}),
    # The SID table from the tokenizer's last epoch (as TIGER) instead of its lowest-collision
    # one: Toys' RQ-VAE keeps epoch 10 of 200 by collisions (0.057 vs 0.063 at 200) while its
    # reconstruction error is still 60% above the final one (results/README.md, session 10).
    "last_table": (RQVAE_BASED, {"sid.select": "last"}),
    # The RQ-VAE's AdamW rate rises from 0 over its first 300 steps (25 Beauty epochs). At the
    # full rate from step 1 the encoder's outputs contract onto a few codewords (Beauty MiniLM:
    # 4 level-1 codes and collisions 0.999 at step 30); warmed up, the dip is shallower (76 codes,
    # 0.455 at step 60) and the last epoch's table uses 73% of the level-1 codes against 43%
    # (collisions 0.130 vs 0.124; CPU, results/rqvae_early_steps_cpu.json and results/README.md,
    # session 13). By collision rate the warm-up run's best epoch is an early one (20, its
    # reconstruction error 0.00136 against 0.00087 at 200): use it with `last_table`.
    "warmup": (RQVAE_BASED, {"rqvae.warmup_steps": 300}),
    # DIGER's joint phase moves only the codebooks and the decoder (RecBoard's DIGER config,
    # `freeze_id_encoder: true`). CPU slice, detached_follow at tokenizer lr 1e-5, 3 seeds:
    # validation N@10 0.0509 vs 0.0475 unfrozen (results/README.md, session 9). LastFM at paper
    # size, one seed: test N@10 0.0478 vs 0.0454 unfrozen, 98% of the fixed table (session 16).
    "frozen_encoder": (DIGER, {"diger.freeze_encoder": True}),
    # The joint tokenizer at 1/100 of DIGER's rate. Adam moves a parameter by about lr per step
    # whatever its scale, and our RQ-VAE's codewords are small (LastFM MiniLM: per-coordinate RMS
    # 0.023 / 0.0073 / 0.0049 at levels 1-3), so at 1e-5 DIGER rewrites 84% of LastFM's SIDs in
    # 720 steps. CPU slice, detached_follow, seed 0: validation N@10 0.0473 / 0.0516 / 0.0545 at
    # lr 1e-5 / 1e-6 / 1e-7 with 54 / 24 / 3% of the SIDs moved; fixed table 0.0565
    # (results/README.md, session 16).
    "tokenizer_lr_1e-7": (DIGER, {"diger.tokenizer_lr": 1e-7}),
}


def apply(config: Any, tokenizer: str, variant: str) -> None:
  """Sets `config.variant` and the fields of each `+`-joined variant name, e.g.
  "detached_follow+sinkhorn"; unknown names, other tokenizers and two names setting one field
  are errors."""
  set_by: dict[str, str] = {}
  for name in variant.split("+"):
    if name not in VARIANTS:
      raise ValueError(f"config variant {name!r}: expected one of {sorted(VARIANTS)}")
    applies_to, fields = VARIANTS[name]
    if tokenizer not in applies_to:
      raise ValueError(f"config variant {name!r} applies to tokenizers {applies_to}, not "
                       f"{tokenizer!r}")
    for path, value in fields.items():
      if path in set_by:
        raise ValueError(f"config variants {set_by[path]!r} and {name!r} both set {path!r}")
      set_by[path] = name
      *parents, leaf = path.split(".")
      node = config
      for part in parents:
        node = node[part]
      if leaf not in node:
        raise KeyError(f"config variant {name!r}: no field {path!r}")
      node[leaf] = value
  config.variant = variant
