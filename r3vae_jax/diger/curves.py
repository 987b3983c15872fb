"""DIGER usage curves: the per-epoch records of several decay runs, in one JSON and one table.

  python -m r3vae_jax.diger.curves --root=DIR --dataset=beauty [--modes=frequency,gumbel]

Reads `DIR/<mode>/diger/metrics.jsonl` (one JSON line per joint epoch, written by
`diger/train.py`; `launch/diger_curves.sh` makes one such workdir per decay) and writes
`results/diger_curves_<dataset>.json` (or `--out`):

  {"kind": "diger_curves", "dataset", "device", "commit", "command",
   "modes": {mode: {"workdir", "config" (its diger/train/sid sections),
                    "epochs": [{"epoch", "usage@1".."usage@L", "collision_rate",
                                "max_group_size", "table_valid", "sigma" [L],
                                "noisy_fraction", "rec_ce", "valid_ndcg@10", "seconds"}, ...],
                    "best_epoch", "best_valid_ndcg@10", "train_seconds"}}}

Epoch 0 is the pretrained tokenizer (no training, no validation: null). A mode whose file is
missing (its run failed) is listed with `"error"` instead of epochs. Then it prints the table.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from absl import app
from absl import flags

from r3vae_jax import io
from r3vae_jax.diger import noise

_ROOT = flags.DEFINE_string("root", None, "Folder holding one workdir per mode: ROOT/<mode>.")
_MODES = flags.DEFINE_list("modes", list(noise.DECAYS), "Decays to collect, in table order.")
_DATASET = flags.DEFINE_string("dataset", "synthetic", "Dataset name, for the output name.")
_OUT = flags.DEFINE_string("out", None,
                           "Output JSON (default results/diger_curves_<dataset>.json).")

METRICS = os.path.join("diger", "metrics.jsonl")
SELECT = "ndcg@10"


def epoch_row(record: dict[str, Any]) -> dict[str, Any]:
  """The curve fields of one `diger/metrics.jsonl` record (absent ones: None)."""
  row = {"epoch": int(record["epoch"])}
  for level, usage in enumerate(record["usage_per_level"], 1):
    row[f"usage@{level}"] = usage
  row.update({
      "collision_rate": record["collision_rate"], "max_group_size": record["max_group_size"],
      "table_valid": record.get("table_valid", True), "sigma": record["sigma"],
      "noisy_fraction": record.get("train_noisy_fraction"), "rec_ce": record.get("train_rec_ce"),
      f"valid_{SELECT}": record.get(f"valid_{SELECT}"), "seconds": record.get("seconds")})
  return row


def read_mode(workdir: str) -> dict[str, Any]:
  """One mode's curve from `workdir/diger/metrics.jsonl`.

  A resumed run may have written an epoch twice (replayed after a crash): the last line wins.

  Raises:
    ArtifactError: the file is missing, empty or not JSON lines.
  """
  path = os.path.join(workdir, METRICS)
  if not io.exists(path):
    raise io.ArtifactError(f"{path}: missing (did the run of this mode fail?)")
  by_epoch = {row["epoch"]: row for row in io.read_jsonl(path, convert=epoch_row)}
  if not by_epoch:
    raise io.ArtifactError(f"{path}: no epoch records")
  rows = [by_epoch[e] for e in sorted(by_epoch)]
  validated = [r for r in rows if r[f"valid_{SELECT}"] is not None]
  best = max(validated, key=lambda r: r[f"valid_{SELECT}"], default=None)
  config_path = os.path.join(workdir, "config.json")  # main.py writes it after the stage
  config = io.read_json(config_path) if io.exists(config_path) else {}
  return {"workdir": workdir, "epochs": rows,
          "config": {k: config[k] for k in ("diger", "train", "sid") if k in config},
          "best_epoch": best["epoch"] if best else None,
          f"best_valid_{SELECT}": best[f"valid_{SELECT}"] if best else None,
          "train_seconds": sum(r["seconds"] or 0.0 for r in rows)}


def collect(root: str, modes: list[str]) -> dict[str, dict[str, Any]]:
  """{mode: `read_mode(root/mode)` or {"workdir", "error"}} for every mode, in order."""
  out = {}
  for mode in modes:
    noise.check_decay(mode)
    workdir = os.path.join(root, mode)
    try:
      out[mode] = read_mode(workdir)
    except io.ArtifactError as e:
      out[mode] = {"workdir": workdir, "error": str(e)}
  return out


def format_table(modes: dict[str, dict[str, Any]]) -> str:
  """A plain-text table: one block per mode, one row per epoch."""
  def num(v, spec):
    return "-" if v is None else format(v, spec)

  lines = []
  for mode, curve in modes.items():
    if "error" in curve:
      lines += [f"{mode}: no curve ({curve['error']})", ""]
      continue
    levels = sum(1 for k in curve["epochs"][0] if k.startswith("usage@"))
    head = (["epoch"] + [f"use@{l}" for l in range(1, levels + 1)] +
            ["collide", "maxgrp", "sigma", "noisy", "rec_ce", "N@10", "sec"])
    lines.append(f"{mode} (best epoch {curve['best_epoch']}, "
                 f"valid {SELECT} {num(curve[f'best_valid_{SELECT}'], '.4f')})")
    lines.append("  ".join(f"{h:>7s}" for h in head))
    for r in curve["epochs"]:
      cells = ([str(r["epoch"]) + ("" if r["table_valid"] else "!")] +
               [num(r[f"usage@{l}"], ".3f") for l in range(1, levels + 1)] +
               [num(r["collision_rate"], ".3f"), str(r["max_group_size"]),
                "/".join(f"{s:.2f}" for s in r["sigma"]), num(r["noisy_fraction"], ".3f"),
                num(r["rec_ce"], ".3f"), num(r[f"valid_{SELECT}"], ".4f"),
                num(r["seconds"], ".0f")])
      lines.append("  ".join(f"{c:>7s}" for c in cells))
    lines.append("")
  lines.append("! = no valid SID table that epoch (a code tuple held more than "
               "sid.max_collisions items)")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _ROOT.value:
    raise app.UsageError("--root is required")
  import jax  # pylint: disable=g-import-not-at-top  # only for the device name.
  modes = collect(_ROOT.value, _MODES.value)
  out = _OUT.value or os.path.join("results", f"diger_curves_{_DATASET.value}.json")
  io.write_json(out, {"kind": "diger_curves", "dataset": _DATASET.value,
                      "device": jax.devices()[0].device_kind, "commit": io.source_commit(),
                      "command": " ".join(sys.argv), "modes": modes})
  print(format_table(modes))
  print(f"curves: {out}")
  if all("error" in c for c in modes.values()):
    sys.exit(f"error: no mode under {_ROOT.value} has a curve")


if __name__ == "__main__":
  app.run(main)
