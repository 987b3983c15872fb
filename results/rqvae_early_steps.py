"""The RQ-VAE's first training steps on Beauty MiniLM vectors (CPU): plain, with centred inputs
(variant `centered`) and with the rate warmed up over 300 steps (variant `warmup`). SID usage per
level and collision rate of all items after k-means init and after steps 10, 30, 60, 150, 300,
600. Writes results/rqvae_early_steps_cpu.json.

  python results/rqvae_early_steps.py VECTORS.npy [OUT.json]

The Beauty recipe's RQ-VAE (`configs/beauty.py:rqvae`: 3 x 256 codes, AdamW lr 1e-3, batch 1024)
trained step by step on random batches (seed 0), so the collapse right after the k-means init
is visible; the trainer itself logs only every `eval_every` epochs (12 steps each).
"""
import os
import sys

from flax import nnx
import jax
import numpy as np
import optax

from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax import quantize
from r3vae_jax.configs import beauty
from r3vae_jax.tokenizer import models
from r3vae_jax.tokenizer import train

STEPS, REPORT_AT, SEED = 600, (0, 10, 30, 60, 150, 300, 600), 0


def run(vectors: np.ndarray, variant: str) -> list[dict]:
  config = beauty.get_config(variant)
  config.seed = SEED
  c = config.rqvae
  # The trainer's own start: the mean (centred), the k-means init, AdamW.
  setup = train.init_state(config, vectors, parallel.make_mesh(), kmeans=True)
  graphdef, params, opt = setup.graphdef, setup.state["params"], setup.state["opt"]
  tx, x = train.optimizer(c.lr, c.weight_decay, c.warmup_steps), setup.vectors

  @jax.jit
  def step(params, opt, batch):
    grads = jax.grad(lambda p: nnx.merge(graphdef, p)(batch).loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  codes_of = jax.jit(lambda p: models.sid_pass(nnx.merge(graphdef, p), x).codes)
  rng, report = np.random.default_rng(SEED), []
  for s in range(STEPS + 1):
    if s in REPORT_AT:
      codes = codes_of(params)
      report.append({"step": s, "collision_rate": float(quantize.collision_rate(codes)),
                     "codes_used_per_level": [int(u * c) for u, c in zip(
                         np.asarray(quantize.usage_per_level(codes, config.sid.codebook_size)),
                         [config.sid.codebook_size] * config.sid.levels)]})
      print(variant, report[-1], flush=True)
    if s < STEPS:
      idx = rng.choice(len(vectors), c.batch_size, replace=False)
      params, opt = step(params, opt, x[idx])
  return report


def main(vectors_path: str, out_path: str) -> None:
  vectors = np.load(vectors_path).astype(np.float32)
  io.write_json(out_path, {
      "kind": "rqvae_early_steps", "commit": io.source_commit(), "device": "cpu",
      "vectors": os.path.basename(vectors_path),
      "vectors_fingerprint": io.fingerprint_array(vectors), "seed": SEED,
      "plain": run(vectors, "rqvae"), "centered": run(vectors, "rqvae+centered"),
      "warmup": run(vectors, "rqvae+warmup")})


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "rqvae_early_steps_cpu.json"))
