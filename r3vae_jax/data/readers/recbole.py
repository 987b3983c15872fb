"""RecBole atomic files: `.inter` (events) and `.item` (item features), tab-separated.

The first line is a typed header, `field:type` per column (type token, token_seq, float,
float_seq). Values may be quoted with `"` (a few circulated titles hold quoted newlines).
"""
from __future__ import annotations

import csv
from typing import Iterator, Sequence

import numpy as np

from r3vae_jax import io
from r3vae_jax.data import sources, text
from r3vae_jax.data.table import ItemInfo, RawLog, keep_first_occurrences, log_from_events


def read_rows(path: str) -> tuple[list[str], list[str], Iterator[tuple[int, list[str]]]]:
  """Returns (field names, field types, iterator of (line number, row)).

  Raises:
    ArtifactError: missing file, a header column without `:type`, or a row whose column count
      differs from the header (naming the line).
  """
  sources.require_file(path, "RecBole atomic file")
  f = open(path, encoding="utf-8", newline="")
  reader = csv.reader(f, delimiter="\t", quotechar='"')
  try:
    header = next(reader)
  except StopIteration:
    f.close()
    raise io.ArtifactError(f"{path}: empty file (expected a `field:type` header)") from None
  except UnicodeDecodeError as e:
    f.close()
    raise io.ArtifactError(f"{path}: line {sources.undecodable_line(path)}: not utf-8 text "
                           f"({e.reason})") from None
  except csv.Error as e:
    f.close()
    raise io.ArtifactError(f"{path}: line 1: malformed header ({e})") from None
  names, types = [], []
  for col in header:
    name, sep, kind = col.partition(":")
    if not sep or not name:
      f.close()
      raise io.ArtifactError(f"{path}: line 1: header column {col!r} is not `field:type`")
    if name in names:
      f.close()
      raise io.ArtifactError(f"{path}: line 1: field {name!r} appears twice in the header")
    names.append(name)
    types.append(kind)

  def rows():
    with f:
      line = 1
      try:
        for row in reader:
          if not row:
            line = reader.line_num
            continue
          if len(row) != len(names):
            raise io.ArtifactError(f"{path}: line {line + 1}: {len(row)} columns, header has "
                                   f"{len(names)} ({', '.join(names)})")
          yield line + 1, row
          line = reader.line_num
      except csv.Error as e:
        raise io.ArtifactError(f"{path}: line {reader.line_num}: malformed row ({e})") from None
      except UnicodeDecodeError as e:
        raise io.ArtifactError(f"{path}: line {sources.undecodable_line(path)}: not utf-8 text "
                               f"({e.reason})") from None

  return names, types, rows()


def _column(names: Sequence[str], field: str, path: str) -> int:
  if field not in names:
    raise io.ArtifactError(f"{path}: field {field!r} not in header ({', '.join(names)})")
  return names.index(field)


def read_inter(path: str, user_field: str = "user_id", item_field: str = "item_id",
               time_field: str = "timestamp", first_only: bool = False) -> RawLog:
  """Chronological per-user sequences from a `.inter` file.

  Rows repeating the same (user, item, timestamp) are one event (LastFM's file has one row per
  tag of a tagging event). Ties in time keep file order. Without `time_field` in the header the
  file order is the order. `first_only` keeps each (user, item)'s earliest event only.

  Raises:
    ArtifactError: naming the file and line of a malformed row or non-numeric timestamp.
  """
  names, _, rows = read_rows(path)
  u_col, i_col = _column(names, user_field, path), _column(names, item_field, path)
  t_col = names.index(time_field) if time_field in names else None
  users, items, times, seen = [], [], [], set()
  for lineno, row in rows:
    if not row[u_col] or not row[i_col]:
      raise io.ArtifactError(f"{path}: line {lineno}: empty {user_field} or {item_field}")
    t = row[t_col] if t_col is not None else ""
    if t_col is not None:
      try:
        t = float(t)
      except ValueError:
        raise io.ArtifactError(f"{path}: line {lineno}: field {time_field} = {row[t_col]!r} "
                               "is not a number") from None
      if not np.isfinite(t):  # NaN would sort last and silently become the test target
        raise io.ArtifactError(f"{path}: line {lineno}: field {time_field} = {row[t_col]!r} "
                               "is not a finite number")
    key = (row[u_col], row[i_col], t)
    if key in seen:
      continue
    seen.add(key)
    users.append(row[u_col])
    items.append(row[i_col])
    times.append(t)
  if not users:
    raise io.ArtifactError(f"{path}: no interactions")
  log = log_from_events(users, items, np.array(times, np.float64) if t_col is not None else None)
  return keep_first_occurrences(log) if first_only else log


def read_item_text(path: str, fields: Sequence[str],
                   item_field: str = "item_id") -> dict[str, ItemInfo]:
  """Item key -> (title, text) from a `.item` file; `fields` present in the header are used."""
  names, types, rows = read_rows(path)
  key_col = _column(names, item_field, path)
  use = [(f, names.index(f)) for f in fields if f in names]
  if not use:
    raise io.ArtifactError(f"{path}: none of the text fields {list(fields)} is in the header "
                           f"({', '.join(names)})")
  info = {}
  for _, row in rows:
    values = {f: (text.parse_token_seq(row[c]) if types[c].endswith("_seq") else row[c])
              for f, c in use}
    title, body = text.compose(values, fields)
    info[row[key_col]] = ItemInfo(title=title or row[key_col], text=body or row[key_col])
  return info
