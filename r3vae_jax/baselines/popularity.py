"""Popularity: every user gets the items ranked by how often they occur in the training parts.

Counts come from `Splits.train` (each sequence without its validation and test items), the same
for the validation and the test split, so no held-out target is counted.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def item_counts(train: Sequence[np.ndarray], num_items: int) -> np.ndarray:
  """int64[num_items]: occurrences of each item in the training sequences."""
  flat = np.concatenate([np.asarray(s, np.int64).reshape(-1) for s in train] or
                        [np.zeros(0, np.int64)])
  if flat.size and (flat.min() < 0 or flat.max() >= num_items):
    raise ValueError(f"popularity: item ids must lie in [0, {num_items}), got "
                     f"[{flat.min()}, {flat.max()}]")
  return np.bincount(flat, minlength=num_items)


def distinct_scores(counts: np.ndarray) -> np.ndarray:
  """float64[N]: `counts` with ties broken by item id (the lower id first), all values distinct.

  `count * N + (N - 1 - id)` is an exact integer in float64 while `count * N < 2**53`.
  """
  counts = np.asarray(counts, np.int64)
  n = counts.shape[-1]
  if counts.size and int(counts.max()) * n >= 2 ** 53:
    raise ValueError(f"popularity: counts up to {counts.max()} over {n} items exceed float64's "
                     "exact integers")
  return (counts * n + (n - 1 - np.arange(n))).astype(np.float64)


def scorer(train: Sequence[np.ndarray], num_items: int):
  """int[b] users -> float64[b, N]: the same popularity scores for every user."""
  scores = distinct_scores(item_counts(train, num_items))
  return lambda users: np.broadcast_to(scores, (len(users), num_items))
