"""Late fusion of finished runs: the mixture of their beam-search item distributions.

Every evaluation writes `workdir/recommender/{split}_ranking.npz` (`save_ranking`): the B items
shown to each user after the seen ones are dropped, best first, with their beam log-probability
log p_m(item | history) under that run's SID table. Runs on the same split (any tokenizer,
seed or SID table: items, not SIDs, are combined) fuse into the mixture

    p(item) = sum_m w_m p_m(item),   p_m = 0 outside run m's beam,

ranked by p and cut to B items (`mixture`). Fusion needs no shared SID space, so it combines
runs whose tables were trained with different seeds or tokenizers; it costs the runs' training
and decoding, nothing more. Measured at paper size, two seeds of a row fused raise test N@10 over
the pair's mean by 8.1-11.5% on Beauty, Sports and Toys (R3-VAE) and 12.4-16.6% on LastFM
(RQ-VAE) (docs/experiments.md); it is never part of a single-model row. `python -m r3vae_jax.fuse` is its command line.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from r3vae_jax import io

RANKING_KEYS = ("items", "log_probs", "targets")


@dataclasses.dataclass(frozen=True)
class Ranking:
  """One run's ranking of one split.

  items: int32[U, B] best-first item ids, -1 = empty slot.
  log_probs: float32[U, B] their beam log-probabilities, -inf at empty slots.
  targets: int32[U] each user's held-out item.
  """
  items: np.ndarray
  log_probs: np.ndarray
  targets: np.ndarray


def save_ranking(path: str, items: np.ndarray, log_probs: np.ndarray, targets: np.ndarray
                 ) -> None:
  """Writes a `Ranking` to `path` (.npz; temp file, then rename)."""
  ranking = _checked(Ranking(np.asarray(items, np.int32), np.asarray(log_probs, np.float32),
                             np.asarray(targets, np.int32)), path)
  with io.atomic_open(path, "wb") as f:
    np.savez_compressed(f, **dataclasses.asdict(ranking))


def load_ranking(path: str) -> Ranking:
  """Reads a file of `save_ranking`.

  Raises:
    ArtifactError: the file is missing, not an .npz, lacks a key, or has inconsistent shapes.
  """
  if not os.path.isfile(path):
    raise io.ArtifactError(f"{path}: no ranking file (an evaluated run writes "
                           "recommender/{split}_ranking.npz)")
  try:
    with np.load(path) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e:
    raise io.ArtifactError(f"{path}: not a ranking .npz ({e})") from e
  missing = [k for k in RANKING_KEYS if k not in arrays]
  if missing:
    raise io.ArtifactError(f"{path}: ranking file lacks {missing}; expected keys "
                           f"{list(RANKING_KEYS)}")
  ranking = Ranking(*(arrays[k] for k in RANKING_KEYS))
  return _checked(ranking, path)


def _checked(ranking: Ranking, where: str) -> Ranking:
  items, log_probs, targets = ranking.items, ranking.log_probs, ranking.targets
  if items.ndim != 2 or log_probs.shape != items.shape or targets.shape != items.shape[:1]:
    raise io.ArtifactError(f"{where}: expected items [U, B], log_probs [U, B] and targets [U]; "
                           f"got {items.shape}, {log_probs.shape} and {targets.shape}")
  if not np.issubdtype(items.dtype, np.integer) or not np.issubdtype(targets.dtype, np.integer):
    raise io.ArtifactError(f"{where}: items and targets must be integer ids, got "
                           f"{items.dtype} and {targets.dtype}")
  if np.any(np.isnan(log_probs)) or np.any((log_probs > 1e-4) & (items >= 0)):
    raise io.ArtifactError(f"{where}: log_probs must be log-probabilities (<= 0, no NaN)")
  return ranking


def mixture(rankings: Sequence[Ranking], weights: Sequence[float] | None = None,
            depth: int | None = None) -> Ranking:
  """The rankings' mixture distribution over items, best first (`mix` of their arrays).

  Args:
    rankings: M >= 1 rankings of the same users (equal `targets`); widths may differ.
    weights: M non-negative mixture weights (normalised here); default uniform.
    depth: items kept per user; default the widest input's B.
  """
  if not rankings:
    raise ValueError("mixture: needs at least one ranking")
  targets = rankings[0].targets
  for m, r in enumerate(rankings):
    if r.targets.shape != targets.shape or not np.array_equal(r.targets, targets):
      raise ValueError(f"mixture: ranking {m} is of other users/targets than ranking 0 "
                       f"(fuse runs of the same dataset and split)")
  items, log_probs = mix([r.items for r in rankings], [r.log_probs for r in rankings],
                         weights, depth)
  return Ranking(items, log_probs, targets)


def normalized_weights(weights: Sequence[float] | None, runs: int) -> np.ndarray:
  """float64[runs] mixture weights summing to 1 (uniform for None).

  Raises:
    ValueError: not `runs` non-negative numbers with a positive sum.
  """
  weights = np.ones(runs) if weights is None else np.asarray(weights, np.float64)
  if weights.shape != (runs,) or np.any(weights < 0) or weights.sum() <= 0:
    raise ValueError(f"fusion: {runs} non-negative weights with a positive sum expected, got "
                     f"{weights.tolist()}")
  return weights / weights.sum()


def mix(items: Sequence[np.ndarray], log_probs: Sequence[np.ndarray],
        weights: Sequence[float] | None = None, depth: int | None = None
        ) -> tuple[np.ndarray, np.ndarray]:
  """Mixes M rankings of the same U users into one.

  Args:
    items: M arrays int[U, B_m] of best-first item ids, -1 = empty slot.
    log_probs: M arrays float[U, B_m], each item's log-probability under its run.
    weights: M non-negative mixture weights (normalised here); default uniform.
    depth: items kept per user; default the widest B_m.

  Returns:
    (int32[U, depth] items ordered by sum_m w_m exp(log_probs_m) (ties: the smaller item id
    first), float32[U, depth] log of that sum), -1 / -inf past a user's distinct items.
  """
  if not items or len(items) != len(log_probs):
    raise ValueError(f"mix: needs M >= 1 item arrays and as many log_probs, got {len(items)} "
                     f"and {len(log_probs)}")
  for m, (ids, lp) in enumerate(zip(items, log_probs)):
    if np.ndim(ids) != 2 or np.shape(lp) != np.shape(ids) or len(ids) != len(items[0]):
      raise ValueError(f"mix: run {m} has items {np.shape(ids)} and log_probs {np.shape(lp)}; "
                       f"expected equal shapes [U={len(items[0])}, B]")
  weights = normalized_weights(weights, len(items))
  depth = max(np.shape(ids)[1] for ids in items) if depth is None else depth
  mass = np.concatenate([w * np.exp(np.asarray(lp, np.float64))
                         for w, lp in zip(weights, log_probs)], axis=1)
  items = np.concatenate(items, axis=1).astype(np.int64)    # [U, N]
  mass = np.where(items >= 0, mass, 0.0)
  # Sum the mass of each (user, item): sort every row by item, add up runs of equal ids.
  order = np.argsort(items, axis=1, kind="stable")
  items, mass = np.take_along_axis(items, order, 1), np.take_along_axis(mass, order, 1)
  starts = np.ones(items.shape, bool)
  starts[:, 1:] = items[:, 1:] != items[:, :-1]
  ends = np.ones(items.shape, bool)
  ends[:, :-1] = starts[:, 1:]
  group_mass = np.add.reduceat(mass.ravel(), np.flatnonzero(starts))  # one sum per run
  item_mass = np.full(items.size, -1.0)
  item_mass[np.flatnonzero(ends)] = group_mass  # at each run's last position
  keep = ends & (items >= 0)
  item_mass = np.where(keep, item_mass.reshape(items.shape), -1.0)
  best = np.argsort(-item_mass, axis=1, kind="stable")[:, :depth]
  fused_items = np.take_along_axis(np.where(keep, items, -1), best, 1)
  fused_mass = np.take_along_axis(item_mass, best, 1)
  if fused_items.shape[1] < depth:  # fewer candidates than depth: pad with empty slots
    pad = ((0, 0), (0, depth - fused_items.shape[1]))
    fused_items = np.pad(fused_items, pad, constant_values=-1)
    fused_mass = np.pad(fused_mass, pad, constant_values=-1.0)
  with np.errstate(divide="ignore"):  # an item's mass may underflow to 0: log -inf
    log_probs = np.where(fused_items >= 0, np.log(np.maximum(fused_mass, 0.0)), -np.inf)
  return fused_items.astype(np.int32), log_probs.astype(np.float32)
