"""RPG's training windows and evaluation histories (right-padded item-id arrays).

Training: each user's training sequence is cut into windows of at most `max_len + 1` items. The
first window starts at the first item and labels every position (position t predicts item
t + 1); a sequence longer than `max_len + 1` adds one window per later item, ending at that item
and labelling only its last position. Every next item of the sequence is a target exactly once.

Windows are grouped into length buckets so a batch is padded only to its bucket's length.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Windows:
  """inputs/labels int32[E, T] item ids, right-padded with -1 (label -1 = no target)."""
  inputs: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return int(self.inputs.shape[0])


def train_windows(train: Sequence[np.ndarray], max_len: int) -> Windows:
  """Windows of the training sequences (module docstring); sequences of < 2 items give none."""
  if max_len < 1:
    raise ValueError(f"rpg.data: max_len must be >= 1, got {max_len}")
  inputs, labels = [], []
  for seq in train:
    seq = np.asarray(seq, np.int32)
    if seq.size < 2:
      continue
    first = seq[:max_len + 1]
    inputs.append(first[:-1])
    labels.append(first[1:])
    for end in range(max_len + 2, seq.size + 1):
      window = seq[end - max_len - 1:end]
      inputs.append(window[:-1])
      lab = np.full(max_len, -1, np.int32)
      lab[-1] = window[-1]
      labels.append(lab)
  return Windows(_pad(inputs, max_len), _pad(labels, max_len))


def eval_histories(histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
  """The last `max_len` items of each history, right-padded: int32[U, max_len]."""
  return _pad([np.asarray(h, np.int32)[-max_len:] for h in histories], max_len)


def _pad(rows: Sequence[np.ndarray], width: int) -> np.ndarray:
  out = np.full((len(rows), width), -1, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def bucket_of(inputs: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  """Index of the smallest bucket length holding each row's items (len(buckets) = full width)."""
  lengths = (inputs >= 0).sum(1)
  return np.searchsorted(np.asarray(sorted(buckets)), lengths, side="left")


def epoch_batches(windows: Windows, buckets: Sequence[int], batch_size: int,
                  rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
  """One epoch's batches as (row indices, padded length): rows shuffled within their bucket,
  cut into batches (the last one of a bucket may be short), batch order shuffled."""
  width = windows.inputs.shape[1]
  lengths = sorted(b for b in buckets if b < width) + [width]
  which = bucket_of(windows.inputs, lengths[:-1])
  out = []
  for b, length in enumerate(lengths):
    rows = rng.permutation(np.flatnonzero(which == b))
    out += [(rows[i:i + batch_size], length) for i in range(0, rows.size, batch_size)]
  order = rng.permutation(len(out))
  return [out[i] for i in order]
