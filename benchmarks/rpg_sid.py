"""RPG's OPQ SIDs on the real catalogues: usage and perplexity per codebook, collisions.

  python -m benchmarks.rpg_sid --beauty_npy=beauty_minilm.npy --out=results/rpg_sid_metrics_cpu.json

Rows: Beauty with MiniLM text vectors and with interaction vectors (32 codes), Sports and Toys
with interaction vectors (16 codes), each with its preset (`configs/rpg.py`), seed 0.
"""
from __future__ import annotations

import json
import time

from absl import app
from absl import flags
import jax
import numpy as np

from r3vae_jax import io
from r3vae_jax.configs import rpg as rpg_config
from r3vae_jax.data import pipeline, splits as splits_lib
from r3vae_jax.rpg import train

_BEAUTY_NPY = flags.DEFINE_string("beauty_npy", "", "Beauty MiniLM vectors (.npy); empty skips")
_OUT = flags.DEFINE_string("out", None, "results JSON")


def _one(arg: str, overrides: dict) -> dict:
  config = rpg_config.get_config(arg)
  config.vectors.update(overrides)
  inter = pipeline.prepare(config)
  spl = splits_lib.leave_one_out(inter.sequences)
  vectors = pipeline.item_vectors(config, inter, spl)
  start = time.perf_counter()
  sids, report = train.tokenize(vectors, spl.train, config.rpg, config.seed)
  report.update(dataset=inter.name, vectors=pipeline.vectors_label(config), items=len(sids),
                codes_per_item=int(sids.shape[1]), seconds=time.perf_counter() - start,
                mean_usage=float(np.mean(report["usage_per_codebook"])),
                min_usage=float(np.min(report["usage_per_codebook"])))
  print(json.dumps({k: v for k, v in report.items() if "per_codebook" not in k}), flush=True)
  return report


def main(argv):
  del argv
  rows = []
  if _BEAUTY_NPY.value:
    rows.append(_one("beauty,npy", {"path": _BEAUTY_NPY.value, "label": "minilm-text"}))
  rows += [_one(arg, {}) for arg in ("beauty,interactions-svd", "sports", "toys")]
  io.write_json(_OUT.value, {"kind": "sid_metrics", "method": "rpg",
                             "device": jax.devices()[0].device_kind,
                             "commit": io.source_commit(), "rows": rows})


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])
  app.run(main)
