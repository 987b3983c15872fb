"""The trie of valid semantic IDs as device arrays, for constrained beam search.

`build_trie` sorts the SID table (`int32[N, L']`, one unique row per item, row index = item id)
lexicographically and numbers the distinct prefixes of each length in sorted order: depth `d`
holds `nodes_d` nodes (`nodes_0 = 1`, the root; `nodes_L' = N`, the leaves, one per item). Level
`l` (choosing code `l`, `K_l = level_sizes[l]` codes) maps a node of depth `l` to its children of
depth `l + 1` in one of two layouts, chosen per level by size:

- `DenseLevel`: `child int32[nodes_l, K_l]` (child node id, -1 where the code is no valid
  continuation). One gather per beam per step; the step scores all `K_l` codes.
  Memory: `nodes_l * K_l * 4` bytes. Used when `nodes_l * K_l <= dense_budget`.
- `CsrLevel`: the children of a node are contiguous in sorted order, so `offsets int32[nodes_l+1]`
  (first child of each node) and `codes int32[nodes_{l+1}]` (the last code of each child) describe
  them exactly, with no padding. A step gathers `max_branch_l` (a static int, the largest number of
  children of any node of depth `l`) candidates per beam and scores only `[beams, max_branch_l]`
  logits. Memory: `(nodes_l + 1 + nodes_{l+1}) * 4` bytes.

Plus `leaf_items int32[N]` (leaf id -> item id): `N * 4` bytes. Total device memory:

    sum_l [dense_l ? nodes_l * K_l : nodes_l + 1 + nodes_{l+1}] * 4  +  N * 4   bytes.

Measured with the benchmark's random SIDs (`benchmarks/decode_bench.py`): 12,101 items over
3 x 256 codes + 256 collision codes are dense at every level, 17 MiB; 1M items over 3 x 8192 codes
+ 256 are dense at levels 0-1 (the 8192 x 8192 table, 256 MiB) and CSR at levels 2-3, 266 MiB in
all (18 MiB with `dense_budget=0`, every level CSR).

All three classes are pytrees: arrays are leaves, sizes and layouts are static aux data.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_DENSE_BUDGET = 2**26  # entries of a dense child table (256 MiB of int32)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["child"],
                   meta_fields=["size"])
@dataclasses.dataclass(frozen=True)
class DenseLevel:
  """Children of every node of one depth as a dense table.

  Attributes:
    child: int32[nodes, size] child node id (next depth), -1 where the code is not valid.
    size: number of codes at this level (`K_l`).
  """
  child: jax.Array
  size: int

  @property
  def num_candidates(self) -> int:
    return self.size

  def candidates(self, node: jax.Array, logits: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Candidate continuations of `node`.

    Args:
      node: int32[rows] node ids of this depth.
      logits: float[rows, size] the model's logits for this level.

    Returns:
      (cand_logits float[rows, C], codes int32[rows, C], child int32[rows, C]); C = size and
      child = -1 marks a candidate that is not a valid continuation.
    """
    child = self.child[node]
    codes = jnp.broadcast_to(jnp.arange(self.size, dtype=jnp.int32), child.shape)
    return logits, codes, child


@functools.partial(jax.tree_util.register_dataclass, data_fields=["offsets", "codes"],
                   meta_fields=["size", "max_branch"])
@dataclasses.dataclass(frozen=True)
class CsrLevel:
  """Children of every node of one depth as compressed sparse rows.

  Attributes:
    offsets: int32[nodes + 1]; the children of node n are the next-depth nodes
      offsets[n] .. offsets[n+1]-1.
    codes: int32[next_nodes] the code (last SID token) of each next-depth node.
    size: number of codes at this level (`K_l`).
    max_branch: the largest number of children of any node of this depth.
  """
  offsets: jax.Array
  codes: jax.Array
  size: int
  max_branch: int

  @property
  def num_candidates(self) -> int:
    return self.max_branch

  def candidates(self, node: jax.Array, logits: jax.Array
                 ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """As `DenseLevel.candidates`, with C = max_branch (gathers only those logits)."""
    start = self.offsets[node]
    count = self.offsets[node + 1] - start
    j = jnp.arange(self.max_branch, dtype=jnp.int32)
    child = start[:, None] + j
    valid = j < count[:, None]
    codes = jnp.where(valid, self.codes[jnp.minimum(child, self.codes.shape[0] - 1)], 0)
    cand_logits = jnp.take_along_axis(logits, codes, axis=1)
    return cand_logits, codes, jnp.where(valid, child, -1)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["levels", "leaf_items"],
                   meta_fields=["level_sizes"])
@dataclasses.dataclass(frozen=True)
class DeviceTrie:
  """The trie of valid SIDs: one `DenseLevel`/`CsrLevel` per SID position.

  Attributes:
    levels: per level l, the map from depth-l nodes to their depth-(l+1) children.
    leaf_items: int32[N] item id of each leaf (depth-L' node).
    level_sizes: codes per level (`K_l`), the width of the model's logits at each step.
  """
  levels: tuple[DenseLevel | CsrLevel, ...]
  leaf_items: jax.Array
  level_sizes: tuple[int, ...]

  @property
  def num_levels(self) -> int:
    return len(self.level_sizes)

  @property
  def num_items(self) -> int:
    return self.leaf_items.shape[0]

  @property
  def nbytes(self) -> int:
    """Device memory of all arrays (the formula in the module docstring)."""
    return sum(x.nbytes for x in jax.tree.leaves(self))

  @property
  def layouts(self) -> tuple[str, ...]:
    return tuple("dense" if isinstance(lv, DenseLevel) else "csr" for lv in self.levels)


def _check_table(sid_table: np.ndarray, level_sizes: list[int]) -> np.ndarray:
  table = np.asarray(sid_table)
  if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
    raise ValueError(f"build_trie: sid_table must be a non-empty int array [N, L'], "
                     f"got shape {table.shape}")
  if not np.issubdtype(table.dtype, np.integer):
    raise ValueError(f"build_trie: sid_table must hold integers, got {table.dtype}")
  if len(level_sizes) != table.shape[1]:
    raise ValueError(f"build_trie: {len(level_sizes)} level_sizes for {table.shape[1]} SID "
                     f"levels")
  sizes = np.asarray(level_sizes)
  bad = (table < 0) | (table >= sizes[None, :])
  if bad.any():
    row, col = np.argwhere(bad)[0]
    raise ValueError(f"build_trie: sid_table[{row}, {col}] = {table[row, col]} outside "
                     f"[0, {sizes[col]})")
  return table.astype(np.int32)


def build_trie(sid_table: np.ndarray, level_sizes: list[int],
               dense_budget: int = DEFAULT_DENSE_BUDGET) -> DeviceTrie:
  """Builds the device trie of the SIDs (host numpy work, O(N L' log N)).

  Args:
    sid_table: int[N, L'] unique rows; row i is the SID of item i.
    level_sizes: codes per level, len L' (the model's vocabulary at each step).
    dense_budget: a level uses a dense child table when nodes * K fits in this many entries,
      CSR otherwise (0 forces CSR everywhere).

  Returns:
    The `DeviceTrie` (arrays on the default device).
  """
  table = _check_table(sid_table, level_sizes)
  n, depth = table.shape
  order = np.lexsort(table.T[::-1])
  sorted_table = table[order]
  # differs[i, l]: sorted row i starts a new prefix of length l + 1 (a new depth-(l+1) node).
  differs = np.ones((n, depth), bool)
  differs[1:] = np.logical_or.accumulate(sorted_table[1:] != sorted_table[:-1], axis=1)
  if not differs[:, -1].all():
    i = order[np.flatnonzero(~differs[:, -1])[0]]
    raise ValueError(f"build_trie: sid_table rows must be unique; item {i} repeats the SID "
                     f"{table[i].tolist()}")
  node_of_row = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(differs, 0) - 1], 1)
  levels = []
  for l in range(depth):
    starts = np.flatnonzero(differs[:, l])    # first sorted row of each depth-(l+1) node
    parent = node_of_row[starts, l]           # its depth-l parent (non-decreasing)
    code = sorted_table[starts, l]
    nodes = int(node_of_row[-1, l]) + 1
    k = int(level_sizes[l])
    if nodes * k <= dense_budget:
      child = np.full((nodes, k), -1, np.int32)
      child[parent, code] = np.arange(starts.size, dtype=np.int32)
      levels.append(DenseLevel(child=jnp.asarray(child), size=k))
    else:
      counts = np.bincount(parent, minlength=nodes)
      offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
      levels.append(CsrLevel(offsets=jnp.asarray(offsets), codes=jnp.asarray(code, jnp.int32),
                             size=k, max_branch=int(counts.max())))
  return DeviceTrie(levels=tuple(levels), leaf_items=jnp.asarray(order, jnp.int32),
                    level_sizes=tuple(int(k) for k in level_sizes))
