"""Centred vs plain RQ-VAE inputs on a real Beauty slice, CPU: SID quality and the fixed-table
recommender's NDCG@10 over seeds. Writes results/rqvae_center_slice_cpu.json.

  python results/rqvae_center_slice.py VECTORS.npy [OUT.json]

VECTORS.npy: the Beauty MiniLM item vectors (row i = item i; `python -m
benchmarks.text_encoder_bench --dataset=beauty --out_vectors=...`). The first NUM_ITEMS Beauty
items (users keeping >= 3 of them), their MiniLM rows; an RQ-VAE (3 x 32 codes, the recipe's
encoder and latent, EPOCHS_TOKENIZER epochs, best epoch by collision rate) with
`rqvae.center_inputs` off and on; a small T5 (2+2 layers, d_model 64, history 8) trained on each
table for EPOCHS epochs at a cosine lr 1e-3; validation and test Recall/NDCG@10. A proxy for the
paper-size rows `beauty:rqvae+centered`, run to decide whether they are worth the GPU time.
"""
import os
import sys
import tempfile
import time

import numpy as np

from r3vae_jax import io
from r3vae_jax.configs import default
from r3vae_jax.data import slices
from r3vae_jax.recommender import train as rec_train
from r3vae_jax.tokenizer import api as tok_api

NUM_ITEMS, EPOCHS, EPOCHS_TOKENIZER, SEEDS = 3000, 12, 100, (0, 1, 2)
KEYS = ("recall@10", "ndcg@10")
SID_KEYS = ("collision_rate", "usage_per_level", "perplexity_per_level", "semantic_cohesion",
            "max_group_size", "reconstruction_mse", "best_epoch")


def config(seed: int, center: bool):
  c = default.get_config("rqvae")
  c.seed = seed
  c.data.max_history = 8
  c.sid.update(dict(levels=3, codebook_size=32, max_collisions=256))
  c.rqvae.update(dict(epochs=EPOCHS_TOKENIZER, eval_every=10, batch_size=256, kmeans_iters=20,
                      center_inputs=center))
  c.recommender.update(dict(num_encoder_layers=2, num_decoder_layers=2, d_model=64,
                            num_heads=2, d_kv=32, d_ff=128, dropout=0.1))
  c.train.update(dict(batch_size=256, epochs=EPOCHS, warmup_steps=0, patience=100, prefetch=1,
                      eval_every_epochs=2, log_every_steps=100000, lr=1e-3,
                      schedule="cosine", example_window=20))
  c.eval.update(dict(beam_size=20, batch_size=256, popularity_alphas=()))
  c.mesh.data = 1
  return c


def main(vectors_path: str, out_path: str) -> None:
  splits, _ = slices.beauty_prefix(NUM_ITEMS, dim=8)
  vectors = np.load(vectors_path)[:NUM_ITEMS].astype(np.float32)
  result = {"kind": "rqvae_center_slice", "commit": io.source_commit(), "device": "cpu",
            "vectors": os.path.basename(vectors_path),
            "vectors_fingerprint": io.fingerprint_array(vectors), "num_items": NUM_ITEMS,
            "epochs": EPOCHS, "epochs_tokenizer": EPOCHS_TOKENIZER, "runs": {}}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in SEEDS:
      for center in (False, True):
        name = f"{'centered' if center else 'plain'}_s{seed}"
        start, c, workdir = time.time(), config(seed, center), os.path.join(tmp, name)
        table, sid = tok_api.fit_tokenizer(c, vectors, workdir)
        best = rec_train.train_recommender(c, workdir, table, splits)
        test = rec_train.evaluate_recommender(c, workdir, table, splits)
        result["runs"][name] = {
            "sid": {k: sid[k] for k in SID_KEYS if k in sid},
            "valid": {k: best["best_valid"][k] for k in KEYS},
            "test": {k: test[k] for k in KEYS}, "seconds": round(time.time() - start, 1)}
        print(name, result["runs"][name], flush=True)
        io.write_json(out_path, result)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "rqvae_center_slice_cpu.json"))
