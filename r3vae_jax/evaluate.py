"""Recall@K and NDCG@K under full ranking, and batched evaluation over a device mesh.

Leave-one-out protocol: each user has exactly one target item, so Recall@K is the hit rate
(target among the top K) and NDCG@K is `1 / log2(rank + 2)` for a hit at 0-based rank < K, else
0, both averaged over all users. A ranking comes from constrained beam search over the whole
catalogue (full ranking); -1 marks an empty slot and never matches.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np

from r3vae_jax import parallel


def hit_ranks(ranked_items: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """0-based position of each user's target in its ranking (first occurrence), -1 if absent.

  Args:
    ranked_items: int[U, B] best-first item ids, -1 = empty slot.
    targets: int[U] target item ids (>= 0).

  Returns:
    int64[U].
  """
  ranked = np.asarray(ranked_items)
  targets = np.asarray(targets)
  if ranked.ndim != 2 or targets.shape != (ranked.shape[0],):
    raise ValueError(f"ranking: ranked_items [U, B] and targets [U] expected, got "
                     f"{ranked.shape} and {targets.shape}")
  if np.any(targets < 0):
    raise ValueError(f"ranking: targets must be item ids >= 0, got {targets.min()}")
  hit = ranked == targets[:, None]
  return np.where(hit.any(1), hit.argmax(1), -1)


def ranking_metrics(ranked_items: np.ndarray, targets: np.ndarray,
                    ks: Sequence[int] = (5, 10)) -> dict[str, float]:
  """Recall@K and NDCG@K averaged over users.

  Args:
    ranked_items: int[U, B] best-first item ids (-1 = empty slot); every K must be <= B.
    targets: int[U] one target item per user.
    ks: cut-offs.

  Returns:
    {"recall@K": float, "ndcg@K": float for each K}.
  """
  ranks = hit_ranks(ranked_items, targets)
  width = np.asarray(ranked_items).shape[1]
  if ranks.size == 0:
    raise ValueError("ranking_metrics: no users to evaluate")
  out = {}
  for k in ks:
    if not 1 <= k <= width:
      raise ValueError(f"ranking_metrics: K={k} needs 1 <= K <= ranking width {width} "
                       f"(raise eval.beam_size)")
    hit = (ranks >= 0) & (ranks < k)
    out[f"recall@{k}"] = float(hit.mean())
    gain = 1.0 / np.log2(np.maximum(ranks, 0) + 2.0)
    out[f"ndcg@{k}"] = float(np.where(hit, gain, 0.0).mean())
  return out


def rank_in_batches(rank_fn: Callable[[Any], jax.Array], inputs: Any, batch_size: int,
                    mesh: jax.sharding.Mesh) -> np.ndarray:
  """Runs `rank_fn` over all users in fixed-size batches sharded over the `data` axis.

  Every batch has the same shape (one compilation): the last one is padded by repeating its
  final user, and the padded rows are dropped from the result. On several hosts each host holds
  all of `inputs`, feeds its slice of every batch, and receives the whole result.

  Args:
    rank_fn: (a jitted function) batch pytree with leaves [batch_size, ...] sharded over
      `data` -> int[batch_size, B] ranked item ids, or a pytree of such `[batch_size, ...]`
      arrays (e.g. ids and scores).
    inputs: pytree of numpy arrays [U, ...] (every leaf has the same U).
    batch_size: users per batch; a multiple of the `data` axis size and of the host count.
    mesh: the device mesh.

  Returns:
    `rank_fn`'s output for all users, in input order (int32[U, B] rankings).
  """
  parallel.check_batch_size(batch_size, mesh)
  leaves = jax.tree.leaves(inputs)
  num_users = leaves[0].shape[0] if leaves else 0
  if num_users == 0 or any(x.shape[0] != num_users for x in leaves):
    raise ValueError(f"rank_in_batches: inputs need leaves with one common, non-zero leading "
                     f"dimension; got {[x.shape for x in leaves]}")
  host_rows = parallel.host_batch_slice(batch_size, mesh)
  results = []
  for start in range(0, num_users, batch_size):
    stop = min(start + batch_size, num_users)
    take = np.minimum(np.arange(start, start + batch_size), stop - 1)
    batch = jax.tree.map(lambda x, take=take: np.asarray(x)[take][host_rows], inputs)
    out = rank_fn(parallel.to_global(batch, mesh))
    if jax.process_count() > 1:
      out = multihost_utils.process_allgather(out, tiled=True)
    results.append(jax.tree.map(lambda x, n=stop - start: np.asarray(x)[:n], out))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *results)


def evaluate_ranked(rank_fn: Callable[[Any], jax.Array], inputs: Any, targets: np.ndarray,
                    batch_size: int, mesh: jax.sharding.Mesh,
                    ks: Sequence[int] = (5, 10)) -> dict[str, float | int]:
  """`rank_in_batches` then `ranking_metrics`; adds "users" (the count evaluated)."""
  ranked = rank_in_batches(rank_fn, inputs, batch_size, mesh)
  metrics = ranking_metrics(ranked, targets, ks)
  metrics["users"] = int(ranked.shape[0])
  return metrics
