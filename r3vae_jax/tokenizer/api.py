"""One interface for every tokenizer: item vectors in, SID table (+ metrics) out, on disk."""
from __future__ import annotations

import os
import time
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax.tokenizer import rqkmeans
from r3vae_jax.tokenizer import sid_table
from r3vae_jax.tokenizer import programs
from r3vae_jax.tokenizer import train

TOKENIZERS = ("rqkmeans", "rqvae", "r3vae")


def resolve_tokenizer(config: ml_collections.ConfigDict) -> str:
  """The tokenizer that makes the SID table: `config.tokenizer`, or for "diger" the tokenizer
  it starts from (`config.diger.pretrain`)."""
  name = config.tokenizer
  if name == "diger":
    name = config.diger.pretrain
  if name not in TOKENIZERS:
    raise ValueError(f"config.tokenizer must be one of {TOKENIZERS} (or diger with "
                     f"diger.pretrain among them), got {config.tokenizer!r} -> {name!r}")
  return name


def fit_tokenizer(config: ml_collections.ConfigDict, vectors: np.ndarray, workdir: str,
                  vectors_fingerprint: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
  """Fits the configured tokenizer, builds the SID table and saves it under `workdir/tokenizer/`.

  A table that an earlier fit saved in `workdir` from the same vectors and the same tokenizer
  and SID settings is returned as it is (a relaunched run does not fit again).

  Args:
    config: full config; reads tokenizer, seed, sid (levels, codebook_size, max_collisions),
      mesh and the tokenizer's section (rqkmeans | rqvae | r3vae).
    vectors: float32 `[N, D]` item vectors (row i = item i).
    workdir: run folder (checkpoints and the SID table go to `workdir/tokenizer/`).
    vectors_fingerprint: `io.fingerprint_array(vectors)` when the caller has it.

  Returns:
    (SID table int32 `[N, L + 1]`, metrics: usage_per_level, perplexity_per_level,
    collision_rate (before the collision token), semantic_cohesion, preference_discrimination,
    gini, max_group_size, reconstruction_mse, tokenizer, fit_seconds, and for the VAEs
    best_epoch).

  Raises:
    ValueError: bad config, or a code tuple shared by more than `sid.max_collisions` items.
  """
  name = resolve_tokenizer(config)
  vectors = np.asarray(vectors, np.float32)
  if vectors.ndim != 2:
    raise ValueError(f"fit_tokenizer: vectors must be [N, D], got shape {vectors.shape}")
  sid = config.sid
  section = config[name].to_dict()
  meta = {"tokenizer": name, "num_items": int(vectors.shape[0]), "levels": sid.levels,
          "codebook_size": sid.codebook_size, "max_collisions": sid.max_collisions,
          "vectors_fingerprint": vectors_fingerprint or io.fingerprint_array(vectors),
          "config_fingerprint": io.fingerprint_json({"section": section, "sid": sid.to_dict(),
                                                     "seed": config.seed})}
  saved = _saved_table(workdir, meta)
  parallel.sync_processes("tokenize: saved table checked")  # before process 0 writes a new one
  if saved is not None:
    return saved
  start = time.time()
  if name == "rqkmeans":
    _, codes, recon = rqkmeans.fit_rqkmeans(vectors, sid.levels, sid.codebook_size,
                                            config.rqkmeans.iters, config.rqkmeans.seed)
    metrics = programs.evaluate(vectors, codes, recon, sid.codebook_size)
  else:
    run_config = config.copy_and_resolve_references()
    run_config.tokenizer = name
    result = train.train_tokenizer(run_config, vectors, workdir)
    codes, metrics = result.codes, {**result.metrics, "best_epoch": result.best_epoch}
  table = sid_table.make_sid_table(codes, sid.max_collisions,
                                   sid.codebook_size if sid.spill_overflow else 0)
  spilled = int(np.any(table[:, :codes.shape[1]] != codes, axis=1).sum())
  metrics = {**metrics, "tokenizer": name, "fit_seconds": time.time() - start,
             "spilled_items": spilled}
  sid_table.save_sid_table(workdir, table, metrics, {**meta, "config": section})
  return table, metrics


def _saved_table(workdir: str, meta: dict[str, Any]
                 ) -> tuple[np.ndarray, dict[str, Any]] | None:
  """(table, metrics) saved in `workdir` by a fit whose provenance equals `meta`; None when
  there is none, it is unreadable, or it was made from other vectors or settings."""
  try:
    table, metrics = sid_table.load_sid_table(workdir)
  except io.ArtifactError:
    return None
  saved = metrics.pop("meta", {})
  if any(saved.get(key) != value for key, value in meta.items()):
    return None
  logging.info("tokenize: %s in %s was fitted on the same vectors and settings; using it",
               sid_table.TABLE_FILE, os.path.join(workdir, sid_table.SID_DIR))
  return table, metrics
