"""Checks a run's config before any stage starts: types and ranges of the main fields.

`validate(config)` raises ValueError naming the first bad field, e.g.
`config.train.batch_size: expected an int >= 1, got -1`, so a bad override fails at once with
one clear line instead of deep inside a stage (or, worse, after hours of training).
Fields a config lacks are reported too; fields not listed here are not checked.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from r3vae_jax.configs.default import TOKENIZERS

# A check returns None when the value is fine, else what was expected ("an int >= 1").
Check = Callable[[Any], "str | None"]

DATA_FORMATS = ("synthetic", "iclrec", "p5", "recbole", "amazon_raw", "ml1m", "hetrec", "tfds")
VECTOR_SOURCES = ("minilm-text", "interactions-svd", "npy", "synthetic")
DIGER_DECAYS = ("frequency", "learned_sigma", "gumbel", "none")
DIGER_ANNEAL_SCHEDULES = ("linear", "cosine")  # diger/noise.py ANNEAL_SCHEDULES
RQVAE_ESTIMATORS = ("straight_through", "rotation")  # tokenizer/quantizers.py ESTIMATORS


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _int(lo: int | None = None, hi: int | None = None, also: tuple[int, ...] = ()) -> Check:
  bounds = " and ".join(s for s in (f">= {lo}" if lo is not None else "",
                                    f"<= {hi}" if hi is not None else "") if s)
  what = "an int" + (f" {bounds}" if bounds else "") + "".join(f" (or {a})" for a in also)

  def check(v):
    ok = _is_int(v) and (v in also or ((lo is None or v >= lo) and (hi is None or v <= hi)))
    return None if ok else what
  return check


def _float(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> Check:
  parts = []
  if lo is not None:
    parts.append(f"{'>' if lo_open else '>='} {lo:g}")
  if hi is not None:
    parts.append(f"{'<' if hi_open else '<='} {hi:g}")
  what = "a finite number" + (f" {' and '.join(parts)}" if parts else "")

  def check(v):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
      return what
    if lo is not None and (v <= lo if lo_open else v < lo):
      return what
    if hi is not None and (v >= hi if hi_open else v > hi):
      return what
    return None
  return check


def _choice(*options: str) -> Check:
  return lambda v: None if v in options else f"one of {options}"


def _bool(v: Any) -> str | None:
  return None if isinstance(v, bool) else "True or False"


def _str(v: Any) -> str | None:
  return None if isinstance(v, str) else "a string"


def _ints(lo: int) -> Check:
  what = f"a list of ints >= {lo}"
  return lambda v: (None if isinstance(v, (tuple, list)) and all(_is_int(x) and x >= lo for x in v)
                    else what)


_POSITIVE = _int(1)
_RATE = _float(0.0, lo_open=True)        # learning rates, temperatures: > 0
_WEIGHT = _float(0.0)                    # loss weights, decays: >= 0

_VAE = {"hidden": _ints(1), "latent_dim": _POSITIVE, "beta": _WEIGHT, "lr": _RATE,
        "weight_decay": _WEIGHT, "epochs": _POSITIVE, "batch_size": _POSITIVE,
        "kmeans_init": _bool, "eval_every": _POSITIVE, "kmeans_iters": _POSITIVE,
        "kmeans_max_items": _POSITIVE, "checkpoint_keep": _POSITIVE, "warmup_steps": _int(0)}

FIELDS: dict[str, Check] = {
    "seed": _int(0),
    "dataset": _str,
    "tokenizer": _choice(*TOKENIZERS),
    "data.format": _choice(*DATA_FORMATS),
    "data.path": _str,
    "data.item_text_path": _str,
    "data.item_map_path": _str,
    "data.min_core": _int(0),
    "data.max_history": _POSITIVE,
    "data.first_only": _bool,
    "vectors.source": _choice(*VECTOR_SOURCES),
    "vectors.path": _str,
    "vectors.batch_size": _POSITIVE,
    "vectors.max_tokens": _POSITIVE,
    "vectors.svd_dim": _POSITIVE,
    "vectors.svd_window": _POSITIVE,
    "sid.levels": _POSITIVE,
    "sid.codebook_size": _int(2),
    "sid.max_collisions": _POSITIVE,
    "sid.spill_overflow": _bool,
    "sid.select": _choice("min_collision", "last"),
    "rqkmeans.iters": _POSITIVE,
    "rqkmeans.seed": _int(0),
    **{f"rqvae.{k}": c for k, c in _VAE.items()},
    **{f"r3vae.{k}": c for k, c in _VAE.items()},
    "rqvae.balance_epsilon": _WEIGHT,
    "rqvae.balance_iters": _POSITIVE,
    "rqvae.estimator": _choice(*RQVAE_ESTIMATORS),
    "rqvae.center_inputs": _bool,
    "r3vae.reference_vector": _bool,
    "r3vae.encoder": _choice("identity", "mlp"),
    "r3vae.normalize": _bool,
    "r3vae.rating": _choice("cosine_top1", "soft", "hard", "straight_through"),
    "r3vae.rating_temperature": _RATE,
    "r3vae.recon_loss": _choice("cosine", "mse"),
    "r3vae.sc_form": _choice("prefix_cosine", "soft_pairs"),
    "r3vae.pd_form": _choice("codebook", "soft_centres"),
    "r3vae.sc_weight": _WEIGHT,
    "r3vae.pd_weight": _WEIGHT,
    "r3vae.use_sc": _bool,
    "r3vae.use_pd": _bool,
    "r3vae.pd_t": _RATE,
    "diger.decay": _choice(*DIGER_DECAYS),
    "diger.tau": _RATE,
    "diger.noise_scale": _WEIGHT,
    "diger.usage_momentum": _float(0.0, 1.0, hi_open=True),
    "diger.hot_factor": _RATE,
    "diger.sigma_lambda": _RATE,
    "diger.sigma_lr": _RATE,
    "diger.tokenizer_lr": _RATE,
    "diger.recon_weight": _WEIGHT,
    "diger.vq_weight": _WEIGHT,
    "diger.pretrain": _choice("rqvae"),      # DIGER starts from an RQ-VAE
    "diger.reader_codes": _choice("noisy", "greedy"),
    "diger.noise_anneal_fraction": _float(0.0, 1.0),
    "diger.noise_anneal_schedule": _choice(*DIGER_ANNEAL_SCHEDULES),
    "diger.detach_codes": _bool,
    "diger.normalize_logits": _bool,
    "diger.noisy_targets": _bool,
    "diger.vq_codes": _choice("chosen", "greedy"),
    "diger.tokenizer_schedule": _choice("constant", "follow"),
    "diger.freeze_encoder": _bool,
    "recommender.num_encoder_layers": _POSITIVE,
    "recommender.num_decoder_layers": _POSITIVE,
    "recommender.d_model": _POSITIVE,
    "recommender.num_heads": _POSITIVE,
    "recommender.d_kv": _POSITIVE,
    "recommender.d_ff": _POSITIVE,
    "recommender.dropout": _float(0.0, 1.0, hi_open=True),
    "recommender.ffn": _choice("relu", "gated-gelu"),
    "recommender.relative_buckets": _POSITIVE,
    "recommender.relative_max_distance": _POSITIVE,
    "recommender.dtype": _choice("float32", "bfloat16"),
    "train.batch_size": _POSITIVE,
    "train.lr": _RATE,
    "train.weight_decay": _WEIGHT,
    "train.warmup_steps": _int(0),
    "train.schedule": _choice("cosine", "linear", "constant"),
    "train.epochs": _POSITIVE,
    "train.patience": _POSITIVE,
    "train.clip_norm": _WEIGHT,              # 0 = no clipping
    "train.eval_every_epochs": _POSITIVE,
    "train.checkpoint_keep": _POSITIVE,
    "train.log_every_steps": _POSITIVE,
    "train.nonfinite": _choice("raise", "skip"),
    "train.example_window": _int(0),
    "train.checkpoint_every_steps": _int(0),
    "train.select_metric": lambda v: (None if isinstance(v, str) and re.fullmatch(
        r"(ndcg|recall)@[1-9][0-9]*", v) else "ndcg@K or recall@K"),
    "train.prefetch": _int(0),
    "train.fsdp_min_size": _int(0),
    "train.stop_at": _float(0.0),              # Unix time; 0 = no deadline
    "eval.beam_size": _POSITIVE,
    "eval.ks": _ints(1),
    "eval.batch_size": _POSITIVE,
    "eval.exclude_seen": _bool,
    "eval.max_users": _int(0),
    "mesh.data": _int(1, also=(-1,)),
    "mesh.model": _POSITIVE,
}

_MISSING = object()


def _get(config: Any, path: str) -> Any:
  node = config
  for key in path.split("."):
    try:
      node = node[key]
    except (KeyError, TypeError, AttributeError):
      return _MISSING
  return node


def validate(config: Any) -> None:
  """Raises ValueError naming the first field of `config` with a bad type or value.

  Args:
    config: a full run config (`configs/default.py:base_config()` and the dataset files).
  """
  for path, check in FIELDS.items():
    value = _get(config, path)
    if value is _MISSING:
      raise ValueError(f"config.{path}: missing (the config file predates this field? start "
                       "from configs/default.py:base_config())")
    expected = check(value)
    if expected is not None:
      raise ValueError(f"config.{path}: expected {expected}, got {value!r}")
  ks, beam = tuple(config.eval.ks), config.eval.beam_size
  if not ks or max(ks) > beam:
    raise ValueError(f"config.eval.ks: expected non-empty, every K <= config.eval.beam_size "
                     f"({beam}), got {ks}")
  k = int(config.train.select_metric.partition("@")[2])
  if k not in ks:
    raise ValueError(f"config.train.select_metric: expected K in config.eval.ks {ks}, got "
                     f"{config.train.select_metric!r}")
