"""Schedules as pure functions of state: temperature annealing and DIGER's uncertainty decays.

* Frequency-based decay (FrqUD): an EMA of code usage; items whose deterministic code is "hot"
  (usage above `factor` x the average) are assigned by Gumbel sampling, the rest
  deterministically (`update_usage_ema`, `hot_code_mask`).
* Learned-std decay (SDUD): the recommendation loss is reweighted by a learnable noise scale
  sigma, `L / (2 (|sigma| + lam)^2) + log(|sigma| + lam)` (`sigma_weighted_loss`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def anneal_temperature(step: jax.Array | int, start: float, end: float,
                       decay_steps: int) -> jax.Array:
  """Exponential annealing from `start` (step 0) to `end` (step >= decay_steps), then constant.

  `tau(step) = start * (end / start) ** min(step / decay_steps, 1)`; scalar float32.
  """
  if start <= 0 or end <= 0 or decay_steps <= 0:
    raise ValueError("quantize/schedules.py: anneal_temperature needs start > 0, end > 0, "
                     f"decay_steps > 0; got {start}, {end}, {decay_steps}")
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / decay_steps, 0.0, 1.0)
  return jnp.asarray(start, jnp.float32) * (end / start) ** frac


@functools.partial(jax.jit, static_argnames=("num_codes",))
def code_frequencies(codes: jax.Array, num_codes: int) -> jax.Array:
  """Fraction of `codes` equal to each code.  codes `int[B]` -> `[num_codes]` (sums to 1)."""
  counts = jnp.zeros((num_codes,), jnp.float32).at[codes].add(1.0)
  return counts / jnp.maximum(codes.shape[0], 1)


@jax.jit
def update_usage_ema(usage: jax.Array, codes: jax.Array, momentum: float) -> jax.Array:
  """EMA of code usage: `momentum * usage + (1 - momentum) * freq(codes)`.

  Args:
    usage: `[K]` current EMA (fractions; start from `full(K, 1/K)`).
    codes: `int[B]` this batch's deterministic codes.
    momentum: e.g. 0.99.

  Returns:
    `[K]` updated usage (sums to 1 if `usage` does).
  """
  freq = code_frequencies(codes, usage.shape[0]).astype(usage.dtype)
  return momentum * usage + (1.0 - momentum) * freq


@jax.jit
def hot_code_mask(usage: jax.Array, codes: jax.Array, factor: float = 1.5) -> jax.Array:
  """Items whose code is hot: `usage[code] > factor * mean(usage)`.

  Args:
    usage: `[K]` usage EMA.
    codes: `int[B]` deterministic codes of the batch.
    factor: hotness threshold relative to the average usage.

  Returns:
    `bool[B]`: True = assign this item by Gumbel sampling.
  """
  return jnp.take(usage, codes) > factor * jnp.mean(usage)


@jax.jit
def sigma_weighted_loss(loss: jax.Array, sigma: jax.Array, lam: float) -> jax.Array:
  """Learned-uncertainty reweighting: `loss / (2 (|sigma| + lam)^2) + log(|sigma| + lam)`.

  Args:
    loss: scalar (or any shape) loss.
    sigma: learnable noise scale, broadcastable to `loss`.
    lam: offset lambda > 0 (keeps the weight bounded as sigma -> 0).

  Returns:
    the reweighted loss, shape of `loss` broadcast with `sigma`.
  """
  scale = jnp.abs(sigma) + lam
  return loss / (2.0 * scale * scale) + jnp.log(scale)
