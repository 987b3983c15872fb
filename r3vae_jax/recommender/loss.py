"""Cross-entropy over the SID positions (hard codes or soft/one-hot targets)."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from r3vae_jax.recommender.layers import NEG


def sid_cross_entropy(logits: jax.Array, targets: jax.Array, level_sizes: Sequence[int]
                      ) -> jax.Array:
  """Per-example, per-level cross-entropy; each level's softmax runs over its own codes only.

  Args:
    logits: float[B, L+1, Kmax], padded past each level's size with `layers.NEG` (a finite
      large negative: those entries get exactly zero probability, so one log-softmax over Kmax
      equals the per-level log-softmax).
    targets: int codes [B, L+1], or float soft/one-hot targets [B, L+1, Kmax] (differentiable;
      entries past a level's size are ignored).
    level_sizes: codes per level, len L+1.

  Returns:
    float32[B, L+1].
  """
  valid = jnp.arange(logits.shape[-1]) < jnp.asarray(level_sizes)[:, None]  # [L+1, Kmax]
  logp = jax.nn.log_softmax(jnp.where(valid, logits.astype(jnp.float32), NEG), axis=-1)
  if jnp.issubdtype(targets.dtype, jnp.integer):
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return -jnp.sum(jnp.where(valid, targets.astype(jnp.float32), 0.0) * logp, axis=-1)


def sid_loss(logits: jax.Array, targets: jax.Array, level_sizes: Sequence[int],
             weights: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted mean over examples of the mean cross-entropy over SID positions.

  Args:
    logits, targets, level_sizes: as `sid_cross_entropy`.
    weights: float[B] (0 masks a padding row); None = all ones.

  Returns:
    (scalar loss, {"loss_per_level": float32[L+1], "accuracy": float32 (all L+1 codes right,
    hard targets; argmax agreement for soft ones), "token_accuracy": float32 (share of the
    L+1 code positions right, teacher-forced), "weight": float32 total weight}).
  """
  ce = sid_cross_entropy(logits, targets, level_sizes)
  w = jnp.ones(ce.shape[0], jnp.float32) if weights is None else weights.astype(jnp.float32)
  total = jnp.maximum(jnp.sum(w), 1e-9)
  codes = targets if jnp.issubdtype(targets.dtype, jnp.integer) else jnp.argmax(targets, -1)
  valid = jnp.arange(logits.shape[-1]) < jnp.asarray(level_sizes)[:, None]
  predicted = jnp.argmax(jnp.where(valid, logits, NEG), axis=-1)
  position_correct = predicted == codes  # [B, L+1]
  correct = jnp.all(position_correct, axis=1)
  return jnp.sum(w * jnp.mean(ce, axis=1)) / total, {
      "loss_per_level": jnp.sum(w[:, None] * ce, axis=0) / total,
      "accuracy": jnp.sum(w * correct) / total,
      "token_accuracy": jnp.sum(w * jnp.mean(position_correct, axis=1)) / total,
      "weight": jnp.sum(w),
  }
