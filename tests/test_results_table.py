"""results/make_table.py: rows per (dataset, tokenizer, vectors, epochs), mean ± std over seeds,
and the in-place rewrite between markers."""
import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "results", "make_table.py")
_SPEC = importlib.util.spec_from_file_location("make_table", _PATH)
make_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(make_table)


def _result(seed: int, epochs: int, ndcg10: float) -> dict:
  test = {"recall@5": 0.04, "recall@10": 0.07, "ndcg@5": 0.03, "ndcg@10": ndcg10}
  return {"kind": "experiment", "dataset": "beauty", "tokenizer": "r3vae", "variant": "",
          "vectors": "minilm-text", "seed": seed, "config": {"train": {"epochs": epochs}},
          "metrics": {"test": test}, "wall_time_s": {"tokenize": 10.0, "train": 100.0},
          "train": {"best_epoch": epochs, "finished": "epochs"},
          "sid_metrics": {"collision_rate": 0.15}, "device": "TestGPU"}


@pytest.fixture
def results_dir(tmp_path):
  runs = {"a_s0": _result(0, 40, 0.0370), "a_s1": _result(1, 40, 0.0390),
          "b_s0": _result(0, 60, 0.0410)}
  for name, run in runs.items():
    (tmp_path / f"{name}.json").write_text(json.dumps(run))
  (tmp_path / "other.json").write_text(json.dumps({"kind": "sweep"}))  # not a row
  return tmp_path


def test_rows_group_by_epochs_with_mean_and_std(results_dir):
  lines = make_table.table(str(results_dir)).splitlines()
  assert len(lines) == 4  # header, rule, one row per epochs value
  forty, sixty = lines[2].split(" | "), lines[3].split(" | ")
  assert forty[3:5] == ["40", "2"] and sixty[3:5] == ["60", "1"]
  assert forty[8] == "0.0380 ± 0.0014"  # mean, sample std of 0.0370 and 0.0390
  assert sixty[8] == "0.0410"
  assert forty[9] == "0.0716 / 0.0393"  # the paper's Beauty R3-VAE numbers
  assert forty[14] == "110 (100)"  # wall s (train)


def test_rewrite_between_markers_keeps_the_rest(results_dir, tmp_path):
  doc = tmp_path / "doc.md"
  doc.write_text(f"intro\n{make_table.START}\nold table\n{make_table.END}\nafter\n")
  make_table.replace_block(str(doc), "NEW")
  assert doc.read_text() == f"intro\n{make_table.START}\nNEW\n{make_table.END}\nafter\n"


def test_file_without_markers_is_an_error_and_unchanged(tmp_path):
  doc = tmp_path / "doc.md"
  doc.write_text("no markers here\n")
  with pytest.raises(SystemExit, match="doc.md: expected a line"):
    make_table.replace_block(str(doc), "NEW")
  assert doc.read_text() == "no markers here\n"
