"""Figures of a run, drawn from the files in its workdir (matplotlib `Figure`s, no pyplot).

Every function reads files and returns a `matplotlib.figure.Figure`; multi-run figures take
`runs`, a mapping label -> workdir (e.g. {"R3-VAE": wd_a, "RQ-VAE": wd_b}).

  codebook_usage(runs)      usage per SID level over tokenizer training  (tokenizer/metrics.jsonl
                            or the tokenizer checkpoint's history)
  sid_quality(runs)         SC, PD and collision rate of the final SIDs  (tokenizer/sid_metrics.json)
  training_curves(workdir)  recommender loss and validation NDCG@10       (recommender/metrics.jsonl)
  item_projection(runs)     2-D PCA of the item vectors by level-1 code   (vectors.npy, sid_table.npy)

A panel whose file is missing says so in the panel (the figure is still returned), so a notebook
keeps going and the reader learns which stage left no trace. `to_png(fig)` renders with Agg
(no GUI, no global backend change), e.g. for `IPython.display.Image`.
"""
from __future__ import annotations

import io as _bytes_io
import os
import textwrap
from typing import Any, Mapping

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
import orbax.checkpoint as ocp

from r3vae_jax import io

TOKENIZER_METRICS = os.path.join("tokenizer", "metrics.jsonl")
SID_METRICS = os.path.join("tokenizer", "sid_metrics.json")
SID_TABLE = os.path.join("tokenizer", "sid_table.npy")
RECOMMENDER_METRICS = os.path.join("recommender", "metrics.jsonl")
VECTORS = "vectors.npy"
_PANEL = 3.6  # inches per panel


# ---- reading ---------------------------------------------------------------------------------


def last_per_key(records: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
  """Keeps the last record for every value of `keys` (a resumed run logs steps again), sorted."""
  latest = {tuple(r.get(k) for k in keys): r for r in records}
  return [latest[k] for k in sorted(latest, key=lambda k: tuple(-1 if v is None else v
                                                                  for v in k))]


def tokenizer_history(workdir: str) -> list[dict[str, Any]]:
  """Per-evaluation tokenizer metrics, one record per epoch.

  Read from `tokenizer/metrics.jsonl`; a workdir without it falls back to the `history` that the
  tokenizer trainer keeps in the meta of its latest checkpoint (`tokenizer/<name>_ckpt`, the
  tokenizer named in `sid_metrics.json`).

  Raises:
    FileNotFoundError: neither exists (RQ-KMeans has no training curve).
  """
  path = os.path.join(workdir, TOKENIZER_METRICS)
  records = io.read_jsonl(path) if io.exists(path) else _checkpoint_history(workdir)
  return last_per_key([r for r in records if "usage_per_level" in r], "epoch")


def _checkpoint_history(workdir: str) -> list[dict[str, Any]]:
  directory = os.path.join(workdir, "tokenizer")
  metrics_path = os.path.join(workdir, SID_METRICS)
  name = io.read_json(metrics_path).get("tokenizer") if io.exists(metrics_path) else None
  candidates = io.glob(directory, f"{name or '*'}_ckpt") if io.isdir(directory) else []
  if len(candidates) != 1:
    raise FileNotFoundError(f"{os.path.join(workdir, TOKENIZER_METRICS)}: no such file, and "
                            f"{len(candidates)} tokenizer checkpoint folders to read instead")
  manager = ocp.CheckpointManager(candidates[0],
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"{candidates[0]}: no tokenizer checkpoint")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  finally:
    manager.close()
  history = meta.get("history") if isinstance(meta, dict) else None
  if not isinstance(history, list):
    raise io.ArtifactError(f"{candidates[0]}/{step}: checkpoint meta has no 'history' list")
  return history


def recommender_history(workdir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(train records by step, validation records by epoch) of `recommender/metrics.jsonl`."""
  records = io.read_jsonl(os.path.join(workdir, RECOMMENDER_METRICS))
  train = last_per_key([r for r in records if r.get("kind") == "train"], "step")
  valid = last_per_key([r for r in records if r.get("kind") == "valid"], "epoch")
  return train, valid


# ---- drawing helpers -------------------------------------------------------------------------

def to_png(fig: Figure, dpi: int = 100) -> bytes:
  """The figure as PNG bytes."""
  buf = _bytes_io.BytesIO()
  FigureCanvasAgg(fig)
  fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
  return buf.getvalue()


def _missing(ax: Axes, message: str) -> None:
  """Writes `message` across an empty panel (wrapped; ignored by the layout engine)."""
  lines = [textwrap.fill(line, 48, break_on_hyphens=False) for line in message.splitlines()]
  ax.text(0.5, 0.5, "\n".join(lines), ha="center", va="center", fontsize=8,
          transform=ax.transAxes, in_layout=False)
  ax.set_xticks([])
  ax.set_yticks([])


def _figure(panels: int, rows: int = 1) -> tuple[Figure, list[Axes]]:
  cols = -(-panels // rows)
  fig = Figure(figsize=(_PANEL * cols, _PANEL * rows * 0.85), layout="constrained")
  axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
  for ax in axes[panels:]:
    ax.set_visible(False)
  return fig, axes[:panels]


# ---- figures ---------------------------------------------------------------------------------

def codebook_usage(runs: Mapping[str, str]) -> Figure:
  """Share of codes in use at every SID level over tokenizer training, one line per run.

  One panel per level (x: epoch, y: used codes / K). Codebook collapse shows as a line far
  below 1; R3-VAE's reference vector and rating quantisation are meant to keep it near 1.
  """
  histories, missing = {}, []
  for label, workdir in runs.items():
    try:
      histories[label] = tokenizer_history(workdir)
    except FileNotFoundError:
      missing.append(f"{label}: no {TOKENIZER_METRICS} or tokenizer checkpoint in {workdir}")
  levels = max((len(h[0]["usage_per_level"]) for h in histories.values() if h), default=1)
  fig, axes = _figure(levels)
  for level, ax in enumerate(axes):
    for i, (label, history) in enumerate(histories.items()):
      epochs = [r["epoch"] for r in history]
      # Distinct dashes and markers: runs at the same usage (often all at 1.0) stay visible.
      ax.plot(epochs, [r["usage_per_level"][level] for r in history], marker="os^d"[i % 4],
              ms=5 - i % 4, ls=("-", "--", ":", "-.")[i % 4], label=label)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"level {level + 1}")
    ax.set_xlabel("tokenizer epoch")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("codebook usage (used codes / K)")
  if histories:
    axes[0].legend(fontsize=8)
  if missing:
    note = "\n".join(missing) + "\n(RQ-KMeans has no training curve)"
    if histories:
      fig.suptitle(note, fontsize=8)
    else:
      _missing(axes[0], note)
  return fig


def sid_quality(runs: Mapping[str, str]) -> Figure:
  """Bars per run: Semantic Cohesion (higher is better), Preference Discrimination (lower is
  better) and collision rate (share of items whose L-code tuple is shared; lower is better)."""
  panels = (("semantic_cohesion", "semantic cohesion (higher better)"),
            ("preference_discrimination", "preference discrimination (lower better)"),
            ("collision_rate", "collision rate (lower better)"))
  metrics, missing = {}, []
  for label, workdir in runs.items():
    path = os.path.join(workdir, SID_METRICS)
    if io.exists(path):
      metrics[label] = io.read_json(path)
    else:
      missing.append(f"{label}: no {SID_METRICS} in {workdir}")
  fig, axes = _figure(len(panels))
  labels = list(metrics)
  colours = [f"C{i}" for i in range(len(runs))]
  for ax, (key, title) in zip(axes, panels):
    values = [np.nan if metrics[label].get(key) is None else float(metrics[label][key])
              for label in labels]  # null: undefined (e.g. PD with a single group)
    bars = ax.bar(labels, values, color=colours[:len(labels)])
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.axhline(0, color="black", lw=0.5)
    ax.grid(axis="y", alpha=0.3)
  if missing:
    if labels:
      fig.suptitle("\n".join(missing), fontsize=8)
    else:
      _missing(axes[0], "\n".join(missing))
  return fig


def training_curves(workdir: str, metric: str = "ndcg@10") -> Figure:
  """Recommender training loss per logged step and validation `metric` per epoch."""
  fig, (loss_ax, valid_ax) = _figure(2)
  try:
    train, valid = recommender_history(workdir)
  except FileNotFoundError:
    _missing(loss_ax, f"no {RECOMMENDER_METRICS} in {workdir} (run --mode=train)")
    valid_ax.set_visible(False)
    return fig
  loss_ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="C0")
  loss_ax.set_xlabel("step")
  loss_ax.set_ylabel("cross-entropy per SID token")
  loss_ax.set_title("training loss")
  loss_ax.grid(alpha=0.3)
  points = [r for r in valid if metric in r]
  if points:
    valid_ax.plot([r["epoch"] for r in points], [r[metric] for r in points], marker="o",
                  color="C1")
    best = max(points, key=lambda r: r[metric])
    valid_ax.annotate(f"best {best[metric]:.4f}", (best["epoch"], best[metric]),
                      textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    valid_ax.margins(x=0.1, y=0.2)
    valid_ax.set_xlabel("epoch")
    valid_ax.set_ylabel(metric)
    valid_ax.set_title(f"validation {metric}")
    valid_ax.grid(alpha=0.3)
  else:
    _missing(valid_ax, f"no validation records with {metric} in {RECOMMENDER_METRICS}")
  return fig


def pca_2d(vectors: np.ndarray) -> np.ndarray:
  """Projection on the two leading principal components.

  Args:
    vectors: float[N, D], N >= 2.

  Returns:
    float32[N, 2] (zero-padded when D < 2).
  """
  x = np.asarray(vectors, np.float64)
  x = x - x.mean(0, keepdims=True)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  out = x @ vt[:2].T
  return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))).astype(np.float32)


def item_projection(runs: Mapping[str, str], max_points: int = 5000, seed: int = 0) -> Figure:
  """Item vectors on their two leading principal components, coloured by level-1 code.

  One panel per run (its `vectors.npy` and `tokenizer/sid_table.npy`); at most `max_points`
  items (a fixed random sample). Colours cycle after 20 codes, so distant clusters may share one.
  Good level-1 codes form compact, same-coloured regions.
  """
  fig, axes = _figure(len(runs))
  for ax, (label, workdir) in zip(axes, runs.items()):
    paths = [os.path.join(workdir, VECTORS), os.path.join(workdir, SID_TABLE)]
    absent = [p for p in paths if not io.exists(p)]
    if absent:
      _missing(ax, f"{label}: missing " + ", ".join(absent))
      continue
    vectors, table = io.read_npy(paths[0]), io.read_npy(paths[1])
    if vectors.ndim != 2 or table.ndim != 2 or vectors.shape[0] != table.shape[0]:
      raise io.ArtifactError(f"{workdir}: vectors {vectors.shape} and SID table {table.shape} "
                             "must have one row per item")
    rows = np.arange(vectors.shape[0])
    if rows.size > max_points:
      rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    xy = pca_2d(vectors[rows])
    codes = table[rows, 0]
    ax.scatter(xy[:, 0], xy[:, 1], c=codes % 20, cmap="tab20", vmin=0, vmax=19, s=6,
               alpha=0.8, linewidths=0)
    ax.set_title(f"{label}: {np.unique(table[:, 0]).size} level-1 codes", fontsize=10)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
  return fig
