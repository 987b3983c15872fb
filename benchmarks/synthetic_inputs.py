"""Random inputs of realistic shape for speed benchmarks (speed does not depend on the values)."""
from __future__ import annotations

import numpy as np

from r3vae_jax import quantize
from r3vae_jax.recommender import data as rec_data

# Beauty training examples (leave-one-out, example_window 20, history cap 20) by history length
# 1..19 items, measured with r3vae_jax.data from shared/data/amazon_beauty (116,259 examples,
# 5.0 items on average).
BEAUTY_LENGTHS = (22363, 22363, 15201, 10980, 8300, 6489, 5123, 4242, 3547, 2989, 2550, 2189,
                  1927, 1720, 1507, 1366, 1248, 1136, 1019)


def random_sid_table(rng: np.random.Generator, items: int, levels: int, codebook: int,
                     max_collisions: int, first_level_zipf: float | None = None) -> np.ndarray:
  """Random codes for `levels` levels plus the collision token (`quantize.append_collision_token`:
  rank among the items sharing the same codes, in item order).

  Args:
    first_level_zipf: None = every level uniform over the codebook; a > 1 = the first level
      Zipf(a)-distributed (a few codes hold most items, as in learned tables), capped at the
      codebook's last code.

  Returns:
    int32[items, levels + 1], unique rows.

  Raises:
    ValueError: when more than `max_collisions` items share a code tuple.
  """
  if first_level_zipf is None:
    codes = rng.integers(0, codebook, size=(items, levels))
  else:
    first = np.minimum(rng.zipf(first_level_zipf, size=items) - 1, codebook - 1)
    codes = np.concatenate([first[:, None], rng.integers(0, codebook, size=(items, levels - 1))],
                           axis=1)
  return quantize.append_collision_token(codes, max_collisions)


def random_histories(rng: np.random.Generator, count: int, max_history: int, num_items: int
                     ) -> np.ndarray:
  """Histories of uniform length 1..max_history, uniform items, left-padded with -1.

  Returns:
    int32[count, max_history].
  """
  lengths = rng.integers(1, max_history + 1, size=count)
  items = rng.integers(0, num_items, size=(count, max_history))
  pad = np.arange(max_history)[None, :] < (max_history - lengths)[:, None]
  return np.where(pad, -1, items).astype(np.int32)


def unit_vectors(items: int, dim: int, clusters: int = 64, seed: int = 0) -> np.ndarray:
  """Item vectors around `clusters` random directions (noise 0.5 per unit direction),
  L2-normalised, as text-encoder vectors are.

  Returns:
    float32[items, dim].
  """
  rng = np.random.default_rng(seed)
  centers = rng.standard_normal((clusters, dim))
  centers /= np.linalg.norm(centers, axis=1, keepdims=True)
  x = centers[rng.integers(0, clusters, items)] + 0.5 * rng.standard_normal((items, dim)) / dim**.5
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def beauty_like_examples(items: int, max_history: int, seed: int) -> rec_data.Examples:
  """As many training examples as Beauty, with its history lengths (`BEAUTY_LENGTHS`), random
  items, left-padded to `max_history`."""
  lengths = np.repeat(np.arange(1, len(BEAUTY_LENGTHS) + 1), BEAUTY_LENGTHS)
  rng = np.random.default_rng(seed)
  history = rng.integers(0, items, (lengths.size, max_history)).astype(np.int32)
  history[np.arange(max_history)[None, :] < (max_history - lengths)[:, None]] = -1
  return rec_data.Examples(history, rng.integers(0, items, lengths.size).astype(np.int32))
