"""Late fusion of runs with different SID tables on real Beauty, Toys and Sports slices, CPU:
each pair of seeds' mixture (recommender/fusion.py) vs the two runs alone.

  python results/fusion_slice.py [--tokenizer=rqkmeans|r3vae] [--out=OUT.json] [DATASET ...]

Per dataset (default beauty toys sports): the first NUM_ITEMS items of its 5-core file, and per
seed the slice, SIDs and small T5 of `ensemble_slice.py` (3 x 16 codes of RQ-KMeans, or of the
small R3-VAE of `configs/default.get_config`; one table per seed; T5 2+2 d64, 8 epochs at
constant lr 1e-3), one recommender each; then every pair of seeds fused on validation and test.
Default output: results/fusion_slice_<tokenizer>_cpu.json. Fusing two runs costs what the
ensemble of `ensemble_slice.py` costs (two trainings, two decodings), but its members need not
share a SID table. A proxy for the paper-size rows (which need the GPU), run to decide whether
they are worth the GPU time.
"""
import argparse
import itertools
import os
import tempfile
import time

import numpy as np

import ensemble_slice
from r3vae_jax import fuse
from r3vae_jax import io
from r3vae_jax.data import slices
from r3vae_jax.recommender import train as rec_train
from r3vae_jax.tokenizer import api as tok_api

DATASETS = ("beauty", "toys", "sports")
KS = (5, 10)


def main(out_path: str, tokenizer: str, datasets: list[str]) -> None:
  result = {"kind": "fusion_slice", "commit": io.source_commit(), "device": "cpu",
            "tokenizer": tokenizer,
            "num_items": ensemble_slice.NUM_ITEMS, "epochs": ensemble_slice.EPOCHS,
            "seeds": list(ensemble_slice.SEEDS), "datasets": {}}
  data = {name: slices.amazon_prefix(name, ensemble_slice.NUM_ITEMS, dim=32) for name in datasets}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in ensemble_slice.SEEDS:  # seed-major: every dataset has a pair after two seeds
      for name in datasets:
        splits, vectors = data[name]
        entry = result["datasets"].setdefault(name, {"runs": {}, "pairs": {}})
        start, workdir = time.time(), os.path.join(tmp, name, f"s{seed}")
        c = ensemble_slice.config(seed)
        c.tokenizer, c.train.ensemble_size = tokenizer, 1
        table, _ = tok_api.fit_tokenizer(c, vectors, workdir)
        rec_train.train_recommender(c, workdir, table, splits)
        for split in ("valid", "test"):
          rec_train.evaluate_recommender(c, workdir, table, splits, split)
        entry["runs"][str(seed)] = {"workdir": workdir, "seconds": time.time() - start}
        done = sorted(entry["runs"])
        for a, b in itertools.combinations(done, 2):
          pair = {split: fuse.fuse_runs([entry["runs"][a]["workdir"], entry["runs"][b]["workdir"]],
                                        split, None, KS) for split in ("valid", "test")}
          entry["pairs"][f"{a}+{b}"] = {
              split: {"members": [{k: m[k] for k in ensemble_slice.KEYS} for m in p["members"]],
                      "fused": {k: p["fused"][k] for k in ensemble_slice.KEYS}}
              for split, p in pair.items()}
        print(name, seed, {p: v["test"] for p, v in entry["pairs"].items()}, flush=True)
        io.write_json(out_path, result)
  for entry in result["datasets"].values():
    for run in entry["runs"].values():
      run.pop("workdir")
    for k in ensemble_slice.KEYS:
      pairs = [p["test"] for p in entry["pairs"].values()]
      entry[f"test_{k}_single_mean"] = float(np.mean([m[k] for p in pairs for m in p["members"]]))
      entry[f"test_{k}_fused_mean"] = float(np.mean([p["fused"][k] for p in pairs]))
      entry[f"test_{k}_fused_minus_best_member"] = [
          p["fused"][k] - max(m[k] for m in p["members"]) for p in pairs]
  io.write_json(out_path, result)
  print({name: {k: v for k, v in e.items() if k.startswith("test_")}
         for name, e in result["datasets"].items()})


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tokenizer", default="rqkmeans", choices=("rqkmeans", "r3vae"))
  parser.add_argument("--out", default=None)
  parser.add_argument("datasets", nargs="*", default=list(DATASETS))
  args = parser.parse_args()
  main(args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                f"fusion_slice_{args.tokenizer}_cpu.json"),
       args.tokenizer, args.datasets)
