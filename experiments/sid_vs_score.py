"""Which statistic of a fixed SID table orders the tables as the recommender's test NDCG@10 does.

  python experiments/sid_vs_score.py OUT.json WORKDIR[=ROW_JSON] ...

WORKDIR is a `--mode=tokenize` workdir (prepared data, `tokenizer/sid_table.npy` and
`sid_metrics.json`); ROW_JSON, where given, is the results JSON of the recommender row trained on
the same tokenizer config and seed (on the GPU), whose test NDCG@10 scores the table. Tables
without a row are candidates: their statistics are listed, they enter no correlation.

Per table: collision rate and level-1 usage of the first `sid.levels` codes, semantic cohesion
(`sid_metrics.json`), and the transition lift of every level over the training split
(`quantize.transition_lift`: how much more often items that follow each other in a user's
history share a prefix than two independent items do). Per dataset with at least three scored
tables: Spearman's rank correlation of each statistic with test NDCG@10. The row's own collision
rate is listed beside the workdir's, so a table rebuilt on another device can be checked
against the one the row was trained on.
"""
import os
import sys

import numpy as np

from r3vae_jax import io
from r3vae_jax import quantize
from r3vae_jax.data import dataset
from r3vae_jax.data import splits

STATISTICS = ("collision_rate", "usage_level1", "semantic_cohesion", "lift_level1",
              "lift_level2", "lift_level3")


def table_statistics(workdir: str) -> dict:
  """The statistics of `workdir`'s SID table (module docstring)."""
  config = io.read_json(os.path.join(workdir, "config.json"))
  levels, num_codes = config["sid"]["levels"], config["sid"]["codebook_size"]
  codes = io.read_npy(os.path.join(workdir, "tokenizer", "sid_table.npy"))[:, :levels]
  metrics = io.read_json(os.path.join(workdir, "tokenizer", "sid_metrics.json"))
  train = splits.leave_one_out(dataset.load_prepared(workdir).sequences).train
  lift = quantize.transition_lift(codes, train)
  return {"dataset": config["dataset"], "tokenizer": config["tokenizer"],
          "variant": config.get("variant", ""), "seed": config["seed"],
          "collision_rate": float(quantize.collision_rate(codes)),
          "usage_level1": float(quantize.usage_per_level(codes, num_codes)[0]),
          "semantic_cohesion": metrics["semantic_cohesion"],
          **{f"lift_level{l + 1}": float(v) for l, v in enumerate(lift)}}


def row_score(row_json: str) -> dict:
  """Test NDCG@10, the row's own collision rate and its recommender epochs."""
  row = io.read_json(row_json)
  return {"row": row_json, "test_ndcg@10": row["metrics"]["test"]["ndcg@10"],
          "row_collision_rate": row["sid_metrics"]["collision_rate"],
          "recommender_epochs": row["config"]["train"]["epochs"]}


def spearman(x: list[float], y: list[float]) -> float:
  """Spearman's rank correlation (average ranks for ties); NaN where either side is constant."""
  def ranks(v):
    v = np.asarray(v, np.float64)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    for value in np.unique(v):
      r[v == value] = r[v == value].mean()
    return r
  rx, ry = ranks(x), ranks(y)
  if np.ptp(rx) == 0 or np.ptp(ry) == 0:
    return float("nan")
  return float(np.corrcoef(rx, ry)[0, 1])


def correlations(tables: list[dict]) -> dict:
  """{dataset: {statistic: Spearman with test NDCG@10}} over datasets with >= 3 scored tables
  (None for a statistic that is constant there)."""
  out = {}
  for name in sorted({t["dataset"] for t in tables}):
    scored = [t for t in tables if t["dataset"] == name and "test_ndcg@10" in t]
    if len(scored) >= 3:
      score = [t["test_ndcg@10"] for t in scored]
      rho = {s: spearman([t[s] for t in scored], score)
             for s in STATISTICS if all(s in t for t in scored)}
      out[name] = {"tables": len(scored),
                   **{s: None if np.isnan(r) else round(r, 3) for s, r in rho.items()}}
  return out


def main(out_path: str, specs: list[str]) -> None:
  tables = []
  for spec in specs:
    workdir, _, row_json = spec.partition("=")
    table = {"workdir": workdir, **table_statistics(workdir)}
    if row_json:
      table.update(row_score(row_json))
    tables.append(table)
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in table.items()}, flush=True)
  result = {"kind": "sid_vs_score", "commit": io.source_commit(), "device": "cpu",
            "command": "python experiments/sid_vs_score.py " + " ".join([out_path, *specs]),
            "tables": tables, "spearman_with_test_ndcg@10": correlations(tables)}
  io.write_json(out_path, result)
  print(result["spearman_with_test_ndcg@10"])


if __name__ == "__main__":
  if len(sys.argv) < 3:
    sys.exit(__doc__)
  main(sys.argv[1], sys.argv[2:])
