"""DIGER's uncertainty decays: how much Gumbel noise each item gets, as pure functions of state.

`config.diger.decay` picks one:
  frequency      FrqUD: items whose greedy level-1 code is hot (usage EMA > hot_factor x the
                 average) are sampled with Gumbel noise of scale `noise_scale`, the rest are
                 assigned greedily; as code usage balances the noise fades by itself.
  learned_sigma  SDUD: a learnable scale |sigma_l| per level; the recommendation loss of level l
                 becomes L_l / (2(|sigma_l| + lam)^2) + log(|sigma_l| + lam), so sigma follows
                 max(sqrt(L_l) - lam, 0) and shrinks as the loss falls.
  gumbel         plain Gumbel-softmax, constant scale `noise_scale` (ablation: no decay).
  none           no noise: pure straight-through on the greedy indicator (ablation).

Annealing (`config.diger.noise_anneal_fraction`, 0 = off): every decay's scales are multiplied
by `anneal_factor(step, ...)`, 1 at the first joint step falling to 0 (linear or cosine) after
that fraction of the run's steps and 0 from then on: early noise spreads the codewords, late
training sees deterministic SIDs. Under "learned_sigma" it scales the noise, not the SDUD loss.

`decay` is either one of these names or its index in `DECAYS` as an int32 array: the trainer
passes the index as an argument of its jitted step, so the four decays share one compiled
program (the persistent compilation cache then serves every decay's run from the first one's).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r3vae_jax import quantize

DECAYS = ("frequency", "learned_sigma", "gumbel", "none")
ANNEAL_SCHEDULES = ("linear", "cosine")


def check_decay(decay: str) -> None:
  if decay not in DECAYS:
    raise ValueError(f"config.diger.decay: expected one of {DECAYS}, got {decay!r}")


def decay_index(decay: str | jax.Array) -> jax.Array:
  """int32[] index of `decay` in `DECAYS` (a name is checked; an array is passed through)."""
  if isinstance(decay, str):
    check_decay(decay)
    return jnp.int32(DECAYS.index(decay))
  return jnp.asarray(decay, jnp.int32)


def anneal_steps(fraction: float, total_steps: int) -> int:
  """Steps over which the noise anneals to 0: `fraction` of `total_steps`, at least 1 unless
  `fraction` is 0 (0 = no annealing)."""
  return 0 if fraction == 0 else max(1, round(fraction * total_steps))


def anneal_factor(step: jax.Array | int, num_steps: jax.Array | int,
                  schedule: str = "linear") -> jax.Array:
  """float32[] multiplier of the noise scale at `step` (traceable: step and num_steps may be
  traced int32[]).

  With p = min(step / num_steps, 1): linear 1 - p, cosine (1 + cos(pi p)) / 2; so 1 at step 0,
  1/2 at step num_steps / 2, 0 from step num_steps on. num_steps <= 0: 1 at every step (off).
  """
  if schedule not in ANNEAL_SCHEDULES:
    raise ValueError(f"config.diger.noise_anneal_schedule: expected one of {ANNEAL_SCHEDULES}, "
                     f"got {schedule!r}")
  step = jnp.asarray(step, jnp.float32)
  num_steps = jnp.asarray(num_steps, jnp.float32)
  progress = jnp.clip(step / jnp.maximum(num_steps, 1.0), 0.0, 1.0)
  factor = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return jnp.where(num_steps > 0, factor, 1.0).astype(jnp.float32)


def noise_scales(decay: str | jax.Array, greedy_level1: jax.Array, usage_level1: jax.Array,
                 sigma: jax.Array, noise_scale: float, hot_factor: float) -> jax.Array:
  """Per-item, per-level Gumbel noise scale.

  Args:
    decay: one of `DECAYS`, or its int32[] index (may be traced).
    greedy_level1: int32[B], each item's noiseless level-1 code.
    usage_level1: float[K], EMA of level-1 code usage (sums to 1).
    sigma: float[L], the learnable scales (used by "learned_sigma" only).
    noise_scale: scale of the Gumbel noise for "frequency" (hot items) and "gumbel".
    hot_factor: a code is hot when its usage exceeds hot_factor / K.

  Returns:
    float32[B, L] scales s, used as y = softmax((logits + s * g) / tau).
  """
  index = decay_index(decay)
  batch, levels = greedy_level1.shape[0], sigma.shape[0]
  hot = quantize.hot_code_mask(usage_level1, greedy_level1, hot_factor)
  per_item = jnp.where(hot, noise_scale, 0.0).astype(jnp.float32)
  by_decay = jnp.stack([  # in the order of DECAYS
      jnp.broadcast_to(per_item[:, None], (batch, levels)),
      jnp.broadcast_to(jnp.abs(sigma).astype(jnp.float32)[None, :], (batch, levels)),
      jnp.full((batch, levels), noise_scale, jnp.float32),
      jnp.zeros((batch, levels), jnp.float32)])
  return by_decay[index]


def update_usage(usage: jax.Array, greedy_codes: jax.Array, momentum: float) -> jax.Array:
  """EMA of the greedy codes' usage, per level.

  Args:
    usage: float[L, K], rows sum to 1 (start from 1/K).
    greedy_codes: int32[B, L] this batch's noiseless codes.
    momentum: EMA momentum (0.99 in DIGER).

  Returns:
    float[L, K], the updated EMA.
  """
  return jnp.stack([quantize.update_usage_ema(usage[l], greedy_codes[:, l], momentum)
                    for l in range(usage.shape[0])])


def rec_loss_with_sigma(per_level: jax.Array, rest: jax.Array, decay: str | jax.Array,
                        sigma: jax.Array, lam: float) -> jax.Array:
  """The recommendation loss, sigma-reweighted per code level under "learned_sigma".

  Args:
    per_level: float[L], mean cross-entropy of each code level's SID position.
    rest: float[], summed cross-entropy of the remaining positions (collision token).
    decay: one of `DECAYS`, or its int32[] index (may be traced).
    sigma: float[L].
    lam: lambda of the SDUD loss.

  Returns:
    float[], the mean over the L + 1 positions of their (reweighted) losses.
  """
  learned = decay_index(decay) == DECAYS.index("learned_sigma")
  per_level = jnp.where(learned, quantize.sigma_weighted_loss(per_level, sigma, lam), per_level)
  return (per_level.sum() + rest) / (per_level.shape[0] + 1)
