"""A popularity prior on the beam's items (our idea for issue 9), chosen on validation.

The beam search ranks items by the SID's log-probability under the recommender. Re-ranking the
beam by `score + alpha * log(1 + count)`, where count is how often the item occurs in the
*training* part of all sequences, adds what the leave-one-out targets share with the catalogue:
a user's next item is more often a popular one than the model's SID probabilities alone say.
`alpha` is picked on the validation split from `config.eval.popularity_alphas` (0 included, so
the prior can be declined) and then applied to the test split; no test information enters the
choice, and the counts exclude every validation and test target. The re-ranking only reorders
the beam, so Recall@beam is unchanged.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def log_popularity(train_sequences: Sequence[np.ndarray], num_items: int) -> np.ndarray:
  """float32[num_items]: log(1 + occurrences of each item in the training sequences)."""
  flat = np.concatenate([np.asarray(s, np.int64).reshape(-1) for s in train_sequences] or
                        [np.zeros(0, np.int64)])
  if flat.size and (flat.min() < 0 or flat.max() >= num_items):
    raise ValueError(f"log_popularity: item ids must lie in [0, {num_items}), got "
                     f"[{flat.min()}, {flat.max()}]")
  return np.log1p(np.bincount(flat, minlength=num_items)).astype(np.float32)


def rerank(item_ids: np.ndarray, scores: np.ndarray, log_pop: np.ndarray, alpha: float
           ) -> np.ndarray:
  """Orders each user's beam by `scores + alpha * log_pop[item]`, best first.

  Args:
    item_ids: int[U, B] beam items, -1 = empty slot (kept last).
    scores: float[U, B] the beam's log-probabilities.
    log_pop: float[N] `log_popularity`.
    alpha: weight of the prior (0: the beam's own order).

  Returns:
    int32[U, B]; ties keep the beam's order.
  """
  item_ids = np.asarray(item_ids)
  if item_ids.shape != np.shape(scores) or item_ids.ndim != 2:
    raise ValueError(f"rerank: item_ids and scores must be the same [U, B], got "
                     f"{item_ids.shape} and {np.shape(scores)}")
  valid = item_ids >= 0
  combined = np.asarray(scores, np.float64) + alpha * log_pop[np.where(valid, item_ids, 0)]
  order = np.argsort(-np.where(valid, combined, -np.inf), axis=1, kind="stable")
  return np.take_along_axis(item_ids, order, axis=1).astype(np.int32)


def select(valid_metrics: Mapping[str, Mapping[str, float]], metric: str) -> str:
  """The key of `valid_metrics` ({alpha as text: metrics}) with the highest `metric`; ties go
  to the smaller alpha."""
  if not valid_metrics:
    raise ValueError("popularity.select: no validation metrics to choose from")
  return max(sorted(valid_metrics, key=float), key=lambda a: valid_metrics[a][metric])
