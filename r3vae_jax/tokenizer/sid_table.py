"""The SID table artifact: `int32[N, L+1]` (L codes + collision token), unique rows.

Written to `workdir/tokenizer/sid_table.npy` and `workdir/tokenizer/sid_metrics.json`; the JSON
holds the tokenizer's metrics, a `meta` dict (fingerprints of the vectors and the tokenizer
config, ...) and `meta.table_fingerprint`, so that a table and a JSON from different runs are
never read together. A table made elsewhere (any `.npy`) loads too, with or without a JSON.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from r3vae_jax import io
from r3vae_jax import quantize

SID_DIR = "tokenizer"
TABLE_FILE = "sid_table.npy"
METRICS_FILE = "sid_metrics.json"
_INT32_MAX = np.iinfo(np.int32).max


def make_sid_table(codes: np.ndarray, max_collisions: int, spill_codes: int = 0) -> np.ndarray:
  """Appends the collision token (rank among items sharing the L-code tuple, by item id).

  Args:
    codes: int `[N, L]`.
    max_collisions: vocabulary of the last level (config.sid.max_collisions).
    spill_codes: > 0 (the last level's codebook size, with config.sid.spill_overflow): items
      beyond `max_collisions` in a tuple first move to a free sibling last-level code of their
      prefix (`quantize.spill_overflow`) instead of an error; 0 = no spilling.

  Returns:
    int32 `[N, L + 1]` with unique rows (when spilling, the rows whose first L codes differ
    from `codes` are the moved items).

  Raises:
    ValueError: when more than `max_collisions` items share one L-code tuple (names it), or
      when spilling, more than the prefix's places share an (L-1)-prefix.
  """
  codes = np.asarray(codes)
  if spill_codes:
    codes, _ = quantize.spill_overflow(codes, max_collisions, spill_codes)
  return quantize.append_collision_token(codes, max_collisions)


def save_sid_table(workdir: str, table: np.ndarray, metrics: dict[str, Any],
                   meta: dict[str, Any]) -> str:
  """Validates and writes the table and its metrics JSON atomically; returns the table path.

  Args:
    workdir: run folder; files go to `workdir/tokenizer/`.
    table: int `[N, L + 1]`.
    metrics: JSON-serialisable metrics (top level of the JSON).
    meta: JSON-serialisable provenance, stored under the key "meta" (plus the table's
      fingerprint, added here).
  """
  table = validate_sid_table(table, "save_sid_table(table)")
  if "meta" in metrics:
    raise ValueError("save_sid_table: metrics must not have a 'meta' key (pass it as meta)")
  directory = os.path.join(workdir, SID_DIR)
  path = os.path.join(directory, TABLE_FILE)
  io.write_npy(path, table)
  io.write_json(os.path.join(directory, METRICS_FILE), _finite_or_null({
      **metrics, "meta": {**meta, "table_fingerprint": io.fingerprint_array(table),
                          "table_shape": list(table.shape)}}))
  return path


def _finite_or_null(obj: Any) -> Any:
  """NaN/inf floats (e.g. SC when no two items share a tuple) -> None, for strict JSON."""
  if isinstance(obj, dict):
    return {k: _finite_or_null(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite_or_null(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def load_sid_table(path_or_workdir: str) -> tuple[np.ndarray, dict[str, Any]]:
  """Loads and validates a SID table.

  Args:
    path_or_workdir: a `.npy` file, a folder holding `sid_table.npy`, or a run folder holding
      `tokenizer/sid_table.npy`.

  Returns:
    (int32 `[N, L + 1]` table, metrics dict read from `sid_metrics.json` beside the table,
    including its "meta"; `{}` when there is no JSON beside a table made elsewhere).

  Raises:
    ArtifactError: missing file, malformed table, or a JSON that belongs to another table.
  """
  path = _table_path(path_or_workdir)
  table = validate_sid_table(io.read_npy(path), path)
  json_path = os.path.join(os.path.dirname(path), METRICS_FILE)
  if not io.exists(json_path):
    return table, {}
  metrics = io.read_json(json_path)
  expected = metrics.get("meta", {}).get("table_fingerprint") if isinstance(metrics, dict) else None
  if expected is None:
    raise io.ArtifactError(f"{json_path}: expected a JSON object with meta.table_fingerprint")
  if expected != io.fingerprint_array(table):
    raise io.ArtifactError(f"{json_path}: its table_fingerprint {expected} does not match "
                           f"{path} ({io.fingerprint_array(table)}); the two files come from "
                           "different runs")
  return table, metrics


def _table_path(path_or_workdir: str) -> str:
  if path_or_workdir.endswith(".npy"):
    return path_or_workdir
  for candidate in (os.path.join(path_or_workdir, SID_DIR, TABLE_FILE),
                    os.path.join(path_or_workdir, TABLE_FILE)):
    if io.exists(candidate):
      return candidate
  raise io.ArtifactError(f"{path_or_workdir}: no SID table found (expected a .npy path, "
                         f"{SID_DIR}/{TABLE_FILE} or {TABLE_FILE} inside it)")


def validate_sid_table(table: Any, source: str) -> np.ndarray:
  """Checks a SID table and returns it as int32.

  Requirements: 2-D `[N >= 1, L' >= 2]`; integer values (an integer dtype, or floats that are
  all whole numbers); 0 <= value <= int32 max; no two rows equal.

  Raises:
    ArtifactError naming `source` and the first violation.
  """
  a = np.asarray(table)
  if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 2:
    raise io.ArtifactError(f"{source}: SID table must be 2-D [items >= 1, levels >= 2], "
                           f"got shape {a.shape}")
  if np.issubdtype(a.dtype, np.floating):
    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
      raise io.ArtifactError(f"{source}: SID table has dtype {a.dtype} with non-integer values")
  elif not np.issubdtype(a.dtype, np.integer):
    raise io.ArtifactError(f"{source}: SID table must hold integers, got dtype {a.dtype}")
  if a.min() < 0:
    row = int(np.argwhere(a < 0)[0, 0])
    raise io.ArtifactError(f"{source}: SID table has negative codes (row {row}: {a[row].tolist()})")
  if a.max() > _INT32_MAX:
    raise io.ArtifactError(f"{source}: SID table has codes beyond int32 ({a.max()})")
  a = a.astype(np.int32)
  if not rows_unique(a):
    _, first, counts = np.unique(a, axis=0, return_index=True, return_counts=True)
    dup = int(first[np.argmax(counts > 1)])
    others = np.flatnonzero(np.all(a == a[dup], axis=1)).tolist()
    raise io.ArtifactError(f"{source}: SID rows must be unique; items {others[:5]} share "
                           f"{a[dup].tolist()} ({int(np.sum(counts[counts > 1] - 1))} duplicates)")
  return a


def rows_unique(table: np.ndarray) -> bool:
  """Whether no two rows of an int table `[N, C]` are equal.

  Rows that `quantize.packed_prefix_keys` packs into one int64 key each are checked by one 1-D
  sort (instead of `np.unique(axis=0)`'s sort of row records); the others are lexsorted.
  """
  a = np.asarray(table)
  if a.shape[0] < 2:
    return True
  keys = quantize.packed_prefix_keys(a)
  if keys is not None:
    key = np.sort(keys[-1])
    return not np.any(key[1:] == key[:-1])
  ordered = a[np.lexsort(a.T[::-1])]
  return not np.any(np.all(ordered[1:] == ordered[:-1], axis=1))
