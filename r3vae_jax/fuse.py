"""The command line of late fusion: finished runs' rankings mixed into one (recommender/fusion.py).

  python -m r3vae_jax.fuse --runs=/tmp/beauty_r3vae_s0,/tmp/beauty_r3vae_s1 --output=fused.json

A run is a workdir evaluated by `--mode=evaluate` or `--mode=all` (its
`recommender/{split}_ranking.npz` is read) or such an .npz file itself (`launch/paper_rows.sh`
copies them beside each row's JSON). Prints and writes Recall/NDCG@K of every run alone (from the
same files) and of their mixture.
"""
from __future__ import annotations

import os
import re

from absl import app
from absl import flags
import numpy as np

from r3vae_jax import io
from r3vae_jax.recommender import fusion, ranking

_RUNS = flags.DEFINE_list("runs", None, "Workdirs or *_ranking.npz files to fuse (at least one).")
_SPLIT = flags.DEFINE_enum("split", "test", ["valid", "test"], "Which split's rankings.")
_WEIGHTS = flags.DEFINE_list("weights", None, "Mixture weights, one per run (default uniform).")
_KS = flags.DEFINE_list("ks", ["5", "10"], "Recall/NDCG cut-offs.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the JSON (default: print only).")


def ranking_path(run: str, split: str) -> str:
  """The ranking file of `run` (a workdir or an .npz path) on `split`."""
  return run if run.endswith(".npz") else os.path.join(run, "recommender",
                                                       f"{split}_ranking.npz")


SOURCE_KEYS = ("dataset", "tokenizer", "variant", "vectors", "seed", "device", "commit",
               "wall_time_s")


def run_source(path: str) -> dict | None:
  """What the results JSON of the run behind the ranking file `path` says about it (dataset,
  tokenizer, variant, vectors, seed, device, commit, wall_time_s, epochs, example_window), or
  None where there is none: `<row>.json` beside `<row>.<split>_ranking.npz`
  (`launch/paper_rows.sh`), or the workdir's `results.json` (`--mode=all`). `results` is relative
  (to the working directory) where `path` is, so a committed fusion JSON names no machine's
  folders."""
  folder, name = os.path.split(os.path.abspath(path))
  row = re.fullmatch(r"(.+)\.(valid|test)_ranking\.npz", name)
  if row:
    candidate = os.path.join(folder, row.group(1) + ".json")
  else:
    candidate = os.path.join(os.path.dirname(folder), "results.json")
  if not os.path.isfile(candidate):
    return None
  result = io.read_json(candidate)
  if not isinstance(result, dict) or result.get("kind") != "experiment":
    return None
  source = {k: result[k] for k in SOURCE_KEYS if k in result}
  train = result.get("config", {}).get("train", {})
  source["epochs"], source["example_window"] = train.get("epochs"), train.get("example_window")
  source["results"] = candidate if os.path.isabs(path) else os.path.relpath(candidate)
  return source


def fuse_runs(runs: list[str], split: str, weights: list[float] | None, ks: tuple[int, ...]
              ) -> dict:
  """Metrics of each run alone and of their mixture, with each run's `run_source` (the JSON
  `main` writes; results/make_table.py turns test fusions of one row's seeds into a row)."""
  paths = [ranking_path(run, split) for run in runs]
  rankings = [fusion.load_ranking(p) for p in paths]
  fused = fusion.mixture(rankings, weights)
  def metrics(r):
    return ranking.metrics_of(r.items, r.targets, None, ks)
  return {"kind": "fusion", "split": split, "runs": paths, "commit": io.source_commit(),
          "weights": None if weights is None else [float(w) for w in weights],
          "sources": [run_source(p) for p in paths],
          "members": [metrics(r) for r in rankings], "fused": metrics(fused)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _RUNS.value:
    raise app.UsageError("--runs needs at least one workdir or ranking file")
  weights = None if _WEIGHTS.value is None else [float(w) for w in _WEIGHTS.value]
  result = fuse_runs(_RUNS.value, _SPLIT.value, weights, tuple(int(k) for k in _KS.value))
  for name, m in list(zip(result["runs"], result["members"])) + [("fused", result["fused"])]:
    print(f"{name}: " + " ".join(f"{k}={v:.4f}" for k, v in sorted(m.items())
                                 if isinstance(v, float)))
  single = {k: float(np.mean([m[k] for m in result["members"]])) for k in result["fused"]
            if isinstance(result["fused"][k], float)}
  print("fused - mean of runs: " + " ".join(f"{k}={result['fused'][k] - v:+.4f}"
                                             for k, v in sorted(single.items())))
  if _OUTPUT.value:
    io.write_json(_OUTPUT.value, result)


if __name__ == "__main__":
  app.run(main)
