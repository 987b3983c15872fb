"""results/make_table.py: rows per (dataset, tokenizer, vectors, epochs), mean ± std over seeds,
fusions of one row's seeds as their own row (results/fuse_pairs.py makes them), and the in-place
rewrite between markers."""
import json
import os

import numpy as np
import pytest

from r3vae_jax import io
from r3vae_jax.recommender import fusion

from conftest import load_results_script as _load

make_table, fuse_pairs = _load("make_table"), _load("fuse_pairs")


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


def test_cpu_runs_are_a_row_of_their_own(results_dir):
  on_cpu = {**_result(2, 40, 0.0300), "device": "cpu"}
  (results_dir / "a_s2_cpu.json").write_text(json.dumps(on_cpu))
  lines = make_table.table(str(results_dir)).splitlines()
  assert len(lines) == 5
  rows = [line.split(" | ") for line in lines[2:]]
  assert [(r[3], r[4], r[8], r[-1]) for r in rows] == [
      ("40", "2", "0.0380 ± 0.0014", "TestGPU |"), ("40", "1", "0.0300", "cpu |"),
      ("60", "1", "0.0410", "TestGPU |")]


def test_runs_on_other_training_examples_are_a_labelled_row_of_their_own(results_dir):
  """The same row and seed trained on whole sequences (`train.example_window` 0, as the DIGER
  variants) or on the last 20 items (the fixed-table protocol) must not merge into two seeds."""
  whole = _result(0, 40, 0.0300)
  whole["config"]["train"]["example_window"] = 0
  last20 = _result(1, 40, 0.0310)
  last20["config"]["train"]["example_window"] = 20
  (results_dir / "whole_s0.json").write_text(json.dumps(whole))
  (results_dir / "last20_s1.json").write_text(json.dumps(last20))
  rows = [line.split(" | ") for line in make_table.table(str(results_dir)).splitlines()[2:]]
  assert [(r[1], r[3], r[4], r[8]) for r in rows] == [
      ("r3vae", "40", "3", "0.0357 ± 0.0042"),  # a_s0, a_s1 (no field: 20) and last20_s1
      ("r3vae", "60", "1", "0.0410"),
      ("r3vae (whole sequences)", "40", "1", "0.0300")]
  assert rows[2][9] == "0.0716 / 0.0393"  # still beside its tokenizer's references


def test_diger_runs_of_a_commit_that_ignored_the_window_count_as_whole_sequences(tmp_path):
  runs = [{**_result(seed, 40, 0.03), "tokenizer": "diger", "commit": commit}
          for seed, commit in ((0, "f2ae303"), (1, "f2ae303+dirty"), (2, "abc1234"))]
  for run in runs:
    run["config"]["train"]["example_window"] = 20
    (tmp_path / f"d_s{run['seed']}.json").write_text(json.dumps(run))
  rows = [line.split(" | ") for line in make_table.table(str(tmp_path)).splitlines()[2:]]
  assert [(r[1], r[4]) for r in rows] == [("diger", "1"), ("diger (whole sequences)", "2")]


def _fusion(sources, ndcg10, split="test"):
  fused = {"recall@5": 0.05, "recall@10": 0.08, "ndcg@5": 0.035, "ndcg@10": ndcg10}
  return {"kind": "fusion", "split": split, "fused": fused, "members": [], "sources": [
      {"dataset": "beauty", "tokenizer": "r3vae", "variant": "", "vectors": "minilm-text",
       "epochs": epochs, "seed": seed, "device": "TestGPU",
       "wall_time_s": {"tokenize": 10.0, "train": 100.0}} for seed, epochs in sources]}


def test_fusions_of_one_rows_seeds_are_a_row(results_dir):
  fusions = {"f01": _fusion([(0, 40), (1, 40)], 0.0420), "f12": _fusion([(1, 40), (2, 40)], 0.0440),
             "mixed": _fusion([(0, 40), (0, 60)], 0.05),  # two rows: not a row of the table
             "valid": _fusion([(0, 40), (1, 40)], 0.05, split="valid")}
  for name, fused_run in fusions.items():
    (results_dir / f"{name}.json").write_text(json.dumps(fused_run))
  lines = make_table.table(str(results_dir)).splitlines()
  assert len(lines) == 5
  fused = next(line for line in lines if "fused" in line).split(" | ")
  assert fused[1:5] == ["r3vae fused×2", "minilm-text", "40", "2"]
  assert fused[8] == "0.0430 ± 0.0014"
  assert fused[9] == "0.0716 / 0.0393"  # beside the paper's numbers of its tokenizer
  assert fused[12] == "–"  # no collision rate of a fusion
  assert fused[13] == "seeds 0+1, seeds 1+2"
  assert fused[14] == "220 (200)"  # both runs' wall time


def test_fuse_pairs_fuses_each_pair_and_all_of_a_rows_seeds(tmp_path):
  rows, out = tmp_path / "rows", tmp_path / "out"
  rows.mkdir()
  targets = np.arange(4, dtype=np.int32)
  for seed in range(3):
    name = f"beauty_r3vae_default_s{seed}"
    (rows / f"{name}.json").write_text(json.dumps(_result(seed, 60, 0.04)))
    items = np.stack([np.roll(np.arange(10, 20), seed) for _ in targets])
    items[:, seed] = targets  # each seed ranks the target at another position
    fusion.save_ranking(str(rows / f"{name}.test_ranking.npz"), items,
                        np.log(np.full(items.shape, 0.1)), targets)
  (rows / "toys_r3vae_default_s0.test_ranking.npz").write_bytes(b"")  # one seed: no pair
  out.mkdir()
  written = fuse_pairs.fuse_pairs(str(rows), str(out))
  assert sorted(os.path.basename(p) for p in written) == [
      "beauty_r3vae_default_fused_s0+1+2.json", "beauty_r3vae_default_fused_s0+1.json",
      "beauty_r3vae_default_fused_s0+2.json", "beauty_r3vae_default_fused_s1+2.json"]
  pairs, triple = [line.split(" | ") for line in make_table.table(str(out)).splitlines()
                   if "fused" in line]
  assert pairs[1] == "r3vae fused×2" and pairs[3:5] == ["60", "3"]
  assert pairs[13] == "seeds 0+1, seeds 0+2, seeds 1+2"
  assert triple[1] == "r3vae fused×3" and triple[3:5] == ["60", "1"]
  assert triple[13] == "seeds 0+1+2"
  # Each seed put the target where item 10 was; items 11..19 and the target are in all three
  # lists (mass 0.1 each), and the tie goes to the smaller id: the target is first.
  all_three = io.read_json(str(out / "beauty_r3vae_default_fused_s0+1+2.json"))
  assert len(all_three["runs"]) == 3 and all_three["fused"]["ndcg@10"] == 1.0


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


sid_vs_score = _load("sid_vs_score")


def test_spearman_by_hand_with_ties():
  # Ranks (0, 1.5, 1.5, 3) and (0, 1, 2, 3): covariance 4.5, variances 4.5 and 5.
  assert sid_vs_score.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / np.sqrt(22.5))
  assert sid_vs_score.spearman([3, 2, 1], [0.1, 0.2, 0.3]) == pytest.approx(-1.0)
  assert np.isnan(sid_vs_score.spearman([1, 1, 1], [0.1, 0.2, 0.3]))


def _tokenized_workdir(path, codes, sequences):
  """What sid_vs_score reads of a `--mode=tokenize` workdir."""
  from r3vae_jax.data import dataset  # pylint: disable=import-outside-toplevel
  n = len(codes)
  dataset.save_prepared(str(path), dataset.Interactions(
      name="toys", num_items=n, sequences=[np.asarray(s, np.int32) for s in sequences],
      item_titles=[""] * n, item_text=[""] * n))
  io.write_json(str(path / "config.json"), {"dataset": "toys", "tokenizer": "rqvae",
                                            "variant": "", "seed": 0,
                                            "sid": {"levels": 1, "codebook_size": 2}})
  dedup = np.concatenate([codes, np.arange(n)[:, None]], axis=1)  # the collision token
  io.write_npy(str(path / "tokenizer" / "sid_table.npy"), dedup.astype(np.int32))
  io.write_json(str(path / "tokenizer" / "sid_metrics.json"), {"semantic_cohesion": 0.5})


def test_sid_vs_score_lists_tables_and_correlates_scored_ones(tmp_path):
  # Items 0-1 and 2-3 follow each other; the test and validation targets are the last two.
  sequences = [[0, 1, 0, 1, 2, 3], [2, 3, 2, 3, 0, 1]]
  tables = {"follows": [[0], [0], [1], [1]], "mixed": [[0], [1], [0], [1]],
            "halves": [[0], [0], [0], [1]], "candidate": [[1], [1], [0], [0]]}
  specs = []
  for i, (name, codes) in enumerate(tables.items()):
    _tokenized_workdir(tmp_path / name, np.array(codes), sequences)
    row = tmp_path / f"{name}.json"
    io.write_json(str(row), {"metrics": {"test": {"ndcg@10": 0.03 - 0.01 * i}},
                             "sid_metrics": {"collision_rate": 0.5},
                             "config": {"train": {"epochs": 30}}})
    specs.append(str(tmp_path / name) + ("" if name == "candidate" else f"={row}"))
  out = tmp_path / "out.json"
  sid_vs_score.main(str(out), specs)
  result = io.read_json(str(out))
  by_name = {os.path.basename(t["workdir"]): t for t in result["tables"]}
  # Training pairs (first 4 items of each user): (0,1) (1,0) (0,1) and (2,3) (3,2) (2,3).
  assert by_name["follows"]["lift_level1"] == pytest.approx(2.0)  # all agree, chance 1/2
  assert by_name["mixed"]["lift_level1"] == 0.0
  assert by_name["candidate"]["lift_level1"] == pytest.approx(2.0)
  assert "test_ndcg@10" not in by_name["candidate"]
  assert by_name["follows"]["collision_rate"] == 1.0  # of the first sid.levels codes
  assert result["spearman_with_test_ndcg@10"]["toys"]["tables"] == 3
  assert result["spearman_with_test_ndcg@10"]["toys"]["semantic_cohesion"] is None  # all 0.5
  assert result["spearman_with_test_ndcg@10"]["toys"]["lift_level1"] == pytest.approx(
      sid_vs_score.spearman([2.0, 0.0, by_name["halves"]["lift_level1"]], [0.03, 0.02, 0.01]))


def test_fusion_weights_scores_validations_choice_on_test(tmp_path):
  """Run a never ranks the target, with one strong item (0.9); run b ranks it first at 0.5. The
  target leads the mixture from w = 0.7 (0.35 > 0.27), is second for w in 0.1..0.6 and outside
  the top 10 at w = 0 (mass 0, behind a's ten items): validation's best weights are 0.7..1.0,
  and the tie goes to the one nearest 0.5."""
  fusion_weights = _load("fusion_weights")
  users = 3
  targets = np.arange(users, dtype=np.int32) + 100
  a_items = np.tile(np.arange(10, dtype=np.int32), (users, 1))
  a_probs = np.tile([0.9] + [0.01] * 9, (users, 1))
  b_items = np.stack([[t, 50, 51] for t in targets]).astype(np.int32)
  b_probs = np.tile([0.5, 0.3, 0.2], (users, 1))
  for split in ("valid", "test"):
    fusion.save_ranking(str(tmp_path / f"a.{split}_ranking.npz"), a_items, np.log(a_probs),
                        targets)
    fusion.save_ranking(str(tmp_path / f"b.{split}_ranking.npz"), b_items, np.log(b_probs),
                        targets)
  study = fusion_weights.study_pair(f"{tmp_path / 'a'}+{tmp_path / 'b'}")
  second = 1 / np.log2(3)
  assert study["valid_ndcg@10"] == pytest.approx([0.0] + [second] * 6 + [1.0] * 4)
  assert study["chosen_weight"] == 0.7
  assert study["test_at_chosen"] == 1.0 and study["test_at_uniform"] == pytest.approx(second)
  with pytest.raises(SystemExit, match="two ranking prefixes"):
    fusion_weights.study_pair(str(tmp_path / "a"))


def test_code_drift_level_stats_by_hand(tmp_path):
  """Two items, two levels of three codewords. Level 1: item (0,0) is 1 from codeword (1,0) and
  sqrt(10) from (3,1); item (3,0) is 1 from (3,1) and 2 from (1,0): margins sqrt(10)-1 and 1; the
  used codewords' coordinates 1,0,3,1 have RMS sqrt(2.75). Level 2: residuals (-1,0) and (0,-1)
  sit on their codewords, sqrt(2) from the other used one; RMS sqrt(0.5)."""
  drift = _load("diger_code_drift")
  latents = np.array([[0.0, 0.0], [3.0, 0.0]])
  books = np.array([[[1.0, 0.0], [3.0, 1.0], [10.0, 10.0]],
                    [[-1.0, 0.0], [0.0, -1.0], [5.0, 5.0]]])
  codes = np.array([[0, 0], [1, 1]])
  first, second = drift.level_stats(latents, books, codes)
  assert first["codeword_rms"] == pytest.approx(np.sqrt(2.75))
  assert first["margin_median"] == pytest.approx((np.sqrt(10) - 1 + 1) / 2)
  assert first["margin_p10"] == pytest.approx(1 + 0.1 * (np.sqrt(10) - 2))
  assert second["codeword_rms"] == pytest.approx(np.sqrt(0.5))
  assert second["margin_median"] == pytest.approx(np.sqrt(2))
  io.write_json(str(tmp_path / "config.json"), {"tokenizer": "rqvae"})
  with pytest.raises(io.ArtifactError, match="expected a DIGER run"):
    drift.drift(str(tmp_path))


def test_variants_sit_beside_their_method_and_ablations_beside_none(tmp_path):
  rows = {"diger": ("diger", "detached_follow+tokenizer_lr_1e-7"),
          "r3vae_ema": ("r3vae", "ema"), "r3vae_no_sc": ("r3vae", "no_sc")}
  for name, (tokenizer, variant) in rows.items():
    run = {**_result(0, 60, 0.0361), "tokenizer": tokenizer, "variant": variant}
    (tmp_path / f"{name}.json").write_text(json.dumps(run))
  cells = {row[1]: (row[9], row[10]) for row in (
      line.split(" | ") for line in make_table.table(str(tmp_path)).splitlines()[2:])}
  assert cells["diger+detached_follow+tokenizer_lr_1e-7"] == ("– / –", "0.0664 / 0.0365")
  assert cells["r3vae+ema"] == ("0.0716 / 0.0393", "0.0710 / 0.0390")
  assert cells["r3vae+no_sc"] == ("– / –", "– / –")


def test_code_drift_pairs_encoder_leaves_by_path_not_by_order():
  """Keys 2 and 10 sort one way as ints and the other as strings ('10' < '2'): the restored
  checkpoint's string keys must still pair with the live module's int keys."""
  drift = _load("diger_code_drift")
  live = {"layers": {2: {"kernel": np.full(2, 2.0)}, 10: {"kernel": np.full(2, 10.0)}}}
  restored = {"layers": {"10": {"kernel": np.full(2, 10.5)}, "2": {"kernel": np.full(2, 2.5)}}}
  pre, final = drift.leaves_by_path(live), drift.leaves_by_path(restored)
  assert pre.keys() == final.keys() == {"layers/2/kernel", "layers/10/kernel"}
  for key in pre:
    np.testing.assert_allclose(final[key] - pre[key], 0.5)
