"""The ensemble idea on a real Beauty slice, CPU: K recommenders on one SID table decoding
together vs each alone, over table seeds. Writes results/ensemble_slice_cpu.json.

  python results/ensemble_slice.py [OUT.json]

The first NUM_ITEMS Beauty items (users keeping >= 3 of them), 32-d PPMI-SVD vectors of their
training part, RQ-KMeans SIDs (3 x 16 codes, one table per seed), a small T5 (2+2 layers,
d_model 64, history 8) trained EPOCHS epochs per member, constant lr 1e-3; test Recall/NDCG@10 of
every member alone and of the members decoding together (recommender/ensemble.py). A proxy for
the paper-size rows (which need the GPU), run to decide whether they are worth the GPU time.
"""
import os
import sys
import tempfile
import time

import numpy as np

from r3vae_jax import io
from r3vae_jax.configs import default
from r3vae_jax.data import slices
from r3vae_jax.recommender import ensemble
from r3vae_jax.recommender import train as rec_train
from r3vae_jax.tokenizer import api as tok_api

NUM_ITEMS, EPOCHS, MEMBERS, SEEDS = 3000, 8, 2, (0, 1, 2)
KEYS = ("recall@10", "ndcg@10")


def config(seed: int):
  c = default.get_config("rqkmeans")
  c.seed = seed
  c.data.max_history = 8
  c.sid.update(dict(levels=3, codebook_size=16, max_collisions=64))
  c.rqkmeans.iters = 20
  c.recommender.update(dict(num_encoder_layers=2, num_decoder_layers=2, d_model=64,
                            num_heads=2, d_kv=32, d_ff=128, dropout=0.1))
  c.train.update(dict(batch_size=256, epochs=EPOCHS, warmup_steps=0, patience=100, prefetch=1,
                      eval_every_epochs=2, log_every_steps=100000, lr=1e-3,
                      schedule="constant", ensemble_size=MEMBERS))
  c.eval.update(dict(beam_size=20, batch_size=256, popularity_alphas=()))
  c.mesh.data = 1
  return c


def main(out_path: str) -> None:
  splits, vectors = slices.beauty_prefix(NUM_ITEMS, dim=32)
  result = {"kind": "ensemble_slice", "commit": io.source_commit(), "device": "cpu",
            "num_items": NUM_ITEMS, "epochs": EPOCHS, "members": MEMBERS, "seeds": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in SEEDS:
      start, c, workdir = time.time(), config(seed), os.path.join(tmp, f"s{seed}")
      table, _ = tok_api.fit_tokenizer(c, vectors, workdir)
      rec_train.train_recommender(c, workdir, table, splits)
      ensemble.train_members(c, workdir, table, splits)
      alone = [rec_train.evaluate_recommender(ensemble.member_config(c, k), d, table, splits)
               for k, d in enumerate(ensemble.member_workdirs(workdir, MEMBERS))]
      together = ensemble.evaluate(c, workdir, table, splits)
      result["seeds"][str(seed)] = {
          "members": [{k: m[k] for k in KEYS} for m in alone],
          "ensemble": {k: together[k] for k in KEYS}, "seconds": time.time() - start}
      print(seed, result["seeds"][str(seed)], flush=True)
      io.write_json(out_path, result)
  for k in KEYS:
    single = [m[k] for s in result["seeds"].values() for m in s["members"]]
    joint = [s["ensemble"][k] for s in result["seeds"].values()]
    result[f"{k}_single_mean"], result[f"{k}_ensemble_mean"] = np.mean(single), np.mean(joint)
    result[f"{k}_ensemble_minus_best_member"] = [
        s["ensemble"][k] - max(m[k] for m in s["members"]) for s in result["seeds"].values()]
  io.write_json(out_path, result)
  print({k: v for k, v in result.items() if k != "seeds"})


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "ensemble_slice_cpu.json"))
