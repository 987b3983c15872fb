"""LastFM HetRec-2011 (GroupLens): tab-separated files with a header line.

  user_artists.dat                  userID  artistID  weight (listening count; no time)
  artists.dat                       id  name  url  pictureURL
  user_taggedartists-timestamps.dat userID  artistID  tagID  timestamp (ms)

With the timestamps file, a user's sequence is the artists they tagged, in time order (rows of
one tagging event, i.e. same user, artist and time, count once; ties keep line order) — the
same events as RecBole's lastfm.inter. Without it, user_artists.dat has no time, so its rows
are taken in file order and the sequences are not chronological (logged as a warning).
"""
from __future__ import annotations

import os

from absl import logging
import numpy as np

from r3vae_jax import io
from r3vae_jax.data import sources, text
from r3vae_jax.data.table import ItemInfo, RawLog, keep_first_occurrences, log_from_events

TAGS = "user_taggedartists-timestamps.dat"


def _rows(path: str, header: tuple[str, ...]):
  """Yields (line number, fields) after checking the header names the expected columns."""
  lines = sources.numbered_lines(path, f"HetRec {os.path.basename(path)}", errors="replace")
  for lineno, line in lines:
    fields = line.split("\t")
    if lineno == 1:
      if tuple(f.strip() for f in fields[:len(header)]) != header:
        raise io.ArtifactError(f"{path}: line 1: header {fields} does not start with {header}")
      continue
    if not line:
      continue
    if len(fields) < len(header):
      raise io.ArtifactError(f"{path}: line {lineno}: {len(fields)} fields, expected "
                             f"{len(header)} ({', '.join(header)}) (truncated or malformed line)")
    yield lineno, fields


def read_artists(path: str) -> dict[str, ItemInfo]:
  """Artist id -> (name, name)."""
  info = {}
  for _, fields in _rows(path, ("id", "name")):
    name = text.clean(fields[1])
    info[fields[0]] = ItemInfo(title=name or fields[0], text=name or fields[0])
  return info


def read_hetrec(folder: str, first_only: bool = False) -> tuple[RawLog, dict[str, ItemInfo]]:
  """Sequences and artist names of a HetRec LastFM folder (see the module docstring)."""
  artists = read_artists(os.path.join(folder, "artists.dat"))
  tags = os.path.join(folder, TAGS)
  users, items, times, seen = [], [], [], set()
  if os.path.isfile(tags):
    for lineno, f in _rows(tags, ("userID", "artistID", "tagID", "timestamp")):
      key = (f[0], f[1], f[3])
      try:
        t = float(f[3])
      except ValueError:
        raise io.ArtifactError(
            f"{tags}: line {lineno}: timestamp {f[3]!r} is not a number") from None
      if key in seen:
        continue
      seen.add(key)
      users.append(f[0])
      items.append(f[1])
      times.append(t)
    path, stamps = tags, np.array(times, np.float64)
  else:
    path = os.path.join(folder, "user_artists.dat")
    logging.warning("%s: no %s; sequences follow file order, not time", folder, TAGS)
    for _, f in _rows(path, ("userID", "artistID", "weight")):
      users.append(f[0])
      items.append(f[1])
    stamps = None
  if not users:
    raise io.ArtifactError(f"{path}: no interactions")
  log = log_from_events(users, items, stamps)
  return (keep_first_occurrences(log) if first_only else log), artists
