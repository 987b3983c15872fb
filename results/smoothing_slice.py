"""Label smoothing of the SID targets on a real Beauty slice, CPU: hard targets vs smoothing over
the trie siblings (and over the whole level), over table seeds. Writes
results/smoothing_slice_cpu.json.

  python results/smoothing_slice.py [OUT.json] [ARM ...]

Arms: hard | siblings | level (default: hard siblings), at eps = EPS. The slice, SIDs and the
small T5 of `ensemble_slice.py` (3,000 items, RQ-KMeans 3 x 16 codes, T5 2+2 d64, 8 epochs at
constant lr 1e-3), one recommender per arm on each seed's table; test Recall/NDCG@10. A proxy
for the paper-size rows, run to decide whether they are worth the GPU time.
"""
import os
import sys
import tempfile
import time

import numpy as np

import ensemble_slice
from r3vae_jax import io
from r3vae_jax.data import slices
from r3vae_jax.recommender import train as rec_train
from r3vae_jax.tokenizer import api as tok_api

EPS = 0.1
ARMS = {"hard": (0.0, "siblings"), "siblings": (EPS, "siblings"), "level": (EPS, "level")}


def main(out_path: str, arms: list[str]) -> None:
  splits, vectors = slices.beauty_prefix(ensemble_slice.NUM_ITEMS, dim=32)
  result = {"kind": "smoothing_slice", "commit": io.source_commit(), "device": "cpu",
            "num_items": ensemble_slice.NUM_ITEMS, "epochs": ensemble_slice.EPOCHS, "eps": EPS,
            "arms": arms, "seeds": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in ensemble_slice.SEEDS:
      c = ensemble_slice.config(seed)
      c.train.ensemble_size = 1
      table, _ = tok_api.fit_tokenizer(c, vectors, os.path.join(tmp, f"s{seed}"))
      result["seeds"][str(seed)] = {}
      for arm in arms:
        start, workdir = time.time(), os.path.join(tmp, f"s{seed}", arm)
        c.train.label_smoothing, c.train.smoothing_support = ARMS[arm]
        rec_train.train_recommender(c, workdir, table, splits)
        test = rec_train.evaluate_recommender(c, workdir, table, splits)
        result["seeds"][str(seed)][arm] = {
            **{k: test[k] for k in ensemble_slice.KEYS}, "seconds": time.time() - start}
        print(seed, arm, result["seeds"][str(seed)][arm], flush=True)
        io.write_json(out_path, result)
  for k in ensemble_slice.KEYS:
    for arm in arms:
      result[f"{k}_{arm}_mean"] = float(np.mean([s[arm][k] for s in result["seeds"].values()]))
    for arm in arms[1:]:
      result[f"{k}_{arm}_minus_{arms[0]}"] = [
          s[arm][k] - s[arms[0]][k] for s in result["seeds"].values()]
  io.write_json(out_path, result)
  print({k: v for k, v in result.items() if k != "seeds"})


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "smoothing_slice_cpu.json"),
       sys.argv[2:] or ["hard", "siblings"])
