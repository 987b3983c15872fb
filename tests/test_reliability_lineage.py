"""Artifact lineage: content fingerprints, what a rerun invalidates, the most upstream stale
artifact named."""
import json
import pathlib
import sys

import numpy as np
import pytest

from r3vae_jax import io, lineage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "bad_inputs"))
import reliability_harness as rh  # pylint: disable=g-import-not-at-top,wrong-import-position


def _chain(workdir: pathlib.Path) -> None:
  lineage.record(str(workdir), "data", "d1", {})
  lineage.record(str(workdir), "vectors", "v1", {"data": "d1"})
  lineage.record(str(workdir), "sid_table", "s1", {"data": "d1", "vectors": "v1"})
  lineage.record(str(workdir), "recommender", "r1", {"data": "d1", "sid_table": "s1"})


def test_consistent_inputs_pass(tmp_path):
  _chain(tmp_path)
  lineage.check(str(tmp_path), {"data": "d1", "sid_table": "s1"}, uses=("recommender",))


def test_no_lineage_file_is_not_checked(tmp_path):
  lineage.check(str(tmp_path), {"data": "anything"})


def test_the_most_upstream_stale_artifact_is_named(tmp_path):
  _chain(tmp_path)
  lineage.record(str(tmp_path), "data", "d2", {})  # prepare ran again on other data
  with pytest.raises(lineage.LineageError,
                     match=r"vectors\.npy: made from .*data/sequences\.npz with fingerprint d1, "
                           r"but that file now holds d2 .*rerun --mode=vectors and the stages"):
    lineage.check(str(tmp_path), {"data": "d2", "sid_table": "s1"}, uses=("recommender",))


def test_a_replaced_file_is_named(tmp_path):
  _chain(tmp_path)
  with pytest.raises(lineage.LineageError,
                     match=r"sid_table\.npy: content \(fingerprint s9\) differs from what "
                           r"--mode=tokenize wrote \(fingerprint s1"):
    lineage.check(str(tmp_path), {"data": "d1", "sid_table": "s9"})


def test_rerun_stage_records_itself_and_unknown_names_are_refused(tmp_path):
  _chain(tmp_path)
  lineage.record(str(tmp_path), "sid_table", "s2", {"data": "d1", "vectors": "v1"}, stage="train")
  entry = lineage.read(str(tmp_path))["sid_table"]
  assert entry == {"fingerprint": "s2", "stage": "train", "made_from": {"data": "d1",
                                                                         "vectors": "v1"}}
  with pytest.raises(ValueError, match="unknown artifact 'model'"):
    lineage.record(str(tmp_path), "model", "m", {})


def test_prepare_twice_on_the_same_data_invalidates_nothing(tmp_path):
  """Fingerprints are of content: the same data prepared again keeps its fingerprint, other
  data of the same size does not."""
  from r3vae_jax import main  # pylint: disable=g-import-not-at-top
  prepare = main._stage_prepare  # pylint: disable=protected-access
  prepare(rh.tiny_config(), str(tmp_path))
  first = lineage.fingerprint_of(str(tmp_path), "data")
  (tmp_path / "data" / "sequences.npz").unlink()
  prepare(rh.tiny_config(), str(tmp_path))
  assert lineage.fingerprint_of(str(tmp_path), "data") == first
  prepare(rh.tiny_config(data__synthetic__seed=5), str(tmp_path))
  other = json.loads((tmp_path / "data" / "items.json").read_text())["num_items"]
  assert other == 200 and lineage.fingerprint_of(str(tmp_path), "data") != first


def test_data_fingerprint_sees_every_part():
  seqs = [np.array([0, 1, 2]), np.array([2, 1])]
  base = lineage.data_fingerprint(seqs, 3, ["a", "b", "c"], None)
  assert base == lineage.data_fingerprint([s.astype(np.int64) for s in seqs], 3,
                                          ["a", "b", "c"], None)
  variants = [([np.array([0, 1]), np.array([2, 2, 1])], 3, ["a", "b", "c"], None),
              ([np.array([0, 1, 2]), np.array([1, 2])], 3, ["a", "b", "c"], None),
              (seqs, 4, ["a", "b", "c"], None), (seqs, 3, ["a", "b", "d"], None),
              (seqs, 3, ["a", "b", "c"], ["x", "y", "z"])]
  assert len({base} | {lineage.data_fingerprint(*v) for v in variants}) == 6
  assert io.fingerprint_json(["x"]) != io.fingerprint_json(["y"])
