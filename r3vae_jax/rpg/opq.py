"""Optimized product quantization (OPQ): item vectors -> m unordered codes of K values each.

RPG's item IDs are product-quantization codes: the (PCA-whitened) item vector is rotated by an
orthogonal matrix R, cut into m equal sub-vectors, and each sub-vector is replaced by the index
of its nearest centroid in its own codebook of K centroids. The m codes carry no order (unlike a
residual quantizer's levels), so a recommender can predict them in parallel.

Training (Ge et al., CVPR 2013, the non-parametric alternation): start from R = I, then repeat
(a) a few Lloyd steps of k-means in every subspace of X R, all subspaces at once, and
(b) the orthogonal Procrustes update R = U V^T from the SVD of X^T Y, where Y is the current
reconstruction; then a final run of k-means on the last rotation. Everything is dense JAX
(12k-35k items x 128 dims); it runs on whatever device holds the arrays.

Only items seen in training sequences fit the quantizer (`train_mask`); every item is encoded.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class OPQ:
  """A trained quantizer.

  Attributes:
    mean: float32[D] subtracted before whitening.
    projection: float32[D, P] PCA-whitening projection (P = output dimension).
    rotation: float32[P, P] orthogonal.
    codebooks: float32[m, K, P/m] centroids per subspace.
  """
  mean: np.ndarray
  projection: np.ndarray
  rotation: np.ndarray
  codebooks: np.ndarray


def pca_whiten(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Mean and whitening projection of the top `dim` principal directions of x float[N, D].

  Returns:
    (mean float32[D], projection float32[D, dim]) so that (x - mean) @ projection has unit
    variance per column.
  """
  x = np.asarray(x, np.float64)
  if not 1 <= dim <= min(x.shape):
    raise ValueError(f"rpg.opq: pca dim must be in [1, {min(x.shape)}], got {dim}")
  mean = x.mean(0)
  _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
  scale = s[:dim] / np.sqrt(max(x.shape[0] - 1, 1))
  return mean.astype(np.float32), (vt[:dim].T / np.maximum(scale, 1e-12)).astype(np.float32)


def _split(x: jax.Array, m: int) -> jax.Array:
  """[N, P] -> [m, N, P/m]."""
  return x.reshape(x.shape[0], m, -1).transpose(1, 0, 2)


def _nearest(sub: jax.Array, centroids: jax.Array) -> jax.Array:
  """sub [m, N, s], centroids [m, K, s] -> int32[m, N] nearest centroid (squared L2)."""
  d = (jnp.sum(centroids ** 2, -1)[:, None, :]
       - 2.0 * jnp.einsum("mns,mks->mnk", sub, centroids, precision="highest"))
  return jnp.argmin(d, -1).astype(jnp.int32)


def _lloyd(sub: jax.Array, centroids: jax.Array, iters: int) -> jax.Array:
  """`iters` Lloyd steps in every subspace; an empty cluster keeps its centroid."""
  k = centroids.shape[1]

  def step(_, c):
    assign = _nearest(sub, c)                                   # [m, N]
    onehot = jax.nn.one_hot(assign, k, dtype=sub.dtype)         # [m, N, K]
    sums = jnp.einsum("mnk,mns->mks", onehot, sub, precision="highest")
    counts = onehot.sum(1)[..., None]
    return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), c)

  return jax.lax.fori_loop(0, iters, step, centroids)


@functools.partial(jax.jit, static_argnames=("m", "k"))
def _train(x: jax.Array, key: jax.Array, m: int, k: int, outer_iters: int, inner_iters: int,
           final_iters: int) -> tuple[jax.Array, jax.Array]:
  n, p = x.shape
  start = jax.vmap(lambda kk: jax.random.choice(kk, n, (k,), replace=False))(
      jax.random.split(key, m))                                 # [m, K] distinct rows
  sub = _split(x, m)
  centroids = jnp.take_along_axis(sub, start[..., None], axis=1)

  def outer(_, carry):
    rotation, c = carry
    sub = _split(x @ rotation, m)
    c = _lloyd(sub, c, inner_iters)
    assign = _nearest(sub, c)
    recon = jnp.take_along_axis(c, assign[..., None], axis=1)   # [m, N, s]
    y = recon.transpose(1, 0, 2).reshape(n, p)
    u, _, vt = jnp.linalg.svd(x.T @ y)
    return u @ vt, c

  rotation, centroids = jax.lax.fori_loop(
      0, outer_iters, outer, (jnp.eye(p, dtype=x.dtype), centroids))
  centroids = _lloyd(_split(x @ rotation, m), centroids, final_iters)
  return rotation, centroids


def train(vectors: np.ndarray, m: int, k: int, pca_dim: int, seed: int = 0,
          train_mask: np.ndarray | None = None, outer_iters: int = 20, inner_iters: int = 4,
          final_iters: int = 25) -> OPQ:
  """Fits PCA whitening and OPQ on the rows `train_mask` of vectors float[N, D].

  Args:
    vectors: item vectors.
    m: number of codes per item (subspaces); must divide `pca_dim`.
    k: codes per subspace (codebook size); at most the number of training rows.
    pca_dim: whitened dimension P (RPG: 128).
    seed: k-means initialisation.
    train_mask: bool[N] rows that fit the quantizer (None = all).
    outer_iters, inner_iters, final_iters: rotation updates, Lloyd steps between them, and
      Lloyd steps on the final rotation.
  """
  vectors = np.asarray(vectors, np.float32)
  if vectors.ndim != 2 or not np.all(np.isfinite(vectors)):
    raise ValueError(f"rpg.opq: vectors must be a finite float[N, D] array, got shape "
                     f"{vectors.shape}")
  fit = vectors if train_mask is None else vectors[np.asarray(train_mask, bool)]
  if pca_dim % m:
    raise ValueError(f"rpg.opq: m={m} codes must divide pca_dim={pca_dim}")
  if not 2 <= k <= fit.shape[0]:
    raise ValueError(f"rpg.opq: codebook size k={k} must be in [2, {fit.shape[0]}] (training "
                     "rows)")
  mean, projection = pca_whiten(fit, pca_dim)
  x = jnp.asarray((fit - mean) @ projection)
  rotation, codebooks = _train(x, jax.random.PRNGKey(seed), m, k, outer_iters, inner_iters,
                               final_iters)
  return OPQ(mean, projection, np.asarray(rotation), np.asarray(codebooks))


def encode(opq: OPQ, vectors: np.ndarray) -> np.ndarray:
  """int32[N, m]: each row's nearest centroid in every subspace."""
  x = jnp.asarray((np.asarray(vectors, np.float32) - opq.mean) @ opq.projection)
  m = opq.codebooks.shape[0]
  return np.asarray(_nearest(_split(x @ jnp.asarray(opq.rotation), m),
                             jnp.asarray(opq.codebooks))).T


def distortion(opq: OPQ, vectors: np.ndarray) -> float:
  """Mean squared reconstruction error in the whitened, rotated space (per item)."""
  x = ((np.asarray(vectors, np.float32) - opq.mean) @ opq.projection) @ opq.rotation
  codes = encode(opq, vectors)
  m = opq.codebooks.shape[0]
  recon = np.concatenate([opq.codebooks[j][codes[:, j]] for j in range(m)], axis=1)
  return float(np.mean(np.sum((x - recon) ** 2, axis=1)))
