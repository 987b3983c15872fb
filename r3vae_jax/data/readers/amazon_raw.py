"""Upstream Amazon 2014 dumps (McAuley et al.): reviews and item metadata, gzip'd JSON lines.

reviews_<Cat>_5.json.gz or reviews_<Cat>.json.gz: one JSON object per line with reviewerID,
asin, unixReviewTime (older copies are Python literals; both are read).
meta_<Cat>.json.gz: one Python-literal dict per line (single quotes, not JSON) with asin and
optionally title, brand, categories (list of lists), description, price, salesRank.

Sequences follow S3-Rec's preprocessing, so the 5-core files give the circulated statistics:
users in order of first appearance, events sorted by time with ties kept in line order.
"""
from __future__ import annotations

import ast
import json
import re
from typing import Iterable

import numpy as np

from r3vae_jax import io
from r3vae_jax.data import sources, text
from r3vae_jax.data.table import ItemInfo, RawLog, log_from_events

_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def parse_record(line: str, path: str, lineno: int) -> dict:
  """One JSON or Python-literal dict; ArtifactError naming file and line otherwise."""
  try:
    record = json.loads(line)
  except json.JSONDecodeError:
    try:
      record = ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
      raise io.ArtifactError(f"{path}: line {lineno}: not a JSON object or Python dict "
                             "(truncated or malformed line)") from None
  if not isinstance(record, dict):
    raise io.ArtifactError(f"{path}: line {lineno}: expected a dict, got {type(record).__name__}")
  return record


def read_reviews(path: str) -> RawLog:
  """Per-user chronological sequences of a reviews dump (no k-core; the pipeline applies it)."""
  users, items, times = [], [], []
  for lineno, line in sources.numbered_lines(path, "Amazon reviews json(.gz)"):
    if not line.strip():
      continue
    record = parse_record(line, path, lineno)
    for field in ("reviewerID", "asin", "unixReviewTime"):
      if field not in record:
        raise io.ArtifactError(f"{path}: line {lineno}: missing field {field!r}")
    try:
      stamp = float(record["unixReviewTime"])
    except (TypeError, ValueError, OverflowError):
      raise io.ArtifactError(f"{path}: line {lineno}: field unixReviewTime = "
                             f"{record['unixReviewTime']!r} is not a number") from None
    if not np.isfinite(stamp):  # NaN would sort last and silently become the test target
      raise io.ArtifactError(f"{path}: line {lineno}: field unixReviewTime = "
                             f"{record['unixReviewTime']!r} is not a finite number")
    for field in ("reviewerID", "asin"):
      if not isinstance(record[field], (str, int)) or isinstance(record[field], bool):
        raise io.ArtifactError(f"{path}: line {lineno}: field {field} = {record[field]!r} is "
                               "not a string or number")
    times.append(stamp)
    users.append(str(record["reviewerID"]))
    items.append(str(record["asin"]))
  if not users:
    raise io.ArtifactError(f"{path}: no reviews")
  return log_from_events(users, items, np.array(times, np.float64))


def read_meta(path: str, fields: Iterable[str],
              keys: set[str] | None = None) -> dict[str, ItemInfo]:
  """ASIN -> (title, text) from a meta dump; lines of ASINs outside `keys` are skipped unparsed."""
  fields = tuple(fields)
  info = {}
  for lineno, line in sources.numbered_lines(path, "Amazon meta json(.gz)"):
    if not line.strip():
      continue
    if keys is not None:
      m = _ASIN.search(line)
      if m and m.group(1) not in keys:
        continue
    record = parse_record(line, path, lineno)
    if "asin" not in record:
      raise io.ArtifactError(f"{path}: line {lineno}: missing field 'asin'")
    asin = str(record["asin"])
    title, body = text.compose(record, fields)
    info[asin] = ItemInfo(title=title or asin, text=body or asin)
  return info
