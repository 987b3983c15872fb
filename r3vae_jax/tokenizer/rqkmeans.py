"""RQ-KMeans tokenizer: k-means on the item vectors, then on the residuals, L times (no gradients)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax import quantize


def fit_rqkmeans(vectors: np.ndarray, levels: int, codebook_size: int, iters: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, float]:
  """Fits residual k-means codebooks and codes every item.

  Args:
    vectors: float32 `[N, D]` item vectors, N >= codebook_size.
    levels: L.
    codebook_size: K.
    iters: Lloyd iterations per level.
    seed: PRNG seed (k-means++ draws).

  Returns:
    (codebooks float32 `[L, K, D]`, codes int32 `[N, L]`, reconstruction MSE: mean over items
    and dims of `(x - sum_l C_l[code_l])^2`).
  """
  x = jnp.asarray(vectors, jnp.float32)
  if x.ndim != 2 or x.shape[0] < codebook_size:
    raise ValueError(f"rqkmeans: vectors must be [N >= codebook_size={codebook_size}, D], "
                     f"got shape {x.shape}")
  books, codes = quantize.residual_kmeans(jax.random.PRNGKey(seed), x, levels, codebook_size,
                                          iters)
  recon = jnp.sum(books[jnp.arange(levels)[None, :], codes], axis=1)
  mse = float(jnp.mean(jnp.square(x - recon)))
  return np.asarray(books), np.asarray(codes, np.int32), mse
