"""Scoring beam-search rankings under the full-ranking protocol, optionally without seen items.

The reference protocol (RecBoard/freerec, `recommender/README.md`) removes every item of the
user's whole history from the ranking before Recall/NDCG@K when no user interacts with an item
twice (true of the Amazon 5-core files): the beam's remaining items move up. `drop_seen` does
that on the host; `score` ranks users in batches and scores them, with or without it.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from r3vae_jax import evaluate


def drop_seen(ranked: np.ndarray, seen: np.ndarray, scores: np.ndarray | None = None):
  """Removes each user's seen items from its ranking, keeping the order of the rest.

  Args:
    ranked: int[U, B] best-first item ids, -1 = empty slot.
    seen: int[U, S] item ids each user has seen, -1 = padding.
    scores: optional float[U, B] aligned with `ranked`, moved along with their items.

  Returns:
    int32[U, B]: the unseen items of each row moved to the front in their order, -1 after;
    with `scores`, (that, float32[U, B] their scores with -inf at the empty slots).
  """
  ranked, seen = np.asarray(ranked, np.int64), np.asarray(seen, np.int64)
  if ranked.ndim != 2 or seen.ndim != 2 or seen.shape[0] != ranked.shape[0]:
    raise ValueError(f"drop_seen: ranked [U, B] and seen [U, S] expected, got {ranked.shape} "
                     f"and {seen.shape}")
  if scores is not None and np.shape(scores) != ranked.shape:
    raise ValueError(f"drop_seen: scores {np.shape(scores)} must match ranked {ranked.shape}")
  width = max(int(ranked.max(initial=0)), int(seen.max(initial=0))) + 2
  users = np.arange(ranked.shape[0], dtype=np.int64)[:, None]
  seen_keys = (users * width + seen)[seen >= 0]
  drop = np.isin(users * width + ranked, seen_keys) | (ranked < 0)
  order = np.argsort(drop, axis=1, kind="stable")
  dropped = np.take_along_axis(drop, order, axis=1)
  kept = np.where(dropped, -1, np.take_along_axis(ranked, order, axis=1)).astype(np.int32)
  if scores is None:
    return kept
  moved = np.take_along_axis(np.asarray(scores, np.float32), order, axis=1)
  return kept, np.where(dropped, -np.inf, moved).astype(np.float32)


def metrics_of(ranked: np.ndarray, targets: np.ndarray, seen: np.ndarray | None,
               ks: Sequence[int]) -> dict[str, float | int]:
  """Recall/NDCG@K of rankings `int[U, B]` after dropping `seen` items (unless None)."""
  if seen is not None:
    ranked = drop_seen(ranked, seen)
  metrics = evaluate.ranking_metrics(ranked, targets, ks)
  metrics["users"] = int(ranked.shape[0])
  return metrics


def score(rank_fn: Callable[[Any], jax.Array], inputs: Any, targets: np.ndarray,
          seen: np.ndarray | None, batch_size: int, mesh: jax.sharding.Mesh,
          ks: Sequence[int]) -> dict[str, float | int]:
  """Ranks every user (`evaluate.rank_in_batches`), drops `seen` items unless None, scores.

  Args:
    rank_fn, inputs, batch_size, mesh: as `evaluate.rank_in_batches`.
    targets: int[U] one target per user.
    seen: int[U, S] each user's whole history (-1 padded), or None to score the raw beam.
    ks: Recall/NDCG cut-offs.

  Returns:
    {"recall@K", "ndcg@K" for K in ks, "users"}.
  """
  return metrics_of(evaluate.rank_in_batches(rank_fn, inputs, batch_size, mesh), targets, seen,
                    ks)
