"""A baseline row end to end: prepare the dataset, fit, score both protocols, write results.

  python -m r3vae_jax.main --config=r3vae_jax/configs/beauty.py:sasrec --workdir=DIR --mode=all

Writes `workdir/results.json`, or one `results_s<seed>.json` per seed when SASRec trains
several side by side (`sasrec.num_seeds`). Each has the generative rows' shape (docs/results.md)
with `kind` "baseline" and `method`; `metrics` holds "valid"/"test" under `eval.exclude_seen`
and "valid_full_ranking"/"test_full_ranking" with the ranking untouched (`scoring.as_results`).
"""
from __future__ import annotations

import os
import sys
import time

_XLA_ENVIRONMENT = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def fit_and_score(config, workdir: str, splits, num_items: int) -> list[tuple[dict, dict]]:
  """Per seed: (metrics of `scoring.as_results`, training summary) of `config.method`."""
  from r3vae_jax.baselines import markov, popularity, scoring  # pylint: disable=g-import-not-at-top
  ks = tuple(config.eval.ks)
  if config.method == "sasrec":
    from r3vae_jax.baselines import sasrec_train  # pylint: disable=g-import-not-at-top
    graphdef, params, summaries = sasrec_train.train_sasrec(config, workdir, splits,
                                                                     num_items)
    valid, test = (sasrec_train.evaluate_split(graphdef, params, splits, split, ks,
                                               config.sasrec.max_len,
                                               config.sasrec.eval_batch_size)
                   for split in ("valid", "test"))
    return [(scoring.as_results(v, t, config.eval.exclude_seen), summary)
            for v, t, summary in zip(valid, test, summaries)]
  both = {}
  for split in ("valid", "test"):
    history = getattr(splits, f"{split}_history")
    score = (popularity.scorer(splits.train, num_items) if config.method == "popularity"
             else markov.scorer(splits.train, history, num_items))
    both[split] = scoring.evaluate_scores(score, history, getattr(splits, f"{split}_target"), ks)
  return [(scoring.as_results(both["valid"], both["test"], config.eval.exclude_seen), {})]


def run_all(config, workdir: str) -> list[dict]:
  """Prepares the data into `workdir/data`, fits and scores `config.method`, writes the
  results file of each seed (module docstring) and returns them."""
  import jax  # pylint: disable=g-import-not-at-top
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data import dataset, pipeline  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data import splits as splits_lib  # pylint: disable=g-import-not-at-top
  commit = io.source_commit()
  wall = {}
  start = time.perf_counter()
  inter = pipeline.prepare(config)
  spl = splits_lib.leave_one_out(inter.sequences)
  dataset.save_prepared(workdir, inter)
  wall["prepare"] = round(time.perf_counter() - start, 2)
  start = time.perf_counter()
  rows = fit_and_score(config, workdir, spl, inter.num_items)
  wall["fit_and_evaluate"] = round(time.perf_counter() - start, 2)
  versions = {mod: __import__(mod).__version__ for mod in ("jax", "jaxlib", "flax", "optax")}
  out = []
  for metrics, summary in rows:
    seed = summary.get("seed", config.seed)
    results = {
        "kind": "baseline", "method": config.method, "preset": config.preset,
        "dataset": config.dataset, "seed": seed,
        "config": config.to_dict(), "data_stats": dataset.stats(inter), "metrics": metrics,
        "train": summary, "wall_time_s": wall, "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(), "commit": commit, "versions": versions,
        "command": " ".join(sys.argv),
        # set when rows share a GPU: their wall times were measured side by side
        "xla_environment": {name: os.environ[name] for name in _XLA_ENVIRONMENT
                            if name in os.environ}}
    name = "results.json" if len(rows) == 1 else f"results_s{seed}.json"
    io.write_json(os.path.join(workdir, name), results)
    out.append(results)
    for split in ("test", "test_full_ranking"):
      print(config.dataset, config.method, f"seed {seed}", split,
            " ".join(f"{key}={v:.4f}" for key, v in sorted(metrics[split].items())
                     if key != "users"))
  return out

