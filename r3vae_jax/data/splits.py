"""Leave-one-out splits (spec.md): last item test, second last validation, the rest training."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class Splits:
  """Per-user histories and targets; histories are full (truncate with `pad_histories`)."""
  train: list[np.ndarray]           # seq[:-2]; every prefix predicts its next item
  valid_history: list[np.ndarray]   # seq[:-2]
  valid_target: np.ndarray          # int32[U], seq[-2]
  test_history: list[np.ndarray]    # seq[:-1]
  test_target: np.ndarray           # int32[U], seq[-1]


def leave_one_out(sequences: Sequence[np.ndarray]) -> Splits:
  """Splits each user's chronological sequence; every user needs at least 3 items.

  Raises:
    ValueError: naming the first user whose sequence is shorter than 3.
  """
  lengths = np.fromiter(map(len, sequences), np.int64, len(sequences))
  if lengths.size and lengths.min() < 3:
    u = int(np.argmax(lengths < 3))
    raise ValueError(f"leave_one_out: user {u} has {lengths[u]} items; at least 3 are needed "
                     "(one training item, one validation target, one test target)")
  seqs = [np.asarray(s, np.int32) for s in sequences]
  ends = np.cumsum(lengths)
  flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int32)
  train = [s[:-2] for s in seqs]
  return Splits(
      train=train,
      valid_history=list(train),
      valid_target=flat[ends - 2],
      test_history=[s[:-1] for s in seqs],
      test_target=flat[ends - 1],
  )


def pad_histories(histories: Sequence[np.ndarray], max_history: int) -> np.ndarray:
  """Keeps each history's last `max_history` items, left-padded with -1.

  Returns:
    int32[U, max_history]; row u ends with histories[u][-max_history:].
  """
  if max_history <= 0:
    raise ValueError(f"pad_histories: max_history must be positive, got {max_history}")
  out = np.full((len(histories), max_history), -1, np.int32)
  for u, h in enumerate(histories):
    tail = np.asarray(h, np.int32)[-max_history:]
    if tail.size:
      out[u, max_history - tail.size:] = tail
  return out


def training_examples(train: Sequence[np.ndarray],
                      max_history: int) -> tuple[np.ndarray, np.ndarray]:
  """Every prefix of every training sequence predicts its next item.

  Returns:
    (histories int32[E, max_history] left-padded with -1, targets int32[E]), in user order then
    position order; E = sum over users of (len(train[u]) - 1).
  """
  if max_history <= 0:
    raise ValueError(f"training_examples: max_history must be positive, got {max_history}")
  lengths = np.array([len(s) for s in train], np.int64)
  per_user = np.maximum(lengths - 1, 0)
  if per_user.sum() == 0:
    return np.zeros((0, max_history), np.int32), np.zeros(0, np.int32)
  flat = np.concatenate([np.asarray(s, np.int32) for s in train])
  owner_start = np.repeat(np.cumsum(lengths) - lengths, per_user)          # [E]
  pos = np.arange(per_user.sum()) - np.repeat(np.cumsum(per_user) - per_user, per_user) + 1
  target_at = owner_start + pos                                            # [E] into flat
  hist = np.full((pos.size, max_history), -1, np.int32)
  for j in range(max_history):  # column j holds in-user index pos - max_history + j
    back = max_history - j
    rows = np.flatnonzero(pos >= back)  # only prefixes this long (few, for the left columns)
    hist[rows, j] = flat[target_at[rows] - back]
  return hist, flat[target_at]


def item_prefix(sequences: Sequence[np.ndarray], num_items: int, min_length: int = 3
                ) -> list[np.ndarray]:
  """A catalogue slice: every sequence keeps its items with id < `num_items` (in order); users
  left with fewer than `min_length` items are dropped (small real-data tests and sweeps)."""
  kept = [np.asarray(s, np.int32)[np.asarray(s) < num_items] for s in sequences]
  return [s for s in kept if s.size >= min_length]
