"""The end of a `--mode=all` run: its metrics beside the popularity baseline's, and its files.

  popularity_metrics(splits, split, ks, max_history, exclude_seen) -> {"recall@K", "ndcg@K"}
  print_summary(results, workdir, popularity)
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from r3vae_jax import evaluate
from r3vae_jax.data.splits import Splits


def popularity_ranking(train: Sequence[np.ndarray], histories: Sequence[np.ndarray], width: int,
                       exclude_seen: bool) -> np.ndarray:
  """Every user's ranking by training-interaction count (ties: lower item id first).

  Args:
    train: the training sequences (item ids).
    histories: per user, the items to drop from its ranking when `exclude_seen`.
    width: ranking length.

  Returns:
    int[U, width] best-first item ids.
  """
  counts = np.bincount(np.concatenate([np.asarray(s) for s in train]).astype(np.int64))
  order = np.argsort(-counts, kind="stable")
  head = order[:width + (max(len(h) for h in histories) if exclude_seen else 0)]
  rows = []
  for history in histories:
    ranked = head[~np.isin(head, history)] if exclude_seen else head
    rows.append(ranked[:width])
  return np.stack(rows)


def popularity_metrics(splits: Splits, split: str, ks: Sequence[int], exclude_seen: bool
                       ) -> dict[str, float]:
  """Recall/NDCG@K of ranking the most popular training items first, on `split`."""
  histories = getattr(splits, f"{split}_history")
  targets = getattr(splits, f"{split}_target")
  ranked = popularity_ranking(splits.train, histories, max(ks), exclude_seen)
  return evaluate.ranking_metrics(ranked, targets, ks)


def _files(workdir: str) -> list[str]:
  """The run's main files and folders that exist, relative to `workdir`."""
  wanted = ("results.json", "eval.json", "config.json", "data", "vectors.npy",
            "tokenizer/sid_table.npy", "tokenizer/sid_metrics.json", "recommender/checkpoints",
            "recommender/metrics.jsonl", "diger", "tensorboard")
  return [w for w in wanted if os.path.exists(os.path.join(workdir, w))]


def _metric_row(metrics: dict, ks: Sequence[int]) -> str:
  return "  ".join(f"{name}@{k} {metrics[f'{name}@{k}']:.4f}" for k in ks
                   for name in ("recall", "ndcg") if f"{name}@{k}" in metrics)


def print_summary(results: dict, workdir: str, popularity: dict[str, dict[str, float]],
                  ks: Sequence[int]) -> None:
  """Prints the metrics of each split beside popularity's, the SID table's statistics and the
  files written."""
  wall = sum(results["wall_time_s"].values())
  print(f"summary: {results['dataset']} / {results['tokenizer']}, "
        f"{results['data_stats']['users']:,} users, {results['data_stats']['items']:,} items, "
        f"{wall:.1f}s")
  for split in ("valid", "test"):
    m = results["metrics"].get(split)
    if isinstance(m, dict):
      print(f"  {split:5s} {results['tokenizer']:10s} {_metric_row(m, ks)}")
      print(f"  {split:5s} {'popularity':10s} {_metric_row(popularity[split], ks)}")
  sid = results.get("sid_metrics") or {}
  if "collision_rate" in sid:
    print(f"  SIDs  collision rate {sid['collision_rate']:.4f}, largest group "
          f"{int(sid.get('max_group_size', 0))}, code usage per level "
          f"{[round(u, 3) for u in sid.get('usage_per_level', [])]}")
  print(f"files in {workdir}: {', '.join(_files(workdir))}")
  print(f"curves: tensorboard --logdir {workdir}")
