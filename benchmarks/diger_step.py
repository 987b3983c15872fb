"""DIGER's joint training step: every batch padded to 20 history items vs length buckets.

Times the joint trainer's compiled update step (`diger.train.joint_program`, one device) at
paper size: the Beauty `diger+detached_follow` config (RQ-VAE tokenizer on 384-d vectors, 3 x 256
codes, T5 6+6 d_model 128, batch 512), a fresh tokenizer and random item vectors (speed does not
depend on the values), Beauty-like training histories (`synthetic_inputs.BEAUTY_LENGTHS`).
Variants:

* `padded`: every batch padded to `data.max_history` (the DIGER trainer before 0dfcf89).
* `bucketed`: `train.length_buckets` (4, 8, 12, 20), one program per bucket; an epoch's time
  weights each bucket's step time by its number of batches.

One program per history width (the padded variant's is the bucketed one's widest), compiled
concurrently, each timed on a few of its batches (median of `--repeats` blocks of `--iters`
steps after `--warmup`, closed by `block_until_ready`); the JSON holds seconds per step per
width, XLA's flops and bytes per step, the epoch estimate of each variant and their ratio.

  python -m benchmarks.diger_step --out=benchmarks/results/diger_step_h100.json
  python -m benchmarks.diger_step --tiny --out=/tmp/diger_step.json   # CPU smoke test
"""
from __future__ import annotations

import concurrent.futures
import itertools
import json
import sys
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import harness, physics, synthetic_inputs
from r3vae_jax import io, parallel
from r3vae_jax.configs import beauty
from r3vae_jax.diger import noise
from r3vae_jax.diger import train as diger_train
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.tokenizer import programs as tok_programs

VARIANTS = ("padded", "bucketed")
_BATCHES_PER_SHAPE = 3
_ITEMS, _VECTOR_DIM = 12101, 384  # Beauty's catalogue and MiniLM width

flags.DEFINE_string("out", None, "JSON file of both variants.")
flags.DEFINE_bool("tiny", False, "Tiny models and batch (CPU smoke test).")
flags.DEFINE_integer("warmup", 3, "Untimed steps per program.")
flags.DEFINE_integer("repeats", 5, "Timed blocks per program.")
flags.DEFINE_integer("iters", 10, "Steps per timed block.")
FLAGS = flags.FLAGS


def _config(tiny: bool) -> ml_collections.ConfigDict:
  c = beauty.get_config("diger+detached_follow")
  c.mesh.update(dict(data=1, model=1))
  if tiny:
    c.sid.update(dict(codebook_size=16, max_collisions=16))
    c.rqvae.update(dict(hidden=(32,), latent_dim=8))
    c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32,
                              num_heads=2, d_kv=16, d_ff=64))
    c.train.batch_size = 16
  return c


def main(argv: list[str]) -> None:
  del argv
  start = time.perf_counter()
  config = _config(FLAGS.tiny)
  mesh = parallel.config_mesh(config)
  rep = parallel.replicated(mesh)
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(_ITEMS, _VECTOR_DIM)).astype(np.float32)
  table = synthetic_inputs.random_sid_table(rng, _ITEMS, config.sid.levels,
                                            config.sid.codebook_size, config.sid.max_collisions)
  examples = synthetic_inputs.beauty_like_examples(_ITEMS, config.data.max_history, seed=1)
  pre = config.copy_and_resolve_references()
  pre.tokenizer = config.diger.pretrain
  tokenizer = tok_programs.build_model(pre, _VECTOR_DIM, config.seed)
  prog = diger_train.joint_program(config, diger_train.joint_config(config), tokenizer, mesh,
                                   total_steps=10_000)
  args = (jax.device_put(vectors, rep), jax.device_put(table, rep),
          jax.device_put(noise.decay_index(config.diger.decay), rep))
  # One program per history width, shared by the variants (the padded one is the bucketed
  # one's widest); compiled concurrently on threads (XLA releases the GIL).
  plans, batches, counts = {}, {}, {}
  for variant in VARIANTS:
    buckets = config.train.length_buckets if variant == "bucketed" else ()
    plans[variant] = rec_data.make_plan(examples, config.train.batch_size, config.seed,
                                        tuple(buckets))
    source = diger_train.ItemBatchSource(examples, plans[variant])
    counts[variant] = {}
    for width, steps in rec_data.steps_by_width(plans[variant]).items():
      width = width or config.data.max_history
      counts[variant][width] = len(steps)
      batches.setdefault(width, [parallel.to_global(source.host_batch(s), mesh)
                                 for s in steps[:_BATCHES_PER_SHAPE]])
  compile_start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(len(batches)) as pool:
    compiled = dict(zip(batches, pool.map(
        lambda w: prog.train_step.lower(prog.state, batches[w][0], *args).compile(), batches)))
  compile_s = time.perf_counter() - compile_start
  per_width = {}
  for width in sorted(batches):
    loop = harness.StepLoop(lambda s, b, c=compiled[width]: c(s, b, *args),
                            jax.tree.map(jnp.copy, prog.state),  # the step donates its state
                            itertools.cycle(batches[width]).__next__)
    timing = harness.measure(loop, jax.block_until_ready, warmup=FLAGS.warmup,
                             repeats=FLAGS.repeats, iters=FLAGS.iters)
    per_width[width] = {**physics.xla_cost(compiled[width]),
                        "seconds_per_step": timing["seconds"], "timing": timing}
  results: dict[str, Any] = {"environment": harness.environment(),
                             "command": " ".join(["python -m benchmarks.diger_step",
                                                  *sys.argv[1:]]),
                             "tiny": FLAGS.tiny,
                             "batch": config.train.batch_size, "compile_all_s": compile_s,
                             "per_width": {str(w): v for w, v in per_width.items()},
                             "variants": {}}
  for variant in VARIANTS:
    epoch_s = sum(per_width[w]["seconds_per_step"] * n for w, n in counts[variant].items())
    entry = {"variant": variant, "epoch_s": epoch_s,
             "widths": sorted(counts[variant]),
             "steps_per_epoch": plans[variant].steps_per_epoch,
             "steps_per_width": {str(w): n for w, n in sorted(counts[variant].items())},
             "examples_per_s": len(examples) / epoch_s}
    results["variants"][variant] = entry
    print(json.dumps(entry), flush=True)
  padded, bucketed = (results["variants"][v]["epoch_s"] for v in VARIANTS)
  results["speedup_bucketed_over_padded"] = padded / bucketed
  results["total_s"] = time.perf_counter() - start
  print(json.dumps({"speedup_bucketed_over_padded": results["speedup_bucketed_over_padded"],
                    "total_s": results["total_s"]}), flush=True)
  if FLAGS.out:
    io.write_json(FLAGS.out, results)


if __name__ == "__main__":
  app.run(main)
