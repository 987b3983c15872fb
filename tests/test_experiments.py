"""experiments/: seed fusion of a row, SID-table statistics against test NDCG@10, DIGER code
drift; each checked by hand on tiny inputs."""
import json
import os

import numpy as np
import pytest

from r3vae_jax import io
from r3vae_jax.recommender import fusion

from conftest import load_results_script as _load

make_tables, fuse_pairs = _load("make_tables"), _load("fuse_pairs")


def _result(seed: int, epochs: int, ndcg10: float) -> dict:
  test = {"recall@5": 0.04, "recall@10": 0.07, "ndcg@5": 0.03, "ndcg@10": ndcg10}
  return {"kind": "experiment", "dataset": "beauty", "tokenizer": "r3vae", "variant": "",
          "vectors": "minilm-text", "seed": seed, "config": {"train": {"epochs": epochs}},
          "metrics": {"test": test}, "wall_time_s": {"tokenize": 10.0, "train": 100.0},
          "train": {"best_epoch": epochs, "finished": "epochs"},
          "sid_metrics": {"collision_rate": 0.15}, "device": "TestGPU"}


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
  table = make_tables.full_table(make_tables.load_rows(str(out)))
  pairs, triple = [line.split(" | ") for line in table.splitlines()
                   if "fused" in line]
  assert pairs[1] == "r3vae fused×2" and (pairs[3], pairs[5]) == ("60", "3")
  assert pairs[13] == "seeds 0+1, seeds 0+2, seeds 1+2"
  assert triple[1] == "r3vae fused×3" and (triple[3], triple[5]) == ("60", "1")
  assert triple[13] == "seeds 0+1+2"
  # Each seed put the target where item 10 was; items 11..19 and the target are in all three
  # lists (mass 0.1 each), and the tie goes to the smaller id: the target is first.
  all_three = io.read_json(str(out / "beauty_r3vae_default_fused_s0+1+2.json"))
  assert len(all_three["runs"]) == 3 and all_three["fused"]["ndcg@10"] == 1.0


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
