"""Late fusion of runs (recommender/fusion.py, r3vae_jax/fuse.py): the mixture against a case
worked by hand and against a per-user dictionary over random rankings; ranking files written,
read back and refused with the file named; the command line's metrics."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from r3vae_jax import fuse, io
from r3vae_jax.recommender import fusion, ranking

NEG_INF = -np.inf


def _ranking(items, probs, targets=None):
  items = np.asarray(items, np.int32)
  with np.errstate(divide="ignore"):
    log_probs = np.where(items >= 0, np.log(np.asarray(probs, np.float64)), NEG_INF)
  targets = np.zeros(items.shape[0], np.int32) if targets is None else np.asarray(targets)
  return fusion.Ranking(items, log_probs.astype(np.float32), targets.astype(np.int32))


def test_mixture_worked_by_hand():
  # Run a: 3 (0.5), 1 (0.3), 7 (0.1); run b: 1 (0.4), 9 (0.35), an empty slot.
  # Mixture (1/2 each): 1 -> 0.35, 3 -> 0.25, 9 -> 0.175, 7 -> 0.05.
  a = _ranking([[3, 1, 7]], [[0.5, 0.3, 0.1]])
  b = _ranking([[1, 9, -1]], [[0.4, 0.35, 1.0]])
  fused = fusion.mixture([a, b], depth=5)
  np.testing.assert_array_equal(fused.items, [[1, 3, 9, 7, -1]])
  np.testing.assert_allclose(np.exp(fused.log_probs[0, :4]), [0.35, 0.25, 0.175, 0.05],
                             rtol=1e-6)
  assert fused.log_probs[0, 4] == NEG_INF
  # Weights 3:1 favour run a: 3 -> 0.375, 1 -> 0.325, 9 -> 0.0875, 7 -> 0.075.
  weighted = fusion.mixture([a, b], weights=[3, 1])
  np.testing.assert_array_equal(weighted.items, [[3, 1, 9]])
  np.testing.assert_allclose(np.exp(weighted.log_probs[0]), [0.375, 0.325, 0.0875], rtol=1e-6)


def test_mixture_sums_each_item_alone_exactly():
  """Equal masses stay equal (ties by item id) and a tiny mass keeps its digits, however much
  mass the items before it hold (a running sum differenced would lose both)."""
  a = _ranking([[3, 1, 2, 9]], [[0.3, 0.3, 0.3, 1e-12]])
  b = _ranking([[4, 5, 9, 8]], [[0.31, 0.29, 3e-13, 0.2]])
  fused = fusion.mixture([a, b], depth=8)
  np.testing.assert_array_equal(fused.items, [[4, 1, 2, 3, 5, 8, 9, -1]])
  expected = 0.5 * (np.exp(a.log_probs[0, 3].astype(np.float64))
                    + np.exp(b.log_probs[0, 2].astype(np.float64)))
  assert np.exp(float(fused.log_probs[0, 6])) == pytest.approx(expected, rel=1e-6)


def test_mixture_of_one_run_is_that_run_and_ties_go_to_the_smaller_id():
  run = _ranking([[4, 2, 8], [5, -1, -1]], [[0.5, 0.2, 0.1], [0.9, 1, 1]], targets=[4, 0])
  alone = fusion.mixture([run])
  np.testing.assert_array_equal(alone.items, run.items)
  np.testing.assert_array_equal(alone.log_probs, run.log_probs)
  tie = fusion.mixture([_ranking([[6, 3]], [[0.3, 0.3]])])
  np.testing.assert_array_equal(tie.items, [[3, 6]])


def _brute_force(rankings, weights, depth):
  weights = np.asarray(weights, np.float64) / np.sum(weights)
  items, probs = [], []
  for u in range(rankings[0].items.shape[0]):
    mass = {}
    for w, r in zip(weights, rankings):
      for item, lp in zip(r.items[u], r.log_probs[u]):
        if item >= 0:
          mass[int(item)] = mass.get(int(item), 0.0) + w * math.exp(float(lp))
    best = sorted(mass.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
    items.append([i for i, _ in best] + [-1] * (depth - len(best)))
    probs.append([p for _, p in best] + [0.0] * (depth - len(best)))
  return np.array(items), np.array(probs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_equals_a_per_user_dictionary(seed):
  rng = np.random.default_rng(seed)
  users, num_items = 40, 12
  rankings = []
  for width in (6, 4, 6):
    items = np.stack([rng.choice(num_items, width, replace=False) for _ in range(users)])
    items[rng.random(items.shape) < 0.15] = -1  # empty slots (seen items dropped)
    probs = np.sort(rng.dirichlet(np.ones(num_items), users)[:, :width], axis=1)[:, ::-1]
    rankings.append(_ranking(items, probs, targets=np.arange(users) % num_items))
  weights = rng.random(3) + 0.1
  fused = fusion.mixture(rankings, weights=weights, depth=8)
  items, probs = _brute_force(rankings, weights, 8)
  np.testing.assert_array_equal(fused.items, items)
  np.testing.assert_allclose(np.exp(fused.log_probs), probs, rtol=1e-5, atol=1e-12)


def test_mixture_refuses_other_users_and_bad_weights():
  a = _ranking([[1, 2]], [[0.5, 0.2]], targets=[1])
  with pytest.raises(ValueError, match="ranking 1 is of other users"):
    fusion.mixture([a, _ranking([[1, 2]], [[0.5, 0.2]], targets=[2])])
  with pytest.raises(ValueError, match="weights"):
    fusion.mixture([a, a], weights=[1.0])
  with pytest.raises(ValueError, match="weights"):
    fusion.mixture([a, a], weights=[-1.0, 2.0])
  with pytest.raises(ValueError, match="at least one"):
    fusion.mixture([])
  with pytest.raises(ValueError, match=r"run 1 has items \(2, 2\)"):  # users differ
    fusion.mix([a.items, np.ones((2, 2), np.int32)], [a.log_probs, np.zeros((2, 2))])
  with pytest.raises(ValueError, match=r"run 0 has items \(1, 2\) and log_probs \(1, 1\)"):
    fusion.mix([a.items], [a.log_probs[:, :1]])
  with pytest.raises(ValueError, match="as many log_probs"):
    fusion.mix([a.items, a.items], [a.log_probs])


def test_ranking_files_round_trip_and_bad_files_name_the_path(tmp_path):
  run = _ranking([[4, 2, -1]], [[0.5, 0.2, 1.0]], targets=[2])
  path = str(tmp_path / "test_ranking.npz")
  fusion.save_ranking(path, run.items, run.log_probs, run.targets)
  back = fusion.load_ranking(path)
  for key in fusion.RANKING_KEYS:
    np.testing.assert_array_equal(getattr(back, key), getattr(run, key))
  assert os.listdir(tmp_path) == ["test_ranking.npz"]  # no temp file left behind

  with pytest.raises(io.ArtifactError, match="no ranking file"):
    fusion.load_ranking(str(tmp_path / "missing.npz"))
  np.savez(tmp_path / "lacks.npz", items=run.items, targets=run.targets)
  with pytest.raises(io.ArtifactError, match=r"lacks\.npz: ranking file lacks \['log_probs'\]"):
    fusion.load_ranking(str(tmp_path / "lacks.npz"))
  np.savez(tmp_path / "shapes.npz", items=run.items, log_probs=run.log_probs[:, :2],
           targets=run.targets)
  with pytest.raises(io.ArtifactError, match="shapes.npz: expected items"):
    fusion.load_ranking(str(tmp_path / "shapes.npz"))
  (tmp_path / "text.npz").write_text("not a zip")
  with pytest.raises(io.ArtifactError, match="text.npz: not a ranking"):
    fusion.load_ranking(str(tmp_path / "text.npz"))
  with pytest.raises(io.ArtifactError, match="log-probabilities"):
    fusion.save_ranking(str(tmp_path / "pos.npz"), run.items, -run.log_probs, run.targets)
  assert not os.path.exists(tmp_path / "pos.npz")


def test_drop_seen_moves_the_scores_with_their_items():
  ranked = np.array([[5, 1, 7, 2], [3, -1, 4, 9]])
  scores = np.array([[-1.0, -2.0, -3.0, -4.0], [-0.5, -9.0, -1.5, -2.5]])
  seen = np.array([[1, 2], [-1, 9]])
  items, moved = ranking.drop_seen(ranked, seen, scores)
  np.testing.assert_array_equal(items, [[5, 7, -1, -1], [3, 4, -1, -1]])
  np.testing.assert_array_equal(moved, [[-1.0, -3.0, NEG_INF, NEG_INF],
                                        [-0.5, -1.5, NEG_INF, NEG_INF]])


def test_fuse_runs_scores_each_run_and_the_mixture(tmp_path):
  users = 6
  targets = np.arange(users, dtype=np.int32)
  # Run a ranks each user's target second, run b first for even users only.
  a_items = np.stack([[t + 10, t, t + 20, t + 30, t + 40] for t in targets])
  b_items = np.stack([[t, t + 50, t + 60, t + 70, t + 80] if t % 2 == 0 else
                      [t + 50, t + 60, t + 70, t + 80, t + 90] for t in targets])
  probs = [[0.4, 0.3, 0.1, 0.05, 0.05]] * users
  runs = []
  for name, items in (("a", a_items), ("b", b_items)):
    workdir = tmp_path / name
    fusion.save_ranking(str(workdir / "recommender" / "test_ranking.npz"), items,
                        np.log(probs), targets)
    runs.append(str(workdir))
  result = fuse.fuse_runs(runs, "test", None, (1, 5))
  assert result["runs"][0].endswith(os.path.join("a", "recommender", "test_ranking.npz"))
  assert result["members"][0]["recall@1"] == 0.0 and result["members"][0]["recall@5"] == 1.0
  assert result["members"][1]["recall@1"] == 0.5 and result["members"][1]["recall@5"] == 0.5
  # Mixture: even users' target has 0.35 + 0.2 (first); odd users' 0.15, behind b's 0.2 and
  # a's 0.2 (third).
  fused = result["fused"]
  assert fused["recall@1"] == 0.5 and fused["recall@5"] == 1.0
  assert fused["ndcg@5"] == pytest.approx(0.5 * 1.0 + 0.5 / math.log2(4))
  with pytest.raises(io.ArtifactError, match="no ranking file"):
    fuse.fuse_runs(runs, "valid", None, (1,))


def test_run_source_finds_the_rows_results_json(tmp_path, monkeypatch):
  run = _ranking([[1, 2]], [[0.5, 0.2]], targets=[1])
  experiment = {"kind": "experiment", "dataset": "toys", "tokenizer": "r3vae", "variant": "",
                "vectors": "interactions-svd", "seed": 2, "device": "TestGPU", "commit": "abc",
                "wall_time_s": {"train": 1.0}, "config": {"train": {"epochs": 45}}}
  # launch/paper_rows.sh: <row>.json beside <row>.test_ranking.npz.
  row = tmp_path / "toys_r3vae_interactions-svd_s2"
  fusion.save_ranking(f"{row}.test_ranking.npz", run.items, run.log_probs, run.targets)
  io.write_json(f"{row}.json", experiment)
  source = fuse.run_source(f"{row}.test_ranking.npz")
  assert source["epochs"] == 45 and source["seed"] == 2 and source["dataset"] == "toys"
  assert source["results"] == f"{row}.json"
  # A relative ranking path gives a relative results path (committed fusion JSONs).
  monkeypatch.chdir(tmp_path)
  assert fuse.run_source(f"{row.name}.test_ranking.npz")["results"] == f"{row.name}.json"
  # A workdir: recommender/test_ranking.npz and results.json at its root.
  workdir = tmp_path / "run"
  fusion.save_ranking(str(workdir / "recommender" / "test_ranking.npz"), run.items,
                      run.log_probs, run.targets)
  assert fuse.run_source(fuse.ranking_path(str(workdir), "test")) is None  # not run to the end
  io.write_json(str(workdir / "results.json"), experiment)
  assert fuse.run_source(fuse.ranking_path(str(workdir), "test"))["vectors"] == "interactions-svd"
  result = fuse.fuse_runs([str(workdir), f"{row}.test_ranking.npz"], "test", None, (1, 2))
  assert [s["seed"] for s in result["sources"]] == [2, 2]


def test_command_line_prints_and_writes_the_fusion(tmp_path):
  a = _ranking([[1, 2, 3]], [[0.5, 0.2, 0.1]], targets=[2])
  b = _ranking([[2, 4, 5]], [[0.6, 0.1, 0.1]], targets=[2])
  paths = []
  for name, run in (("a", a), ("b", b)):
    paths.append(str(tmp_path / f"{name}.test_ranking.npz"))
    fusion.save_ranking(paths[-1], run.items, run.log_probs, run.targets)
  out = tmp_path / "fused.json"
  done = subprocess.run([sys.executable, "-m", "r3vae_jax.fuse", f"--runs={','.join(paths)}",
                         "--ks=1,3", "--weights=1,1", f"--output={out}"],
                        capture_output=True, text=True, check=True)
  assert "fused: ndcg@1=1.0000" in done.stdout  # 2 leads the mixture (0.4 vs 0.25 for 1)
  assert "fused - mean of runs: ndcg@1=+0.5000" in done.stdout
  written = io.read_json(str(out))
  assert written["kind"] == "fusion" and written["weights"] == [1.0, 1.0]
  assert written["sources"] == [None, None]  # no row JSON beside these files
  bad = subprocess.run([sys.executable, "-m", "r3vae_jax.fuse", f"--runs={tmp_path / 'none'}"],
                       capture_output=True, text=True)
  assert bad.returncode != 0 and "no ranking file" in bad.stderr
