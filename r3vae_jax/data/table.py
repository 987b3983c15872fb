"""Raw interaction logs -> chronological per-user sequences, k-core, dense ids, item text.

Readers produce a `RawLog` (sequences over dense ids plus the source key of every id); the
pipeline applies `k_core` and attaches item text with `to_interactions`.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from absl import logging
import numpy as np

from r3vae_jax import io
from r3vae_jax.data.dataset import Interactions


@dataclasses.dataclass
class RawLog:
  """Per-user chronological sequences over dense ids; `item_keys[j]` is the source key of id j."""
  user_keys: list[str]
  item_keys: list[str]
  sequences: list[np.ndarray]


@dataclasses.dataclass(frozen=True)
class ItemInfo:
  """An item's short display title and the text given to the encoder."""
  title: str
  text: str


def first_appearance_codes(keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
  """Codes keys by order of first appearance. Returns (int64[len(keys)], unique keys in order)."""
  index: dict[str, int] = {}
  codes = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
  return codes, list(index)


def sequences_from_events(users: np.ndarray, items: np.ndarray,
                          times: np.ndarray | None) -> list[np.ndarray]:
  """Groups events by user (users in code order) and orders each user's items by time.

  Args:
    users: int64[E] user codes 0..U-1 (every code present).
    items: int64[E] item codes.
    times: float64[E] timestamps, or None to keep event order. Ties keep event (line) order.

  Returns:
    U int32 arrays of item codes.
  """
  order = np.lexsort((np.arange(users.size), times, users) if times is not None
                     else (np.arange(users.size), users))
  sorted_items = items[order].astype(np.int32)
  bounds = np.searchsorted(users[order], np.arange(int(users.max()) + 2))
  return [sorted_items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def k_core(log: RawLog, k: int) -> RawLog:
  """Keeps users and items with >= k interactions, iterated until stable; re-densifies ids.

  Item ids keep their relative order, so already-dense ids in the input stay as they are when
  nothing is removed. k <= 1 returns the log with empty users removed.
  """
  lengths = np.array([len(s) for s in log.sequences], np.int64)
  owner = np.repeat(np.arange(lengths.size), lengths)
  flat = np.concatenate(log.sequences) if log.sequences else np.zeros(0, np.int32)
  keep = np.ones(flat.size, bool)
  while True:
    item_count = np.bincount(flat[keep], minlength=len(log.item_keys))
    user_count = np.bincount(owner[keep], minlength=lengths.size)
    new_keep = keep & (item_count[flat] >= k) & (user_count[owner] >= k)
    if np.array_equal(new_keep, keep):
      break
    keep = new_keep
  kept_items = np.unique(flat[keep])
  remap = np.full(len(log.item_keys), -1, np.int64)
  remap[kept_items] = np.arange(kept_items.size)
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  users, sequences = [], []
  for u, seq in enumerate(log.sequences):
    s = seq[keep[offsets[u]:offsets[u + 1]]]
    if s.size:
      users.append(log.user_keys[u])
      sequences.append(remap[s].astype(np.int32))
  return RawLog(user_keys=users, item_keys=[log.item_keys[i] for i in kept_items],
                sequences=sequences)


def to_interactions(name: str, log: RawLog, info: Mapping[str, ItemInfo] | None,
                    source: str) -> Interactions:
  """Attaches item text by key. Items without text keep their key as title and text."""
  if not log.sequences:
    raise io.ArtifactError(f"{source}: no user has any interaction left (after k-core filtering)")
  titles = text = None
  if info is not None:
    missing = [k for k in log.item_keys if k not in info]
    if missing:
      logging.warning("%s: %d of %d items have no text (e.g. %s); their key is used instead",
                      source, len(missing), len(log.item_keys), missing[:3])
    titles = [info[k].title if k in info else k for k in log.item_keys]
    text = [info[k].text if k in info else k for k in log.item_keys]
  return Interactions(name=name, num_items=len(log.item_keys), sequences=log.sequences,
                      item_titles=titles, item_text=text, user_keys=list(log.user_keys))


def first_seen_ids(log: RawLog) -> RawLog:
  """Renumbers items by first appearance, walking users in order (S3-Rec's id_map)."""
  flat = np.concatenate(log.sequences)
  uniq, first = np.unique(flat, return_index=True)
  order = uniq[np.argsort(first, kind="stable")]
  remap = np.full(len(log.item_keys), -1, np.int64)
  remap[order] = np.arange(order.size)
  return RawLog(user_keys=log.user_keys, item_keys=[log.item_keys[i] for i in order],
                sequences=[remap[s].astype(np.int32) for s in log.sequences])


def log_from_events(user_keys: Sequence[str], item_keys: Sequence[str],
                    times: np.ndarray | None) -> RawLog:
  """Events (one per entry, in file order) -> chronological RawLog; ties keep file order."""
  users, user_names = first_appearance_codes(user_keys)
  items, item_names = first_appearance_codes(item_keys)
  return RawLog(user_keys=user_names, item_keys=item_names,
                sequences=sequences_from_events(users, items, times))


def keep_first_occurrences(log: RawLog) -> RawLog:
  """Keeps each (user, item)'s first event in every sequence."""
  def first(seq):
    _, idx = np.unique(seq, return_index=True)
    return seq[np.sort(idx)]
  return RawLog(user_keys=log.user_keys, item_keys=log.item_keys,
                sequences=[first(s) for s in log.sequences])
