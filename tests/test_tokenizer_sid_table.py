"""SID table: collision token, save/load round trip, tables made elsewhere, every bad-table error."""
import json
import os

import numpy as np
import pytest

from r3vae_jax.io import ArtifactError
from r3vae_jax.tokenizer import sid_table


def _codes():
  return np.array([[1, 2], [1, 2], [0, 5], [1, 2], [0, 5], [3, 3]], np.int32)


def test_make_sid_table_appends_rank_in_item_order():
  table = sid_table.make_sid_table(_codes(), max_collisions=4)
  assert table.dtype == np.int32 and table.shape == (6, 3)
  np.testing.assert_array_equal(table[:, 2], [0, 1, 0, 2, 1, 0])
  assert len({tuple(r) for r in table}) == 6


def test_make_sid_table_rejects_too_many_collisions():
  with pytest.raises(ValueError, match=r"3 items share the code tuple \(1, 2\)"):
    sid_table.make_sid_table(_codes(), max_collisions=2)


def test_round_trip(tmp_path):
  table = sid_table.make_sid_table(_codes(), max_collisions=4)
  metrics = {"collision_rate": 0.83, "usage_per_level": [0.5, 0.25], "semantic_cohesion": np.nan}
  path = sid_table.save_sid_table(str(tmp_path), table, metrics, {"tokenizer": "rqkmeans"})
  assert path == os.path.join(str(tmp_path), "tokenizer", "sid_table.npy")
  for where in (str(tmp_path), os.path.dirname(path), path):
    loaded, info = sid_table.load_sid_table(where)
    np.testing.assert_array_equal(loaded, table)
    assert loaded.dtype == np.int32
    assert info["collision_rate"] == 0.83 and info["meta"]["tokenizer"] == "rqkmeans"
    assert info["semantic_cohesion"] is None  # NaN is written as null (strict JSON)
  assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]


def test_table_made_elsewhere_loads(tmp_path):
  path = str(tmp_path / "mine.npy")
  np.save(path, np.array([[0, 1, 0], [0, 1, 1], [2, 0, 0]], np.int64))
  table, info = sid_table.load_sid_table(path)
  assert table.dtype == np.int32 and table.shape == (3, 3) and info == {}
  np.save(path, np.array([[0.0, 1.0], [1.0, 0.0]]))  # whole-number floats are castable
  assert sid_table.load_sid_table(path)[0].dtype == np.int32


@pytest.mark.parametrize("bad, message", [
    (np.array([0, 1, 2]), "must be 2-D"),
    (np.zeros((3, 1), np.int32), "must be 2-D"),
    (np.zeros((0, 3), np.int32), "must be 2-D"),
    (np.array([[0, 1], [0, 2]], np.float32) + 0.5, "non-integer values"),
    (np.array([["a", "b"]]), "must hold integers"),
    (np.array([[0, 1], [-1, 2]]), r"negative codes \(row 1"),
    (np.array([[0, 2**40], [1, 0]]), "beyond int32"),
    (np.array([[0, 1, 0], [2, 2, 0], [0, 1, 0]]), r"unique; items \[0, 2\] share \[0, 1, 0\]"),
])
def test_bad_tables_are_refused(tmp_path, bad, message):
  path = str(tmp_path / "bad.npy")
  np.save(path, bad)
  with pytest.raises(ArtifactError, match=message):
    sid_table.load_sid_table(path)
  with pytest.raises(ArtifactError, match=message):
    sid_table.save_sid_table(str(tmp_path), bad, {}, {})


def test_missing_and_mismatched_files(tmp_path):
  with pytest.raises(ArtifactError, match="no SID table found"):
    sid_table.load_sid_table(str(tmp_path))
  with pytest.raises(ArtifactError, match="file not found"):
    sid_table.load_sid_table(str(tmp_path / "absent.npy"))
  table = sid_table.make_sid_table(_codes(), max_collisions=4)
  path = sid_table.save_sid_table(str(tmp_path), table, {}, {})
  np.save(path, table[::-1])  # another run's table beside this run's JSON
  with pytest.raises(ArtifactError, match="different runs"):
    sid_table.load_sid_table(str(tmp_path))
  json_path = os.path.join(os.path.dirname(path), sid_table.METRICS_FILE)
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump([1, 2], f)
  with pytest.raises(ArtifactError, match="meta.table_fingerprint"):
    sid_table.load_sid_table(path)
  with open(path, "wb") as f:
    f.write(b"not an npy")
  with pytest.raises(ArtifactError, match="not a readable .npy"):
    sid_table.load_sid_table(path)


def test_rows_unique_matches_np_unique_for_packed_and_wide_rows():
  rng = np.random.default_rng(0)
  for high, columns in ((4, 3), (300, 4), (np.iinfo(np.int32).max, 3)):  # 6, 36, 93 bits a row
    for rows in (1, 2, 50, 400):
      table = rng.integers(0, high, (rows, columns)).astype(np.int32)
      table[:, -1] = rng.integers(0, 2, rows)  # duplicates likely when high is small
      expected = np.unique(table, axis=0).shape[0] == rows
      assert sid_table.rows_unique(table) == expected
      assert sid_table.rows_unique(np.unique(table, axis=0))
  wide = np.array([[2**31 - 1, 5, 0], [2**31 - 1, 5, 1], [2**31 - 1, 5, 0]], np.int32)
  assert not sid_table.rows_unique(wide) and sid_table.rows_unique(wide[:2])
  negative = np.array([[-1, 0], [0, -1], [-1, 0]], np.int32)  # would collide if packed
  assert not sid_table.rows_unique(negative) and sid_table.rows_unique(negative[:2])
