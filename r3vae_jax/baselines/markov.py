"""First-order Markov chain: rank the items that most often followed the user's last item.

Transition counts `T[i, j]` = how often item j directly follows item i in the training parts
(`Splits.train`); a user's scores are the row of its last history item. Items with equal
counts, and every item that never followed it, are ordered by training popularity, then by id.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import sparse

from r3vae_jax.baselines import popularity


def transition_counts(train: Sequence[np.ndarray], num_items: int) -> sparse.csr_matrix:
  """int64 csr [N, N]: T[i, j] = times j directly follows i in a training sequence."""
  pairs = [np.stack([s[:-1], s[1:]], 1) for s in (np.asarray(t, np.int64) for t in train)
           if s.size > 1]
  pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
  if pairs.size and (pairs.min() < 0 or pairs.max() >= num_items):
    raise ValueError(f"markov: item ids must lie in [0, {num_items}), got "
                     f"[{pairs.min()}, {pairs.max()}]")
  ones = np.ones(len(pairs), np.int64)
  return sparse.csr_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(num_items, num_items))


def scorer(train: Sequence[np.ndarray], histories: Sequence[np.ndarray], num_items: int):
  """int[b] users -> float64[b, N]: transition count from the user's last history item, ties
  by popularity then id, all values of a row distinct and exact.

  Score = `T[last, j] * (P + 1) + distinct_popularity[j]`, P the largest popularity score, so
  one more transition always outranks any popularity.
  """
  trans = transition_counts(train, num_items)
  pop = popularity.distinct_scores(popularity.item_counts(train, num_items))
  top = float(pop.max()) + 1.0
  if trans.size and float(trans.max()) * top * 2 >= 2.0 ** 53:
    raise ValueError("markov: transition counts times popularity exceed float64's exact integers")
  last = np.array([h[-1] if len(h) else -1 for h in histories], np.int64)
  if np.any(last < 0):
    raise ValueError(f"markov: user {int(np.argmax(last < 0))} has an empty history")

  def score(users: np.ndarray) -> np.ndarray:
    rows = trans[last[users]].toarray().astype(np.float64)
    return rows * top + pop[None, :]
  return score
