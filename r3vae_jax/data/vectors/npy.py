"""Item vectors made elsewhere (sentence-T5, LLaMA, …) as a `.npy` float array [N, D]."""
from __future__ import annotations

import numpy as np

from r3vae_jax import io


def check_vectors(vectors: np.ndarray, num_items: int, source: str) -> np.ndarray:
  """Returns `vectors` as float32 after checking shape [num_items, D >= 1] and finiteness (of
  the float32 values: a float64 1e300 becomes inf).

  Raises:
    ArtifactError: naming `source` and what is wrong (dims, dtype, row count, first non-finite row).
  """
  if vectors.ndim != 2 or vectors.shape[1] < 1:
    raise io.ArtifactError(
        f"{source}: expected a 2-D array [items, dim >= 1], got shape {vectors.shape}")
  if not np.issubdtype(vectors.dtype, np.floating):
    raise io.ArtifactError(f"{source}: expected floating vectors, got dtype {vectors.dtype}")
  if vectors.shape[0] != num_items:
    raise io.ArtifactError(f"{source}: {vectors.shape[0]} rows, but the item table has "
                           f"{num_items} items")
  with np.errstate(over="ignore"):
    cast = vectors.astype(np.float32)
  finite = np.isfinite(cast).all(axis=1)
  if not finite.all():
    row = int(np.flatnonzero(~finite)[0])
    raise io.ArtifactError(f"{source}: row {row} (item {row}) holds NaN or Inf"
                           f"{' as float32' if np.isfinite(vectors[row]).all() else ''}"
                           f" ({int((~finite).sum())} bad rows)")
  return cast


def load_vectors(path: str, num_items: int) -> np.ndarray:
  """Reads and checks a `.npy` of item vectors: float32[num_items, D]."""
  if not path:
    raise io.ArtifactError("vectors.source=npy needs vectors.path (a .npy file)")
  return check_vectors(io.read_npy(path), num_items, path)
