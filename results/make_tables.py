"""Builds the results tables from results/*.json; they are never typed by hand.

  python results/make_tables.py            # rewrite docs/results.md and README.md's headline block
  python results/make_tables.py --check    # exit 1 if either is not what the JSONs give
  python results/make_tables.py --print    # print docs/results.md

A results JSON is a row's run when `kind` is "experiment" (what `--mode=all` writes) or a test
fusion of seeds of one row when `kind` is "fusion" (`python experiments/fuse_pairs.py`); any other
JSON is ignored. A row is identified by fields of the JSON, never by its file name:

- method: `method` (baselines, e.g. "popularity", "markov", "sasrec", "rpg"), else `preset` (a
  named config), else `tokenizer` followed by `+variant` when `variant` is set;
- dataset, vector source (`vectors`), recommender epochs (`config.train.epochs`), training
  examples (`config.train.example_window`: the last 20 items of each sequence unless labelled),
  and whether it ran on the CPU (`device` "cpu").

Metrics: `metrics.test` (seen items removed from the ranking, the protocol of the tables) and,
when a JSON has it, `metrics.test_full_ranking` (the same keys, the full ranking untouched), shown
as a second column group. Rows give mean ± sample std over their seeds.
"""
import collections
import glob
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_MD = os.path.join("docs", "results.md")
START, END = "<!-- results-table -->", "<!-- /results-table -->"
DATASETS = ("beauty", "sports", "toys")

# R@10 / N@10 published for the method a row implements: the R3-VAE paper's table (RPG: its own
# paper, KDD 2025, arXiv 2506.05781, Table 2), and the public PyTorch re-implementation (5 seeds,
# maxlen 20) where the paper has none.
PAPER = {("beauty", "r3vae"): (0.0716, 0.0393), ("sports", "r3vae"): (0.0412, 0.0217),
         ("toys", "r3vae"): (0.0657, 0.0368), ("beauty", "rqkmeans"): (0.0639, 0.0347),
         ("sports", "rqkmeans"): (0.0353, 0.0191), ("toys", "rqkmeans"): (0.0577, 0.0308),
         ("beauty", "rpg"): (0.0809, 0.0464), ("sports", "rpg"): (0.0463, 0.0263),
         ("toys", "rpg"): (0.0869, 0.0490)}
REIMPL = {("beauty", "rqvae"): (0.0669, 0.0371), ("beauty", "rqkmeans"): (0.0683, 0.0374),
          ("beauty", "r3vae"): (0.0710, 0.0390), ("beauty", "diger"): (0.0664, 0.0365),
          ("sports", "rqvae"): (None, 0.0206), ("sports", "r3vae"): (None, 0.0229),
          ("sports", "diger"): (None, 0.0207), ("toys", "rqvae"): (None, 0.0342),
          ("toys", "r3vae"): (None, 0.0374), ("toys", "diger"): (None, 0.0326)}
# Variants that remove a part of a method (the R3-VAE paper's ablations): no published number.
ABLATIONS = ("no_ref", "straight_through", "no_sc", "no_pd")

# The headline table: per method, the row each dataset publishes, as (method label, epochs).
HEADLINE = (
    ("Popularity", {"beauty": ("popularity", None), "sports": ("popularity", None),
                    "toys": ("popularity", None)}),
    ("Markov (first order)", {"beauty": ("markov", None), "sports": ("markov", None),
                              "toys": ("markov", None)}),
    ("SASRec", {"beauty": ("sasrec", None), "sports": ("sasrec", None),
                "toys": ("sasrec", None)}),
    ("RQ-KMeans", {"beauty": ("rqkmeans", 60), "sports": ("rqkmeans", 30),
                   "toys": ("rqkmeans", 30)}),
    ("TIGER (RQ-VAE)", {"beauty": ("rqvae", 60), "sports": ("rqvae", 30),
                        "toys": ("rqvae+last_table", 30)}),
    ("R3-VAE", {"beauty": ("r3vae", 60), "sports": ("r3vae", 30), "toys": ("r3vae", 45)}),
    ("DIGER", {"beauty": ("diger+detached_follow+warmup+last_table+tokenizer_lr_1e-7", 60),
               "sports": ("diger+detached_follow+tokenizer_lr_1e-7", 30),
               "toys": ("diger+detached_follow+last_table+tokenizer_lr_1e-7", 30)}),
    ("RPG (OPQ, parallel decoding)", {"beauty": ("rpg", None), "sports": ("rpg", None),
                                      "toys": ("rpg", None)}),
)

# Baselines that count (no training, no randomness): the same numbers on any platform.
COUNTING_BASELINES = ("popularity", "markov")
# Rows without a published reference line in the headline table.
BASELINES = COUNTING_BASELINES + ("sasrec",)

Row = collections.namedtuple("Row", "dataset method vectors epochs examples platform")


def _method(r: dict) -> str:
  if r.get("method"):
    return r["method"]
  if r.get("preset"):
    return r["preset"]
  return r["tokenizer"] + (f"+{r['variant']}" if r.get("variant") else "")


def _train_field(r: dict, name: str):
  """`config.train.<name>` of a run's JSON, or the field of a fusion JSON's source."""
  return r["config"].get("train", {}).get(name) if "config" in r else r.get(name)


def _examples(r: dict) -> str:
  window = _train_field(r, "example_window")
  if window in (None, 20):
    return ""
  return "whole sequences" if window == 0 else f"last {window} items"


def row_of(r: dict) -> Row:
  """The row a run (or a fusion JSON's source) belongs to."""
  platform = "cpu" if str(r.get("device", "")).lower() == "cpu" else "accelerator"
  return Row(r["dataset"], _method(r), r.get("vectors", "–"), _train_field(r, "epochs"),
             _examples(r), platform)


def _fusion_as_run(r: dict):
  """A test fusion of seeds of one row seen as one run of the row "<method> fused×M"; None when
  its sources are not all of one row."""
  sources = r.get("sources") or []
  if r.get("split") != "test" or not sources or len({row_of(s) for s in sources}) != 1:
    return None
  row = row_of(sources[0])
  wall = collections.Counter()
  for s in sources:
    wall.update(s.get("wall_time_s", {}))
  seeds = "+".join(str(s["seed"]) for s in sources)
  return row._replace(method=f"{row.method} fused×{len(sources)}"), {
      "device": sources[0].get("device", "?"), "wall_time_s": dict(wall),
      "metrics": {"test": r["fused"]}, "train": {"best_epoch": f"seeds {seeds}"}}


def load_rows(directory: str) -> dict:
  """{Row: [run JSON, ...]} of the results JSONs in `directory`."""
  rows = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
    with open(path, encoding="utf-8") as f:
      r = json.load(f)
    if r.get("kind") in ("experiment", "baseline"):
      rows[row_of(r)].append(r)
    elif r.get("kind") == "fusion":
      fused = _fusion_as_run(r)
      if fused is not None:
        rows[fused[0]].append(fused[1])
  return dict(rows)


def _fmt(values) -> str:
  if not values:
    return "–"
  a = np.asarray(values, float)
  return f"{a.mean():.4f}" + (f" ± {a.std(ddof=1):.4f}" if len(a) > 1 else "")


def _base(method: str) -> str:
  """The published method a row sits beside ("diger+detached_follow" -> "diger", "r3vae fused×2"
  -> "r3vae"); "" for an ablation, which removes a part of the method."""
  base, *variants = method.split(" ")[0].split("+")
  return "" if set(variants) & set(ABLATIONS) else base


def _ref(table: dict, key) -> str:
  return " / ".join("–" if v is None else f"{v:.4f}" for v in table.get(key, (None, None)))


def _metric(runs, split: str, name: str) -> str:
  return _fmt([r["metrics"][split][name] for r in runs if split in r["metrics"]])


def _collisions(r: dict) -> float:
  # A DIGER run's tested table is in its train summary; its sid_metrics are the pretrained one's.
  return r.get("train", {}).get("sid_metrics", r.get("sid_metrics", {})).get(
      "collision_rate", float("nan"))


def full_table(rows: dict) -> str:
  """The markdown table of every row (lines joined by newlines)."""
  full = any("test_full_ranking" in r["metrics"] for runs in rows.values() for r in runs)
  head = ["dataset", "method", "vectors", "epochs", "training examples", "seeds", "R@5", "R@10",
          "N@5", "N@10"]
  if full:
    head += ["R@10, seen kept", "N@10, seen kept"]
  head += ["paper R@10 / N@10", "re-impl. R@10 / N@10", "collisions", "best epoch per seed",
           "wall s (train)", "device"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row, runs in sorted(rows.items(), key=lambda kv: tuple(map(str, kv[0]))):
    key = (row.dataset, _base(row.method))
    coll = [_collisions(r) for r in runs]
    cells = [row.dataset, row.method, row.vectors, str(row.epochs), row.examples or "last 20",
             str(len(runs))] + [_metric(runs, "test", m)
                                for m in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")]
    if full:
      cells += [_metric(runs, "test_full_ranking", m) for m in ("recall@10", "ndcg@10")]
    wall = [sum(r.get("wall_time_s", {}).values()) for r in runs]
    train = [r.get("wall_time_s", {}).get("train", 0) for r in runs]
    cut = ("preempted",)
    epochs = ", ".join(str(r.get("train", {}).get("best_epoch", "–")) + (
        "*" if {r.get("train", {}).get("finished"), r.get("train", {}).get("stopped")} & set(cut)
        else "") for r in runs)
    cells += [_ref(PAPER, key), _ref(REIMPL, key),
              "–" if np.all(np.isnan(coll)) else f"{np.nanmean(coll):.3f}", epochs,
              f"{np.mean(wall):.0f} ({np.mean(train):.0f})", str(runs[0].get("device", "?"))]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _pick(rows: dict, dataset: str, method: str, epochs):
  """The accelerator row of `method` on `dataset` at `epochs` (any epochs when None) trained on
  the protocol's examples; the one with the most seeds."""
  found = [(len(runs), row, runs) for row, runs in rows.items()
           if row.dataset == dataset and row.method == method and not row.examples
           and (row.platform == "accelerator" or method in COUNTING_BASELINES)
           and epochs in (None, row.epochs)]
  return max(found, key=lambda x: x[0])[1:] if found else (None, [])


def headline(rows: dict) -> str:
  """The README's table: each method's published row on Beauty, Sports and Toys."""
  splits = [("test", "seen items removed")]
  if any("test_full_ranking" in r["metrics"] for runs in rows.values() for r in runs):
    splits.append(("test_full_ranking", "full ranking, seen items kept"))
  out = []
  for split, title in splits:
    head = ["method"] + [f"{d.capitalize()} {m}" for d in DATASETS for m in ("N@10", "R@10")]
    lines = [f"Test, {title}:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, spec in HEADLINE:
      picked = [_pick(rows, dataset, *spec[dataset])[1] for dataset in DATASETS]
      if not any(split in r["metrics"] for runs in picked for r in runs):
        continue  # a method without runs of this protocol
      cells = [name]
      for runs in picked:
        counted = sum(split in r["metrics"] for r in runs)
        seeds = f" ({counted})" if counted else ""
        cells += [_metric(runs, split, "ndcg@10") + seeds, _metric(runs, split, "recall@10")]
      lines.append("| " + " | ".join(cells) + " |")
      if split == "test" and spec["beauty"][0] not in BASELINES:
        refs = [name + ", reference"]
        for dataset in DATASETS:
          base = _base(spec[dataset][0])
          r10, n10 = PAPER.get((dataset, base)) or REIMPL.get((dataset, base), (None, None))
          refs += ["–" if n10 is None else f"{n10:.4f}", "–" if r10 is None else f"{r10:.4f}"]
        lines.append("| " + " | ".join(refs) + " |")
    out.append("\n".join(lines))
  return "\n\n".join(out) + (
      "\n\nMean ± std over seeds (their number in brackets; popularity and Markov count, so one "
      "run each). Each row is one preset, run as `--config=<dataset>.py:<preset>` with the "
      "presets `popularity`, `markov`, `sasrec`, `rqkmeans`, `rqvae`, `r3vae` and `diger` "
      "(`r3vae_jax/configs/presets.py` holds their settings and epochs).")


RESULTS_HEADER = """# Results

Every row of this file is generated by `python results/make_tables.py` from the JSONs in
`results/` (one per run; `results/make_tables.py --check` fails when this file is stale, and
`tests/test_results_table.py` runs that check). Protocol: leave-one-out split (the last item of
each user is the test target, the one before it the validation target), full ranking over all
items with the user's own history removed, constrained beam search of width 20, Recall@K /
NDCG@K over all users, the checkpoint chosen by validation NDCG@10. Mean ± sample std over seeds.

Columns: `epochs` is the recommender's training length; `training examples` says which part of
each training sequence made the examples; `paper` is the R3-VAE paper's table (its TIGER row is
RQ-KMeans; RPG's rows: the RPG paper's), `re-impl.` the public PyTorch re-implementation (`MTandHJ/RecBoard`);
`collisions` the SID table's collision rate; `best epoch per seed` (* = cut by a time limit); `wall s` the whole run
(of it training). "fused×M" rows mix the beams of M seeds of one row (`python -m r3vae_jax.fuse`);
rows on `cpu` ran on a 2-core CPU. Each JSON holds its full command, commit and device.

To rerun a row: `launch/paper_rows.sh OUT <dataset>:<method>:<seed>[:<vectors>] [-- overrides]`
(each JSON's `command` is the exact one). It writes the row's JSON, its log and its validation and
test rankings (`OUT/<row>.{valid,test}_ranking.npz`, kept out of the repository); then
`python experiments/fuse_pairs.py OUT results` writes the fused rows from those rankings and
`python results/make_tables.py` rewrites this file and README.md's headline table.

"""


def results_md(rows: dict) -> str:
  return RESULTS_HEADER + full_table(rows) + "\n"


def with_block(doc: str, text: str, name: str) -> str:
  """`doc` with the lines between the START and END markers replaced by `text`."""
  start, end = doc.find(START + "\n"), doc.find("\n" + END)
  if start < 0 or end < start:
    raise SystemExit(f"error: {name}: expected a line {START!r} and, after it, a line {END!r}")
  return doc[:start + len(START) + 1] + text + doc[end:]


def expected(repo: str = REPO) -> dict:
  """{path: text} of docs/results.md and README.md as the JSONs in results/ give them."""
  rows = load_rows(os.path.join(repo, "results"))
  readme = os.path.join(repo, "README.md")
  with open(readme, encoding="utf-8") as f:
    doc = f.read()
  return {os.path.join(repo, RESULTS_MD): results_md(rows),
          readme: with_block(doc, headline(rows), "README.md")}


def main(argv) -> int:
  files = expected()
  if "--print" in argv:
    print(files[os.path.join(REPO, RESULTS_MD)], end="")
    return 0
  stale = []
  for path, text in files.items():
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    if current != text:
      stale.append(path)
      if "--check" not in argv:
        with open(f"{path}.tmp", "w", encoding="utf-8") as f:
          f.write(text)
        os.replace(f"{path}.tmp", path)
  if "--check" in argv and stale:
    print("error: stale, rerun python results/make_tables.py: " + ", ".join(stale))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
