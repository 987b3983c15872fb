"""k-means (k-means++ init, jitted Lloyd iterations, empty-cluster repair) and residual k-means.

Distances are matmuls over row chunks (`assign.nearest_code_chunked`), cluster sums are
`segment_sum`s: memory stays `O(N D + chunk K)`, never `[N, K, D]`, so 1M x 768 fits a GPU.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r3vae_jax.quantize import assign


def _sq_dist_to(x: jax.Array, c: jax.Array) -> jax.Array:
  """`||x_i - c||^2` for every row.  x `[N, D]`, c `[D]` -> `[N]`."""
  d = x - c[None, :]
  return jnp.sum(d * d, axis=-1)


@functools.partial(jax.jit, static_argnames=("k",))
def kmeans_plus_plus(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
  """k-means++ seeding: each next centre drawn with probability proportional to `D(x)^2`.

  Args:
    key: PRNG key.
    x: `[N, D]` points.
    k: number of centres (static).

  Returns:
    `[k, D]` initial centroids (rows of `x`). When fewer than k distinct points exist the
    remaining draws are uniform (D^2 is then zero everywhere).
  """
  n = x.shape[0]
  key0, key_rest = jax.random.split(key)
  first = jax.random.randint(key0, (), 0, n)
  centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
  min_d2 = _sq_dist_to(x, x[first])

  def body(i, state):
    centroids, min_d2 = state
    total = jnp.sum(min_d2)
    logits = jnp.where(total > 0, jnp.log(jnp.maximum(min_d2, 0.0)), jnp.zeros_like(min_d2))
    pick = jax.random.categorical(jax.random.fold_in(key_rest, i), logits)
    centroids = centroids.at[i].set(x[pick])
    return centroids, jnp.minimum(min_d2, _sq_dist_to(x, x[pick]))

  centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, min_d2))
  return centroids


def _repair_empty(x: jax.Array, centroids: jax.Array, counts: jax.Array,
                  point_d2: jax.Array) -> jax.Array:
  """Moves each empty cluster onto one of the points farthest from their own centroid.

  The j-th empty cluster (in index order) takes the j-th farthest point.
  x `[N, D]`, centroids `[K, D]`, counts `[K]`, point_d2 `[N]` -> `[K, D]`.
  """
  k = centroids.shape[0]
  empty = counts == 0
  _, far = jax.lax.top_k(point_d2, min(k, x.shape[0]))
  rank = jnp.clip(jnp.cumsum(empty) - 1, 0, far.shape[0] - 1)
  return jnp.where(empty[:, None], x[far[rank]], centroids)


@functools.partial(jax.jit, static_argnames=("iters", "chunk_size"))
def lloyd(x: jax.Array, centroids: jax.Array, iters: int = 50,
          chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Lloyd iterations from given centroids, with empty-cluster repair after every update.

  Each iteration: assign every point to its nearest centroid; move each centroid to the mean of
  its points; re-seed empty clusters at the points farthest from their centroid. A final
  assignment pass makes `assignments` consistent with the returned centroids.

  Args:
    x: `[N, D]`.
    centroids: `[K, D]` initial centroids.
    iters: number of iterations (static).
    chunk_size: rows scored at once (static; None = automatic).

  Returns:
    centroids `[K, D]` and assignments `int32[N]`.
  """
  k = centroids.shape[0]

  def step(_, c):
    codes, best = assign.nearest_code_chunked(x, c, "l2", chunk_size)
    sums = jax.ops.segment_sum(x, codes, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones_like(codes, x.dtype), codes, num_segments=k)
    means = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)
    return _repair_empty(x, means, counts, -best)

  centroids = jax.lax.fori_loop(0, iters, step, centroids.astype(x.dtype))
  codes, _ = assign.nearest_code_chunked(x, centroids, "l2", chunk_size)
  return centroids, codes


@functools.partial(jax.jit, static_argnames=("k", "iters", "chunk_size"))
def kmeans(key: jax.Array, x: jax.Array, k: int, iters: int = 50,
           chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """k-means++ init followed by `iters` Lloyd iterations with empty-cluster repair.

  Args:
    key: PRNG key.
    x: `[N, D]` with N >= k.
    k: number of clusters (static).
    iters: Lloyd iterations (static).
    chunk_size: rows scored at once (static; None = automatic).

  Returns:
    centroids `[k, D]` and assignments `int32[N]`.
  """
  if x.shape[0] < k:
    raise ValueError(f"quantize/kmeans.py: need at least k={k} points, got {x.shape[0]}")
  return lloyd(x, kmeans_plus_plus(key, x, k), iters, chunk_size)


@functools.partial(jax.jit, static_argnames=("levels", "k", "iters", "chunk_size"))
def residual_kmeans(key: jax.Array, x: jax.Array, levels: int, k: int, iters: int = 50,
                    chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Residual k-means (RQ-KMeans): k-means on x, then on the residuals, `levels` times.

  Args:
    key: PRNG key (split per level).
    x: `[N, D]` with N >= k.
    levels: number of levels L (static).
    k: codes per level (static).
    iters: Lloyd iterations per level (static).
    chunk_size: rows scored at once (static; None = automatic).

  Returns:
    codebooks `[L, k, D]` and codes `int32[N, L]`.
  """
  def level(residual, level_key):
    centroids, codes = kmeans(level_key, residual, k, iters, chunk_size)
    return residual - jnp.take(centroids, codes, axis=0), (centroids, codes)

  _, (codebooks, codes) = jax.lax.scan(level, x, jax.random.split(key, levels))
  return codebooks, codes.T
