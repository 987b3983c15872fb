"""Hard residual quantisation over L codebook levels (no gradient tricks).

Level l assigns the current residual to its nearest code of `codebooks[l]`, subtracts that code
and passes the rest on. Models that train through quantisation compose the estimators in
`estimators.py` with `assign.py` themselves; this is the plain, jittable reference used for SID
assignment, RQ-KMeans and evaluation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r3vae_jax.quantize import assign


@functools.partial(jax.jit, static_argnames=("metric", "chunk_size"))
def residual_quantize(x: jax.Array, codebooks: jax.Array, metric: str = "l2",
                      chunk_size: int | None = None
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Residual quantisation of `x` with L levels of K codes.

  Args:
    x: `[B, D]`.
    codebooks: `[L, K, D]`.
    metric: assignment rule at every level, "l2" | "cosine" | "dot".
    chunk_size: rows scored at once (static); None picks a size that keeps the `[rows, K]`
      score block near 64M floats (see `assign.nearest_code_chunked`).

  Returns:
    codes `int32[B, L]`, quantized `[B, D]` (sum of the chosen codes over levels) and
    per_level `[B, L, D]` (the code chosen at each level).
  """
  if codebooks.ndim != 3 or codebooks.shape[-1] != x.shape[-1]:
    raise ValueError(f"quantize/residual.py: codebooks must be [L, K, {x.shape[-1]}], "
                     f"got {codebooks.shape}")

  codebooks = codebooks.astype(x.dtype)

  def level(residual, codebook):
    codes, _ = assign.nearest_code_chunked(residual, codebook, metric, chunk_size)
    return residual - jnp.take(codebook, codes, axis=0), codes

  _, codes = jax.lax.scan(level, x, codebooks)
  codes = codes.T
  # One gather straight into [B, L, D] (no stacked [L, B, D] copy from the scan).
  per_level = codebooks[jnp.arange(codebooks.shape[0])[None, :], codes]
  return codes, jnp.sum(per_level, axis=1), per_level
