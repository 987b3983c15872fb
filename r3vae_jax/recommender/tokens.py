"""Token layout of the recommender: SIDs <-> one shared vocabulary with per-level ranges.

An item is `L+1` tokens: `L` code levels of `config.sid.codebook_size` codes each, then the
collision level of `config.sid.max_collisions` codes. All levels and the two special tokens share
one embedding table of `vocab_size` rows; level `p`'s codes occupy rows
`offsets[p] .. offsets[p] + level_sizes[p] - 1`, so every SID position has its own embeddings:

    row 0 = PAD, row 1 = BOS, then level 0 codes, level 1 codes, ..., collision codes.
"""
from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from r3vae_jax.io import ArtifactError
from r3vae_jax.tokenizer import sid_table as sid_table_lib

PAD = 0
BOS = 1
NUM_SPECIALS = 2


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  """Sizes and offsets of the SID levels in the shared vocabulary.

  Attributes:
    level_sizes: codes per SID position, len L+1 (`[K]*L + [max_collisions]`).
  """
  level_sizes: tuple[int, ...]

  @property
  def num_levels(self) -> int:
    """L+1, the tokens per item."""
    return len(self.level_sizes)

  @property
  def offsets(self) -> tuple[int, ...]:
    """Vocabulary row of code 0 of each level, len L+1."""
    starts = np.cumsum((NUM_SPECIALS,) + self.level_sizes[:-1])
    return tuple(int(s) for s in starts)

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIALS + sum(self.level_sizes)

  @property
  def max_level_size(self) -> int:
    """Kmax, the width of the padded per-level logits."""
    return max(self.level_sizes)

  def padded_rows(self) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary rows of every level padded to Kmax codes.

    Returns:
      (rows int32[L+1, Kmax] (past a level's size: its last row, repeated),
       valid bool[L+1, Kmax] (False past a level's size)).
    """
    k = np.arange(self.max_level_size)
    sizes = np.asarray(self.level_sizes)[:, None]
    rows = np.asarray(self.offsets)[:, None] + np.minimum(k[None, :], sizes - 1)
    return rows.astype(np.int32), k[None, :] < sizes

  def item_tokens(self, sid_table: np.ndarray) -> np.ndarray:
    """SID codes -> vocabulary tokens.

    Args:
      sid_table: int[N, L+1] (validated with `check_sid_table`).

    Returns:
      int32[N + 1, L+1]; row i holds item i's tokens, the extra last row is all PAD so that
      item id -1 (history padding) indexes it.
    """
    tokens = np.asarray(sid_table, np.int64) + np.asarray(self.offsets)[None, :]
    pad_row = np.full((1, self.num_levels), PAD)
    return np.concatenate([tokens, pad_row]).astype(np.int32)


def layout_from_config(config: ml_collections.ConfigDict) -> TokenLayout:
  """`[codebook_size]*levels + [max_collisions]` from `config.sid`."""
  sid = config.sid
  for field in ("levels", "codebook_size", "max_collisions"):
    value = sid[field]
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.sid.{field} must be a positive int, got {value!r}")
  return TokenLayout((sid.codebook_size,) * sid.levels + (sid.max_collisions,))


def check_sid_table(sid_table: np.ndarray, layout: TokenLayout, source: str = "sid_table"
                    ) -> np.ndarray:
  """Validates a SID table against the layout; returns it as int32[N, L+1].

  Raises:
    ArtifactError: naming `source` and the first bad entry when the table is not 2-D with L+1
      columns, not integer, has duplicate rows, or holds a code outside its level's range.
  """
  table = np.asarray(sid_table)
  if table.ndim != 2 or table.shape[1] != layout.num_levels or table.shape[0] == 0:
    raise ArtifactError(f"{source}: expected a non-empty int array [N, {layout.num_levels}] "
                        f"(config.sid.levels + 1 columns), got shape {table.shape}")
  if not np.issubdtype(table.dtype, np.integer):
    raise ArtifactError(f"{source}: expected integer codes, got dtype {table.dtype}")
  sizes = np.asarray(layout.level_sizes)
  bad = (table < 0) | (table >= sizes[None, :])
  if bad.any():
    row, col = np.argwhere(bad)[0]
    field = "config.sid.max_collisions" if col == layout.num_levels - 1 else \
        "config.sid.codebook_size"
    raise ArtifactError(f"{source}: item {row} level {col} has code {table[row, col]}, outside "
                        f"[0, {sizes[col]}) ({field})")
  if not sid_table_lib.rows_unique(table):
    raise ArtifactError(f"{source}: SID rows must be unique (one SID per item)")
  return table.astype(np.int32)
