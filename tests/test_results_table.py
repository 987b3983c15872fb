"""results/make_tables.py: rows from the JSONs' fields, mean ± std over seeds, fused seeds as a
row, the second protocol as a second column group, and docs/results.md and README.md's headline
block equal to what the committed JSONs give."""
import json

import pytest

from conftest import REPO
from conftest import load_results_script as _load

make_tables = _load("make_tables")


def _result(seed: int, epochs: int, ndcg10: float, **fields) -> dict:
  test = {"recall@5": 0.04, "recall@10": 0.07, "ndcg@5": 0.03, "ndcg@10": ndcg10}
  return {"kind": "experiment", "dataset": "beauty", "tokenizer": "r3vae", "variant": "",
          "vectors": "minilm-text", "seed": seed, "config": {"train": {"epochs": epochs}},
          "metrics": {"test": test}, "wall_time_s": {"tokenize": 10.0, "train": 100.0},
          "train": {"best_epoch": epochs, "finished": "epochs"},
          "sid_metrics": {"collision_rate": 0.15}, "device": "TestGPU", **fields}


def _write(directory, runs: dict):
  for name, run in runs.items():
    (directory / f"{name}.json").write_text(json.dumps(run))


def _rows(directory) -> list[list[str]]:
  table = make_tables.full_table(make_tables.load_rows(str(directory)))
  return [line.split(" | ") for line in table.splitlines()[2:]]


def test_committed_tables_are_what_the_jsons_give():
  for path, text in make_tables.expected(str(REPO)).items():
    assert (REPO / path).read_text(encoding="utf-8") == text, (
        f"{path} is stale: run python results/make_tables.py")


def test_rows_group_by_epochs_with_mean_and_std(tmp_path):
  _write(tmp_path, {"x": _result(0, 40, 0.0370), "y": _result(1, 40, 0.0390),
                    "z": _result(0, 60, 0.0410), "other": {"kind": "sweep"}})
  forty, sixty = _rows(tmp_path)
  assert (forty[3], forty[5], sixty[3], sixty[5]) == ("40", "2", "60", "1")
  assert forty[9] == "0.0380 ± 0.0014"  # mean, sample std of 0.0370 and 0.0390
  assert sixty[9] == "0.0410"
  assert forty[10] == "0.0716 / 0.0393"  # the R3-VAE paper's Beauty numbers
  assert forty[14] == "110 (100)"  # wall s (train)


def test_file_names_do_not_make_rows(tmp_path):
  _write(tmp_path, {"beauty_rqvae_s0": _result(0, 40, 0.0370),
                    "anything": _result(1, 40, 0.0390)})
  assert len(_rows(tmp_path)) == 1


def test_cpu_runs_and_other_training_examples_are_rows_of_their_own(tmp_path):
  whole = _result(2, 40, 0.0300)
  whole["config"]["train"]["example_window"] = 0
  last20 = _result(1, 40, 0.0310)
  last20["config"]["train"]["example_window"] = 20
  _write(tmp_path, {"a": _result(0, 40, 0.0370), "b": last20, "w": whole,
                    "c": _result(3, 40, 0.0200, device="cpu")})
  rows = [(r[1], r[4], r[5], r[9], r[-1]) for r in _rows(tmp_path)]
  assert rows == [("r3vae", "last 20", "2", "0.0340 ± 0.0042", "TestGPU |"),
                  ("r3vae", "last 20", "1", "0.0200", "cpu |"),
                  ("r3vae", "whole sequences", "1", "0.0300", "TestGPU |")]


def test_method_comes_from_method_then_preset_then_tokenizer_and_variant(tmp_path):
  _write(tmp_path, {
      "a": _result(0, 30, 0.02, method="sasrec", tokenizer=None),
      "b": _result(0, 60, 0.03, tokenizer="diger", preset="diger"),
      "c": _result(0, 60, 0.04, tokenizer="diger", variant="detached_follow"),
      "d": _result(0, 40, 0.05, variant="no_sc")})
  cells = {r[1]: (r[10], r[11]) for r in _rows(tmp_path)}
  assert cells == {"sasrec": ("– / –", "– / –"), "diger": ("– / –", "0.0664 / 0.0365"),
                   "diger+detached_follow": ("– / –", "0.0664 / 0.0365"),
                   "r3vae+no_sc": ("– / –", "– / –")}  # an ablation has no published number


def test_full_ranking_metrics_are_a_second_column_group(tmp_path):
  run = _result(0, 60, 0.0410)
  run["metrics"]["test_full_ranking"] = {"recall@5": 0.03, "recall@10": 0.06, "ndcg@5": 0.02,
                                         "ndcg@10": 0.0350}
  _write(tmp_path, {"a": run, "b": _result(1, 60, 0.0400)})
  table = make_tables.full_table(make_tables.load_rows(str(tmp_path))).splitlines()
  assert table[0].split(" | ")[10:12] == ["R@10, seen kept", "N@10, seen kept"]
  row = table[2].split(" | ")
  assert (row[9], row[10], row[11]) == ("0.0405 ± 0.0007", "0.0600", "0.0350")  # one seed has it
  head = make_tables.headline(make_tables.load_rows(str(tmp_path)))
  assert "Test, full ranking, seen items kept:" in head
  r3vae = [line for line in head.splitlines() if line.startswith("| R3-VAE |")]
  assert [line.split(" | ")[1] for line in r3vae] == ["0.0405 ± 0.0007 (2)", "0.0350 (1)"]


def test_fusions_of_one_rows_seeds_are_a_row(tmp_path):
  def fusion(seeds, ndcg10, epochs=(40, 40), split="test"):
    fused = {"recall@5": 0.05, "recall@10": 0.08, "ndcg@5": 0.035, "ndcg@10": ndcg10}
    return {"kind": "fusion", "split": split, "fused": fused, "sources": [
        {"dataset": "beauty", "tokenizer": "r3vae", "variant": "", "vectors": "minilm-text",
         "epochs": e, "seed": s, "device": "TestGPU",
         "wall_time_s": {"tokenize": 10.0, "train": 100.0}} for s, e in zip(seeds, epochs)]}
  _write(tmp_path, {"r": _result(0, 40, 0.04), "f01": fusion((0, 1), 0.0420),
                    "f12": fusion((1, 2), 0.0440), "mixed": fusion((0, 0), 0.05, (40, 60)),
                    "valid": fusion((0, 1), 0.05, split="valid")})
  rows = _rows(tmp_path)
  assert len(rows) == 2
  fused = rows[1]
  assert (fused[1], fused[3], fused[5], fused[9]) == ("r3vae fused×2", "40", "2",
                                                      "0.0430 ± 0.0014")
  assert fused[10] == "0.0716 / 0.0393"  # beside the paper's numbers of its method
  assert fused[12] == "–"  # no collision rate of a fusion
  assert fused[13] == "seeds 0+1, seeds 1+2"
  assert fused[14] == "220 (200)"  # both runs' wall time


def test_headline_takes_each_datasets_published_row(tmp_path):
  _write(tmp_path, {"a": _result(0, 40, 0.0370), "b": _result(0, 60, 0.0410),
                    "c": _result(1, 60, 0.0412), "d": {**_result(0, 45, 0.0369),
                                                       "dataset": "toys"}})
  head = make_tables.headline(make_tables.load_rows(str(tmp_path)))
  r3vae = next(line for line in head.splitlines() if line.startswith("| R3-VAE |")).split(" | ")
  assert r3vae[1] == "0.0411 ± 0.0001 (2)"  # the 60-epoch row, not the 40-epoch one
  assert r3vae[3] == "–" and r3vae[5] == "0.0369 (1)"  # no Sports run; Toys at 45 epochs
  assert "Test, full ranking" not in head


def test_block_outside_its_markers_is_kept_and_a_missing_marker_is_an_error():
  start, end = make_tables.START, make_tables.END
  doc = f"intro\n{start}\nold\n{end}\nafter\n"
  assert make_tables.with_block(doc, "NEW", "x.md") == f"intro\n{start}\nNEW\n{end}\nafter\n"
  with pytest.raises(SystemExit, match="error: x.md: expected a line"):
    make_tables.with_block("no markers\n", "NEW", "x.md")
