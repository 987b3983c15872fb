"""S3-Rec/ICLRec/P5 sequence files: one line per user, `uid i1 i2 …` (1-based item ids)."""
from __future__ import annotations

import numpy as np

from r3vae_jax import io
from r3vae_jax.data import sources
from r3vae_jax.data.table import RawLog


def read_user_sequences(path: str) -> RawLog:
  """Reads `uid i1 i2 …` lines (chronological). Item ids become dense 0-based in sorted order.

  With ids 1..N all present (ICLRec's Beauty/Sports/Toys), dense id = file id - 1; `item_keys`
  holds the file's id as a string, for joining item text through a datamap.

  Raises:
    ArtifactError: naming the file and line for a non-integer token, a user without items, a
      repeated user id, or a non-positive item id.
  """
  users, raw = [], []
  seen: set[str] = set()
  for lineno, line in sources.numbered_lines(path, "user sequence file `uid i1 i2 ...`"):
    tokens = line.split()
    if not tokens:
      continue
    uid, items = tokens[0], tokens[1:]
    if not items:
      raise io.ArtifactError(f"{path}: line {lineno}: user {uid} has an empty sequence")
    if uid in seen:
      raise io.ArtifactError(f"{path}: line {lineno}: user {uid} appears twice")
    seen.add(uid)
    try:
      ids = np.array([int(t) for t in items], np.int64)
    except ValueError:
      bad = next(t for t in items if not t.lstrip("-").isdigit())
      raise io.ArtifactError(f"{path}: line {lineno}: item id {bad!r} is not an integer") from None
    except OverflowError:
      bad = next(t for t in items if abs(int(t)) > np.iinfo(np.int64).max)
      raise io.ArtifactError(f"{path}: line {lineno}: item id {bad} is too large (expected "
                             f"< 2**63)") from None
    if ids.min() < 1:
      raise io.ArtifactError(
          f"{path}: line {lineno}: item id {int(ids.min())} < 1 (ids are 1-based)")
    users.append(uid)
    raw.append(ids)
  if not raw:
    raise io.ArtifactError(f"{path}: no user sequences")
  present = np.unique(np.concatenate(raw))
  sequences = [np.searchsorted(present, r).astype(np.int32) for r in raw]
  return RawLog(user_keys=users, item_keys=[str(i) for i in present], sequences=sequences)
