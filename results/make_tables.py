"""Builds the results table (markdown) from results/*.json; never typed by hand.

  python results/make_table.py                          # print the table (markdown)
  python results/make_table.py results README.md results/README.md   # rewrite it in place

In place: the text between the lines `<!-- results-table -->` and `<!-- /results-table -->` of
each file is replaced (written to a temporary file, then renamed); a file without both markers
is an error and is left as it was.

Rows: dataset × tokenizer[+variant] × vector source × recommender epochs (`train.epochs`), with
runs on the CPU (`device` "cpu") apart from accelerator runs, and runs whose training examples are
not the last 20 items of each sequence (`train.example_window`) labelled and apart; ours as
mean ± std over seeds, beside the R3-VAE paper's numbers and the public PyTorch
re-implementation's (docs/spec.md). A run with
`train.ensemble_size` K > 1 gives two rows: its first member alone, and "tokenizer ensemble×K"
(all members decoding together; the wall time is the whole run's). A fusion JSON
(`python -m r3vae_jax.fuse --output=...` on test rankings of M seeds of one row) gives a row
"tokenizer fused×M", one entry per fusion (the wall time is the M runs' sum).
"""
import collections
import glob
import json
import os
import sys

import numpy as np

from r3vae_jax.configs.variants import PAPER_ABLATIONS

# R@10 / N@10 from the R3-VAE paper (spec.md), and the public PyTorch re-implementation
# (5 seeds, maxlen 20; spec.md), keyed by (dataset, tokenizer).
PAPER = {("beauty", "r3vae"): (0.0716, 0.0393), ("sports", "r3vae"): (0.0412, 0.0217),
         ("toys", "r3vae"): (0.0657, 0.0368), ("beauty", "rqkmeans"): (0.0639, 0.0347),
         ("sports", "rqkmeans"): (0.0353, 0.0191), ("toys", "rqkmeans"): (0.0577, 0.0308)}
REIMPL = {("beauty", "rqvae"): (0.0669, 0.0371), ("beauty", "rqkmeans"): (0.0683, 0.0374),
          ("beauty", "r3vae"): (0.0710, 0.0390), ("beauty", "diger"): (0.0664, 0.0365),
          ("sports", "rqvae"): (None, 0.0206), ("sports", "r3vae"): (None, 0.0229),
          ("sports", "diger"): (None, 0.0207), ("toys", "rqvae"): (None, 0.0342),
          ("toys", "r3vae"): (None, 0.0374), ("toys", "diger"): (None, 0.0326)}


def _published(tokenizer: str) -> str:
  """The published method a row sits beside: its base tokenizer ("diger+detached_follow" ->
  "diger", "r3vae fused×2" -> "r3vae"), ours on top of it included; "" for the R3-VAE
  paper's ablations, which remove a part of the method."""
  base, *variants = tokenizer.split(" ")[0].split("+")
  return "" if set(variants) & set(PAPER_ABLATIONS) else base


def _fmt(values):
  if not values:
    return "–"
  a = np.asarray(values, float)
  return f"{a.mean():.4f}" + (f" ± {a.std(ddof=1):.4f}" if len(a) > 1 else "")


def _ref(table, key, i):
  v = table.get(key, (None, None))[i]
  return "–" if v is None else f"{v:.4f}"


def _ensemble_view(r):
  """A run with train.ensemble_size > 1 seen as its ensemble's row: the ensemble's test metrics
  (no popularity prior), the members' best epochs joined by "+"."""
  members = [r["train"]] + r["train"].get("ensemble_members", [])
  metrics = {"test": r["metrics"]["test_ensemble"]}
  epochs = "+".join(str(m["best_epoch"]) for m in members)
  return {**r, "metrics": metrics, "train": {**r["train"], "best_epoch": epochs}}


# Commits whose DIGER trainer ignored `train.example_window` and trained on whole sequences
# whatever it said (fixed in c9bc00f): the session-7 DIGER rows.
_DIGER_WHOLE_SEQUENCES = {"f2ae303"}


def _train_field(r, name):
  """`config.train.<name>` of a results JSON, or the field of a fusion JSON's source."""
  return r["config"]["train"].get(name) if "config" in r else r.get(name)


def _examples(r):
  """The row label's suffix for the run's training examples: empty for the protocol's (the last
  20 items of each training sequence, `train.example_window` 20), else what the run used; runs
  that differ in it are rows of their own (the DIGER rows before session 18 trained on whole
  sequences)."""
  window = _train_field(r, "example_window")
  if r.get("tokenizer") == "diger" and str(r.get("commit", "")).split("+")[0] in \
      _DIGER_WHOLE_SEQUENCES:
    window = 0
  if window in (None, 20):
    return ""
  return " (whole sequences)" if window == 0 else f" (last {window} items)"


def _row_key(r):
  """(dataset, tokenizer[+variant][ (examples)], vectors, recommender epochs, "cpu" or
  "accelerator") of a results JSON or of a fusion JSON's source: runs on the CPU are rows of
  their own (their wall times are another machine's)."""
  tokenizer = r["tokenizer"] + (f"+{r['variant']}" if r.get("variant") else "") + _examples(r)
  epochs = _train_field(r, "epochs")
  platform = "cpu" if str(r.get("device", "")).lower() == "cpu" else "accelerator"
  return r["dataset"], tokenizer, r["vectors"], epochs, platform


def _fusion_view(r):
  """A test fusion (`python -m r3vae_jax.fuse`) of runs of one row seen as a run: the mixture's
  test metrics, the fused seeds joined by "+" for the epoch column, the runs' summed wall time;
  None when its runs are not all of one row (or have no results JSON)."""
  sources = r.get("sources") or []
  if r.get("split") != "test" or not sources or None in sources or len(
      {_row_key(src) for src in sources}) != 1:
    return None
  dataset, tok, vec, epochs, _ = _row_key(sources[0])
  wall = collections.Counter()
  for src in sources:
    wall.update(src.get("wall_time_s", {}))
  return {"dataset": dataset, "tokenizer": f"{tok} fused×{len(sources)}", "vectors": vec,
          "epochs": epochs, "device": sources[0].get("device", "?"), "wall_time_s": dict(wall),
          "metrics": {"test": r["fused"]}, "sid_metrics": {},
          "train": {"best_epoch": "seeds " + "+".join(str(src["seed"]) for src in sources)}}


START, END = "<!-- results-table -->", "<!-- /results-table -->"


def table(directory: str) -> str:
  """The markdown table of the results JSONs in `directory` (lines joined by newlines)."""
  rows = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
    r = json.load(open(path))
    view = _fusion_view(r) if r.get("kind") == "fusion" else None
    if view is not None:
      rows[_row_key(view)].append(view)
    if r.get("kind") != "experiment":
      continue
    dataset, tokenizer, vectors, epochs, platform = key = _row_key(r)
    rows[key].append(r)
    if "test_ensemble" in r["metrics"]:  # the same run's members decoding together
      rows[(dataset, f"{tokenizer} ensemble×{r['metrics']['test_ensemble']['members']}",
            vectors, epochs, platform)].append(_ensemble_view(r))
  lines = ["| dataset | tokenizer | vectors | epochs | seeds | R@5 | R@10 | N@5 | N@10 "
           "| paper R@10 / N@10 | re-impl. R@10 / N@10 | N@10 with the popularity prior (alpha) "
           "| collisions | best epoch per seed (* = cut by time) | wall s (train) | device |",
           "|" + "---|" * 16]
  for (dataset, tok, vec, max_epochs, _), runs in sorted(rows.items()):
    test = [r["metrics"]["test"] for r in runs]
    key = (dataset, _published(tok))
    wall = [sum(r["wall_time_s"].values()) for r in runs]
    train = [r["wall_time_s"].get("train", 0) for r in runs]
    # DIGER JSONs of session 7 hold the pretrained table under sid_metrics, the tested
    # one in their train summary.
    coll = [r["train"].get("sid_metrics", r["sid_metrics"]).get("collision_rate", float("nan"))
            for r in runs]
    prior = [r["metrics"]["test_popularity"] for r in runs if "test_popularity" in r["metrics"]]
    alphas = ", ".join(f"{p['alpha']:g}" for p in prior)
    prior_cell = f"{_fmt([p['ndcg@10'] for p in prior])} ({alphas})" if prior else "–"
    # Cut by time: the recommender trainer says finished=preempted, DIGER's stopped=preempted.
    epochs = ", ".join(f"{r['train']['best_epoch']}" + ("*" if "preempted" in (
        r["train"].get("finished"), r["train"].get("stopped")) else "") for r in runs)
    lines.append(f"| {dataset} | {tok} | {vec} | {max_epochs} | {len(runs)} | {_fmt([t['recall@5'] for t in test])} "
          f"| {_fmt([t['recall@10'] for t in test])} | {_fmt([t['ndcg@5'] for t in test])} "
          f"| {_fmt([t['ndcg@10'] for t in test])} | {_ref(PAPER, key, 0)} / {_ref(PAPER, key, 1)} "
          f"| {_ref(REIMPL, key, 0)} / {_ref(REIMPL, key, 1)} | {prior_cell} "
          f"| {'–' if np.all(np.isnan(coll)) else f'{np.nanmean(coll):.3f}'} "
          f"| {epochs} | {np.mean(wall):.0f} ({np.mean(train):.0f}) "
          f"| {runs[0].get('device', '?')} |")
  return "\n".join(lines)


def replace_block(path: str, text: str) -> None:
  """Puts `text` between the START and END marker lines of the file `path`."""
  with open(path, encoding="utf-8") as f:
    doc = f.read()
  start, end = doc.find(START + "\n"), doc.find("\n" + END)
  if start < 0 or end < start:
    raise SystemExit(f"{path}: expected a line {START!r} and, after it, a line {END!r}")
  doc = doc[:start + len(START) + 1] + text + doc[end:]
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(doc)
  os.replace(tmp, path)


if __name__ == "__main__":
  here = os.path.dirname(os.path.abspath(__file__))
  markdown = table(sys.argv[1] if len(sys.argv) > 1 else here)
  for target in sys.argv[2:]:
    replace_block(target, markdown)
  if len(sys.argv) <= 2:
    print(markdown)
