"""S3-Rec/ICLRec/P5 sequence files: one line per user, `uid i1 i2 …` (1-based item ids)."""
from __future__ import annotations

import gzip

import numpy as np

from r3vae_jax import io
from r3vae_jax.data import sources
from r3vae_jax.data.table import RawLog


def _parses(token: str) -> bool:
  try:
    int(token)
    return True
  except ValueError:
    return False


def read_user_sequences(path: str) -> RawLog:
  """Reads `uid i1 i2 …` lines (chronological). Item ids become dense 0-based in sorted order.

  With ids 1..N all present (ICLRec's Beauty/Sports/Toys), dense id = file id - 1; `item_keys`
  holds the file's id as a string, for joining item text through a datamap.

  Files of plain decimal tokens are parsed in bulk (`parse_numeric`: 2M users in seconds);
  anything else, and any file the bulk parser refuses, is read line by line, which names the
  offending line.

  Raises:
    ArtifactError: naming the file and line for a non-integer token, a user without items, a
      repeated user id, or a non-positive item id.
  """
  opener = gzip.open if path.endswith(".gz") else open
  sources.require_file(path, "user sequence file `uid i1 i2 ...`")
  try:
    with opener(path, "rb") as f:
      parsed = parse_numeric(f.read())
  except (EOFError, gzip.BadGzipFile, OSError):
    parsed = None  # the line reader reports the damage
  if parsed is not None:
    uids, counts, items = parsed
    present, dense = np.unique(items, return_inverse=True)
    sequences = np.split(dense.astype(np.int32), np.cumsum(counts)[:-1])
    return RawLog(user_keys=[str(u) for u in uids.tolist()],
                  item_keys=[str(i) for i in present.tolist()], sequences=sequences)
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
      bad = next((t for t in items if not _parses(t)), items[0])
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


_SPACE = np.zeros(256, bool)
_SPACE[[ord(" "), ord("\t"), ord("\n"), ord("\r")]] = True
_DIGIT = np.zeros(256, bool)
_DIGIT[ord("0"):ord("9") + 1] = True


def parse_numeric(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """Bulk parse of `uid i1 i2 ...` lines made only of decimal tokens and blanks.

  Returns:
    (uids int64[U], item counts int64[U], items int64[sum(counts)]), or None when the bytes
    hold anything the line reader must judge: another character, a token of more than 18
    digits or with a leading zero, a line without items, a repeated uid, an item id < 1.
  """
  buf = np.frombuffer(data, np.uint8)
  digit = _DIGIT[buf]
  if not digit.any() or not (digit | _SPACE[buf]).all():
    return None
  edge = np.diff(np.concatenate([[0], digit.view(np.int8), [0]]))
  starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)
  width = ends - starts
  if width.max() > 18 or np.any((buf[starts] == ord("0")) & (width > 1)):
    return None
  values = np.zeros(starts.size, np.int64)
  for k in range(int(width.max())):
    live = np.flatnonzero(width > k)
    values[live] = values[live] * 10 + (buf[starts[live] + k] - ord("0"))
  line = np.cumsum(buf == ord("\n"))[starts]
  first = np.flatnonzero(np.concatenate([[True], line[1:] != line[:-1]]))
  counts = np.diff(np.concatenate([first, [starts.size]])) - 1
  uids = values[first]
  is_item = np.ones(starts.size, bool)
  is_item[first] = False
  items = values[is_item]
  if counts.min() < 1 or np.unique(uids).size != uids.size or items.min() < 1:
    return None
  return uids, counts, items
