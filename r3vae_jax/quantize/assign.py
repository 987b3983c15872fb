"""Code assignment: nearest code by L2 / cosine / dot product, and the R3-VAE rating.

All pairwise scores are matmuls (`||x||^2 - 2 x.c + ||c||^2` for L2), never `[B, K, D]`
tensors. Matmuls run at full float32 precision (`Precision.HIGHEST`) so that GPU TF32 does not
flip near-ties; the cost is small next to the encoder.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

METRICS = ("l2", "cosine", "dot")
RATING_MODES = ("soft", "hard", "cosine_top1")
_HIGHEST = jax.lax.Precision.HIGHEST
# Rows per chunk is chosen so that one chunk's scores hold about this many floats.
_CHUNK_SCORES = 1 << 26


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """`x / ||x||` over the last axis; a zero row stays zero (finite gradient).  `[..., D]`."""
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _check_metric(metric: str) -> None:
  if metric not in METRICS:
    raise ValueError(f"quantize/assign.py: metric must be one of {METRICS}, got {metric!r}")


@functools.partial(jax.jit, static_argnames=("metric",))
def pairwise_scores(x: jax.Array, codebook: jax.Array, metric: str = "l2") -> jax.Array:
  """Similarity of every row to every code; higher = closer.

  Args:
    x: `[B, D]`.
    codebook: `[K, D]`.
    metric: "l2" (`-||x - c||^2`, clamped to <= 0), "cosine" or "dot".

  Returns:
    `[B, K]` scores.
  """
  _check_metric(metric)
  if metric == "cosine":
    return jnp.matmul(l2_normalize(x), l2_normalize(codebook).T, precision=_HIGHEST)
  dots = jnp.matmul(x, codebook.T, precision=_HIGHEST)
  if metric == "dot":
    return dots
  x2 = jnp.sum(x * x, axis=-1, keepdims=True)
  c2 = jnp.sum(codebook * codebook, axis=-1)
  return -jnp.maximum(x2 - 2.0 * dots + c2[None, :], 0.0)


@functools.partial(jax.jit, static_argnames=("metric",))
def nearest_code(x: jax.Array, codebook: jax.Array,
                 metric: str = "l2") -> tuple[jax.Array, jax.Array]:
  """Hard nearest-code assignment.

  Args:
    x: `[B, D]`.
    codebook: `[K, D]`.
    metric: "l2" | "cosine" | "dot".

  Returns:
    codes `int32[B]` (argmax of the scores; ties go to the lowest index) and
    scores `[B, K]` (higher = closer; for l2 it is `-||x - c||^2`).
  """
  scores = pairwise_scores(x, codebook, metric)
  return jnp.argmax(scores, axis=-1).astype(jnp.int32), scores


@functools.partial(jax.jit, static_argnames=("iters",))
def balanced_codes(scores: jax.Array, epsilon: float | jax.Array, iters: int = 50) -> jax.Array:
  """Balanced assignment of a batch to codes by Sinkhorn-Knopp (entropic optimal transport).

  Finds the transport plan between the B rows (mass 1/B each) and the K codes (mass 1/K each)
  that maximises `sum P * scores + epsilon * H(P)`, then gives each row its largest entry. With
  a small `epsilon` every code takes about B/K rows of the batch, the nearest ones it can: a
  batch piled on a few codes spreads over all of them (LC-Rec's and DIGER's `sk_epsilon`).
  Scores are first mapped to [-1, 1] per batch (centred on their mid-range, divided by the
  half-range), so `epsilon` does not depend on the scale of the latents. Log domain: finite for
  any epsilon > 0.

  Args:
    scores: `[B, K]`, higher = closer (`pairwise_scores`).
    epsilon: entropy weight (> 0); smaller = closer to the exact balanced assignment.
    iters: Sinkhorn iterations (column then row normalisation each).

  Returns:
    codes `int32[B]`.
  """
  scores = jax.lax.stop_gradient(scores)
  lo, hi = jnp.min(scores), jnp.max(scores)
  half_range = jnp.maximum((hi - lo) / 2, 1e-12)
  log_plan = (scores - (hi + lo) / 2) / half_range / epsilon
  rows, codes = scores.shape
  log_rows, log_codes = jnp.log(float(rows)), jnp.log(float(codes))

  def normalise(_, lp):
    lp = lp - jax.nn.logsumexp(lp, axis=0, keepdims=True) - log_codes  # each code: 1/K
    return lp - jax.nn.logsumexp(lp, axis=1, keepdims=True) - log_rows  # each row: 1/B

  log_plan = jax.lax.fori_loop(0, iters, normalise, log_plan)
  return jnp.argmax(log_plan, axis=-1).astype(jnp.int32)


def _ranking_scores(x: jax.Array, codebook: jax.Array, metric: str) -> jax.Array:
  """Scores with the same argmax as `pairwise_scores`, without per-row constants.  `[B, K]`."""
  if metric == "l2":
    c2 = jnp.sum(codebook * codebook, axis=-1)
    return 2.0 * jnp.matmul(x, codebook.T, precision=_HIGHEST) - c2[None, :]
  return pairwise_scores(x, codebook, metric)


def chunk_rows(num_codes: int, budget: int = _CHUNK_SCORES) -> int:
  """Rows per chunk so that a `[rows, num_codes]` score block holds about `budget` floats."""
  return max(1, budget // max(1, num_codes))


@functools.partial(jax.jit, static_argnames=("metric", "chunk_size"))
def nearest_code_chunked(x: jax.Array, codebook: jax.Array, metric: str = "l2",
                         chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Nearest code for many rows without holding all `[N, K]` scores at once.

  Rows are processed `chunk_size` at a time in a `fori_loop` over slices of `x` (default:
  `chunk_rows(K)`); when `N <= chunk_size` it is a single matmul. The loop slices the row axis,
  so for large N sharded over devices, call it per shard (e.g. inside `jax.shard_map`).

  Args:
    x: `[N, D]`.
    codebook: `[K, D]`.
    metric: "l2" | "cosine" | "dot".
    chunk_size: rows per chunk (static), or None for the default.

  Returns:
    codes `int32[N]` and `best [N]`: the winning score (for l2, `-||x - c||^2`, clamped <= 0).
  """
  _check_metric(metric)
  chunk = chunk_size or chunk_rows(codebook.shape[0])
  if metric == "l2":
    x2 = jnp.sum(x * x, axis=-1)

  def one(rows):
    scores = _ranking_scores(rows, codebook, metric)
    return jnp.argmax(scores, axis=-1).astype(jnp.int32), jnp.max(scores, axis=-1)

  n = x.shape[0]
  if n <= chunk:
    codes, best = one(x)
  else:
    # In-place chunks of x (no reshaped copy); the last chunk is shifted back to end at row N
    # and rewrites a few rows with the same values.
    def body(i, out):
      start = jnp.minimum(i * chunk, n - chunk)
      part = one(jax.lax.dynamic_slice_in_dim(x, start, chunk))
      return tuple(jax.lax.dynamic_update_slice_in_dim(o, p, start, 0)
                   for o, p in zip(out, part))

    init = (jnp.zeros((n,), jnp.int32), jnp.zeros((n,), x.dtype))
    codes, best = jax.lax.fori_loop(0, -(-n // chunk), body, init)
  if metric == "l2":
    best = -jnp.maximum(x2 - best, 0.0)
  return codes, best


@functools.partial(jax.jit, static_argnames=("mode",))
def rating_quantize(e: jax.Array, codebook: jax.Array, temperature: float | jax.Array = 1.0,
                    mode: str = "soft") -> tuple[jax.Array, jax.Array, jax.Array]:
  """R3-VAE rating quantisation (fully differentiable, no straight-through).

  Every code is rated by cosine similarity `s_k = cos(e, c_k)`; `w = softmax(s / temperature)`.

  * mode "soft": `quantized = sum_k w_k c_k` (the paper's soft aggregation).
  * mode "hard": `quantized = w_k* c_k*` with `k* = argmax_k w_k` (the top-1 code scaled by its
    rating; the gradient reaches `e` and the codebook through `w_k*` and `c_k*`).
  * mode "cosine_top1": `quantized = s_k* c_k*/||c_k*||`, the top-1 unit code scaled by its raw
    cosine (no softmax; the temperature only shapes the returned weights). This is the rating
    of the RecBoard re-implementation (`R3-VAE/quantizer.py`, `match`).

  Args:
    e: `[B, D]` residual at this level.
    codebook: `[K, D]`.
    temperature: softmax temperature (scalar > 0).
    mode: "soft" | "hard" | "cosine_top1".

  Returns:
    quantized `[B, D]`, codes `int32[B]` (`argmax_k w_k`, the SID at this level), weights
    `[B, K]`.
  """
  if mode not in RATING_MODES:
    raise ValueError(f"quantize/assign.py: rating mode must be one of {RATING_MODES}, got {mode!r}")
  scores = pairwise_scores(e, codebook, "cosine")
  weights = jax.nn.softmax(scores / temperature, axis=-1)
  codes = jnp.argmax(weights, axis=-1).astype(jnp.int32)
  if mode == "soft":
    quantized = jnp.matmul(weights, codebook, precision=_HIGHEST)
  elif mode == "cosine_top1":
    onehot = jax.nn.one_hot(codes, codebook.shape[0], dtype=scores.dtype)
    top = jnp.sum(onehot * scores, axis=-1, keepdims=True)
    quantized = top * jnp.matmul(onehot, l2_normalize(codebook), precision=_HIGHEST)
  else:
    top = jnp.take_along_axis(weights, codes[:, None], axis=-1)
    quantized = top * jnp.take(codebook, codes, axis=0)
  return quantized, codes, weights
