"""Full-ranking Recall/NDCG@K of score matrices under both protocols.

A baseline scores every item for every user (`float[U, N]`). Two rankings are cut from the same
scores: the full ranking untouched, and the ranking with the user's own history removed (the
project's `eval.exclude_seen` protocol: `recommender/ranking.drop_seen` applied to a list long
enough to hold every item). Both are scored by `evaluate.ranking_metrics`, so the numbers are
those of the generative rows' evaluation.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from r3vae_jax import evaluate
from r3vae_jax.data import splits as splits_lib

PROTOCOLS = ("exclude_seen", "full_ranking")


def top_items(scores: np.ndarray, k: int) -> np.ndarray:
  """The `k` best items of each row, best first.

  Args:
    scores: float[b, N] (-inf never ranks above a finite score).
    k: 1 <= k <= N.

  Returns:
    int32[b, k]; equal scores are ordered by item id. Which of several items tied at the k-th
    place enter the list is decided by item id as well only when the scores are distinct
    (`popularity`/`markov` make them so); otherwise by `np.argpartition`.
  """
  scores = np.asarray(scores)
  if scores.ndim != 2 or not 1 <= k <= scores.shape[1]:
    raise ValueError(f"top_items: scores [b, N] with 1 <= k <= N expected, got {scores.shape}, "
                     f"k={k}")
  part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  part_scores = np.take_along_axis(scores, part, axis=1)
  order = np.lexsort((part, -part_scores), axis=1)
  return np.take_along_axis(part, order, axis=1).astype(np.int32)


def mask_seen(scores: np.ndarray, seen: np.ndarray) -> np.ndarray:
  """A copy of `scores` float[b, N] with -inf at each row's `seen` items (int[b, S], -1 = pad)."""
  out = np.array(scores, np.float64)
  rows, cols = np.nonzero(seen >= 0)
  out[rows, seen[rows, cols]] = -np.inf
  return out


def evaluate_scores(score_fn: Callable[[np.ndarray], np.ndarray],
                    histories: Sequence[np.ndarray], targets: np.ndarray,
                    ks: Sequence[int] = (5, 10), batch_size: int = 1024
                    ) -> dict[str, dict[str, float | int]]:
  """Scores every user under both protocols.

  Args:
    score_fn: int[b] user indices -> float[b, N] item scores (higher is better).
    histories: per user, the items before the target (the `seen` items).
    targets: int[U] one target per user.
    ks: cut-offs.
    batch_size: users scored at once.

  Returns:
    {"exclude_seen": metrics, "full_ranking": metrics}, each {"recall@K", "ndcg@K", "users"}.
  """
  targets = np.asarray(targets)
  num_users = len(histories)
  if num_users == 0 or targets.shape != (num_users,):
    raise ValueError(f"evaluate_scores: {num_users} histories and targets of shape "
                     f"{targets.shape}; one target per user expected")
  depth = max(ks)
  ranked = {p: [] for p in PROTOCOLS}
  for start in range(0, num_users, batch_size):
    users = np.arange(start, min(start + batch_size, num_users))
    scores = np.asarray(score_fn(users), np.float64)
    seen = splits_lib.pad_histories([histories[u] for u in users],
                                    max(1, max(len(histories[u]) for u in users)))
    ranked["full_ranking"].append(top_items(scores, depth))
    ranked["exclude_seen"].append(top_items(mask_seen(scores, seen), depth))
  out = {}
  for protocol, parts in ranked.items():
    metrics = evaluate.ranking_metrics(np.concatenate(parts), targets, ks)
    metrics["users"] = num_users
    out[protocol] = metrics
  return out


def as_results(valid: dict, test: dict, exclude_seen: bool) -> dict[str, dict]:
  """`metrics` of a results JSON: "valid"/"test" under the configured protocol
  (`eval.exclude_seen`), "valid_full_ranking"/"test_full_ranking" with the ranking untouched."""
  main = "exclude_seen" if exclude_seen else "full_ranking"
  return {"valid": valid[main], "test": test[main],
          "valid_full_ranking": valid["full_ranking"], "test_full_ranking": test["full_ranking"]}
