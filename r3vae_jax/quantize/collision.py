"""Grouping of items by their code tuple, and the collision token that makes SIDs unique."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def packed_prefix_keys(codes: np.ndarray) -> list[np.ndarray] | None:
  """One int64 key per item for each prefix length 1..L, equal exactly where the items' code
  prefixes are and ordered as the tuples (each level's codes packed into its own bit width).

  Args:
    codes: host `int[N, L]`.

  Returns:
    L arrays `int64[N]`, or None when the codes are empty, negative or wider than 63 bits
    together (then compare the rows themselves).
  """
  codes = np.asarray(codes)
  if codes.size == 0 or codes.min() < 0:
    return None
  bits = [int(c).bit_length() for c in codes.max(axis=0)]
  if sum(bits) > 63:
    return None
  key, keys = np.zeros(codes.shape[0], np.int64), []
  for level, width in enumerate(bits):
    key = (key << width) | codes[:, level].astype(np.int64)
    keys.append(key)
  return keys


@jax.jit
def sort_groups(codes: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Sorts items by code tuple (stable: ties keep item-id order) and marks group starts.

  Args:
    codes: `int[N, L]`.

  Returns:
    order `int32[N]` (item ids in sorted order) and is_start `bool[N]` (True where the sorted
    row begins a new tuple).
  """
  n = codes.shape[0]
  # lexsort's last key is primary; the item id as first key makes the order stable.
  keys = (jnp.arange(n, dtype=jnp.int32),) + tuple(codes[:, l] for l in
                                                    reversed(range(codes.shape[1])))
  order = jnp.lexsort(keys).astype(jnp.int32)
  sorted_codes = codes[order]
  differs = jnp.any(sorted_codes[1:] != sorted_codes[:-1], axis=-1)
  is_start = jnp.concatenate([jnp.ones((1,), bool), differs])
  return order, is_start


@jax.jit
def group_ids(codes: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Dense group id per item: items with equal code tuples share an id.

  Ids are `0..G-1` in lexicographic order of the tuples (so `segment_sum(..., num_segments=N)`
  fills exactly the first G rows).

  Args:
    codes: `int[N, L]`.

  Returns:
    ids `int32[N]` and num_groups (int32 scalar G).
  """
  order, is_start = sort_groups(codes)
  sorted_ids = jnp.cumsum(is_start.astype(jnp.int32)) - 1
  ids = jnp.zeros_like(sorted_ids).at[order].set(sorted_ids)
  return ids, jnp.sum(is_start.astype(jnp.int32))


@jax.jit
def collision_tokens(codes: jax.Array) -> jax.Array:
  """Rank of each item among the items with the same code tuple, in item-id order.

  Args:
    codes: `int[N, L]`.

  Returns:
    `int32[N]`: 0 for the lowest item id of each tuple, 1 for the next, ...
  """
  order, is_start = sort_groups(codes)
  position = jnp.arange(codes.shape[0], dtype=jnp.int32)
  group_start = jax.lax.cummax(jnp.where(is_start, position, 0), axis=0)
  return jnp.zeros_like(position).at[order].set(position - group_start)


def append_collision_token(codes: jax.Array | np.ndarray, max_collisions: int) -> np.ndarray:
  """Appends the collision token as a last level, so that every row is unique.

  Runs on concrete arrays (it validates and may raise), not under `jit`.

  Args:
    codes: `int[N, L]`.
    max_collisions: vocabulary size of the last level; groups larger than this are an error.

  Returns:
    numpy `int32[N, L + 1]`.

  Raises:
    ValueError: when a code tuple is shared by more than `max_collisions` items (names the
      largest group's tuple and size).
  """
  codes = np.asarray(codes)
  if codes.ndim != 2:
    raise ValueError(f"quantize/collision.py: codes must be [N, L], got shape {codes.shape}")
  tokens = np.asarray(collision_tokens(jnp.asarray(codes)))
  if tokens.size and tokens.max() + 1 > max_collisions:
    worst = int(np.argmax(tokens))
    raise ValueError(
        f"quantize/collision.py: {int(tokens[worst]) + 1} items share the code tuple "
        f"{tuple(int(c) for c in codes[worst])} but max_collisions={max_collisions} "
        "(raise config.sid.max_collisions or use more codes per level)")
  return np.concatenate([codes, tokens[:, None]], axis=1).astype(np.int32)


def spill_overflow(codes: np.ndarray, max_collisions: int, codebook_size: int
                   ) -> tuple[np.ndarray, int]:
  """Moves the items that do not fit a code tuple's collision level to sibling tuples.

  A tuple shared by more than `max_collisions` items keeps its first `max_collisions` (by item
  id); each further item keeps its first L-1 codes and takes, in item-id order, a free place of
  the last level under that prefix: the lowest last-level code whose tuple holds fewer than
  `max_collisions` items. Items stay in their (L-1)-prefix, so the SID still says where they
  belong; only their last code, the finest, changes. Host numpy; the loop runs over the
  over-full prefixes only.

  Args:
    codes: int `[N, L]`, last-level codes in `[0, codebook_size)`.
    max_collisions: the collision level's vocabulary.
    codebook_size: K, the codes of the last level.

  Returns:
    (codes int32 `[N, L]` where no tuple has more than `max_collisions` items, the number of
    items moved).

  Raises:
    ValueError: a prefix holds more items than its `K x max_collisions` places (names it).
  """
  codes = np.array(codes, np.int32)
  rank = np.asarray(collision_tokens(jnp.asarray(codes)))
  over = np.flatnonzero(rank >= max_collisions)
  if over.size == 0:
    return codes, 0
  k = codebook_size
  _, prefix = np.unique(codes[:, :-1], axis=0, return_inverse=True)
  prefix = prefix.ravel()
  for p in np.unique(prefix[over]):
    members = np.flatnonzero(prefix == p)
    movers = members[rank[members] >= max_collisions]
    kept = members[rank[members] < max_collisions]
    room = max_collisions - np.bincount(codes[kept, -1], minlength=k)
    places = np.repeat(np.arange(k), room)
    if places.size < movers.size:
      raise ValueError(
          f"quantize/collision.py: {members.size} items share the prefix "
          f"{tuple(int(c) for c in codes[members[0], :-1])}, more than its {k} x "
          f"max_collisions={max_collisions} places (raise config.sid.max_collisions)")
    codes[movers, -1] = places[:movers.size]
  return codes, int(over.size)
