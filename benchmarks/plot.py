r"""Plots `benchmarks/run.py`'s JSONs: speedup of ours over the fastest PyTorch variant, per
workload, against the issue's targets, plus each side's rate; prints the same as a Markdown
table (for benchmarks/README.md).

  python -m benchmarks.plot --results=benchmarks/results/vs_torch_h100.json,\
benchmarks/results/vs_torch_compile_h100.json --out=benchmarks/results/speedups.png

Several runs are merged (`merge_records`): a workload timed again in a later file replaces the
earlier one; a recommender workload timed in another compute dtype is kept beside it, named
with the dtype ("recommender_train (bfloat16)").
"""
from __future__ import annotations

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

from r3vae_jax import io  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so tests can import this module)."""
  flags.DEFINE_list("results", ["benchmarks/results/vs_torch.json"],
                    "run.py JSONs, merged in order (later runs replace a workload).")
  flags.DEFINE_string("out", "benchmarks/results/speedups.png", "PNG path.")

# The "done when" ratios, by workload-name prefix.
TARGETS = {"tokenizer_train": 5.0, "recommender_train": 3.0, "decode": 50.0}


def target_for(name: str) -> float | None:
  for prefix, value in TARGETS.items():
    if name.startswith(prefix):
      return value
  return None


def merge_records(records: list[dict]) -> dict:
  """One record of several runs' workloads; each workload keeps the commit it was timed at.

  Device and versions must agree (ratios from different machines do not belong in one plot).
  """
  if not records:
    raise ValueError("--results: no JSON given")
  for key in ("device", "platform"):
    values = {r.get(key) for r in records}
    if len(values) > 1:
      raise ValueError(f"--results: the runs differ in {key!r} ({sorted(map(str, values))}); "
                       "plot runs of one machine together")
  workloads = {}
  for r in records:
    dtype = r.get("precision", {}).get("recommender_compute", "float32")
    for name, entry in r["workloads"].items():
      if name.startswith("recommender") and dtype != "float32":
        name = f"{name} ({dtype})"
      workloads[name] = dict(entry, commit=r.get("commit", "?"))
  commits = sorted({r.get("commit", "?") for r in records})
  return dict(records[-1], workloads=workloads, commit=", ".join(commits))


def plot(record: dict, out: str) -> None:
  """Two panels: speedup bars (log scale, target ticks) and rates (ours vs best torch)."""
  rows = [(name, e) for name, e in record["workloads"].items() if "speedup" in e]
  if not rows:
    raise ValueError("no workload has a speedup (nothing ran on both sides)")
  names = [n for n, _ in rows]
  y = list(range(len(rows)))
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.55 * len(rows) + 1.8),
                                 gridspec_kw={"width_ratios": [1.1, 1]})
  speedups = [e["speedup"] for _, e in rows]
  colors = ["tab:green" if (target_for(n) is None or s >= target_for(n)) else "tab:orange"
            for n, s in zip(names, speedups)]
  ax1.barh(y, speedups, color=colors)
  for i, (n, s) in enumerate(zip(names, speedups)):
    ax1.text(s, i, f" {s:.1f}x", va="center", fontsize=8)
    target = target_for(n)
    if target:
      ax1.plot([target, target], [i - 0.4, i + 0.4], color="black", lw=1.5)
  ax1.set_xscale("log")
  ax1.set_yticks(y, names, fontsize=8)
  ax1.invert_yaxis()
  ax1.axvline(1.0, color="grey", lw=0.8)
  ax1.set_xlabel("speedup: ours / fastest PyTorch variant (black tick = target)")
  ours = [e["ours"]["rate"] for _, e in rows]
  best = [e["best_torch_rate"] for _, e in rows]
  ax2.barh([i - 0.2 for i in y], ours, height=0.4, label="ours (JAX)", color="tab:blue")
  ax2.barh([i + 0.2 for i in y], best, height=0.4, label="fastest PyTorch", color="tab:red")
  ax2.set_xscale("log")
  ax2.set_yticks(y, [f"{e['unit']} ({e['best_torch']})" for _, e in rows], fontsize=7)
  ax2.invert_yaxis()
  ax2.set_xlabel("rate (log)")
  ax2.legend(fontsize=8, loc="lower right")
  fig.suptitle(f"r3vae_jax vs PyTorch on {record.get('device', '?')} "
               f"(commit {record.get('commit', '?')}, jax {record['versions'].get('jax')}, "
               f"torch {record['versions'].get('torch')})", fontsize=10)
  fig.tight_layout()
  fig.savefig(out, dpi=130)


def markdown_table(record: dict) -> str:
  """One row per workload: rates of every variant, speedup, and what bounds ours."""
  lines = ["| workload | unit | ours | torch eager | torch eager, device data | "
           "torch.compile | speedup vs best torch | ours bound by | commit |",
           "|---|---|---|---|---|---|---|---|---|"]

  def cell(entry: dict, name: str) -> str:
    v = entry.get(name, {})
    if "rate" in v:
      return f"{v['rate']:,.0f}" if v["rate"] >= 100 else f"{v['rate']:.3g}"
    return "error" if "error" in v else "-"
  for name, e in record["workloads"].items():
    speed = f"**{e['speedup']:.1f}x**" if "speedup" in e else "-"
    bound = e.get("verdict_ours", "-").split(";")[0]
    lines.append(f"| {name} | {e.get('unit', '')} | {cell(e, 'ours')} | "
                 f"{cell(e, 'torch_eager')} | {cell(e, 'torch_eager_device_data')} | "
                 f"{cell(e, 'torch_compiled')} | {speed} | {bound} | {e.get('commit', '-')} |")
  return "\n".join(lines)


def main(argv):
  del argv
  record = merge_records([io.read_json(path) for path in FLAGS.results])
  plot(record, FLAGS.out)
  print(markdown_table(record))
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
