"""Recommender training step time, variant by variant: where the step time goes.

Times the trainer's compiled update step (`recommender.programs.train_programs`, one device) on
pre-placed batches, paper size (T5 6+6, d_model 128, 4 heads, d_kv 64, d_ff 256, ReLU, dropout
0.1, SIDs 3 x 256 + 256 collision codes, history 20 items x 4 tokens, batch 512). Histories
follow Beauty's training-history lengths (`synthetic_inputs.BEAUTY_LENGTHS`), so padding is as
PAD-heavy as in training. Variants (`--variants`):

* `scatter`: embedding gradient by the gather's scatter-add (`recommender.embed_grad=scatter`),
  every batch padded to 20 items: the step before today's changes, less the position-bias and
  item-position scatter-adds.
* `base`: the default step (one-hot embedding gradient), padded to 20 items.
* `bf16`: `base` computing in bfloat16.
* `nodropout`: `base` with dropout 0.
* `bucketed`: `base` with length buckets (`train.length_buckets`): one compiled step per bucket,
  each timed on batches of that bucket; an epoch's time weights them by Beauty's batch count per
  bucket.
* `bucketed_bf16`: both.

Per batch shape: XLA's flops and bytes, and the approximate kernel launches per step (if a
bucket's step time does not shrink with its tokens, the step is launch/latency-bound). Each
variant reports seconds per step (median of `--repeats` blocks of `--iters` steps after
warm-up, closed by `block_until_ready`) and training examples/s over one Beauty epoch (real
examples, filler rows excluded). All programs are compiled first, concurrently on a thread
pool (XLA releases the GIL; the first alone, to fill the autotuning cache), then timed one by
one. Compilation dominates the run time (10 programs by default; fewer with `--variants`).

  python -m benchmarks.recommender_variants --out=/tmp/recommender_variants.json
  python -m benchmarks.recommender_variants --tiny --out=/tmp/tiny.json   # CPU smoke test
"""
from __future__ import annotations

import concurrent.futures
import itertools
import json
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
from r3vae_jax.configs import default
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.recommender import programs as rec_programs
from r3vae_jax.recommender.tokens import layout_from_config

VARIANTS = ("scatter", "base", "bf16", "nodropout", "bucketed", "bucketed_bf16")
_BATCHES_PER_SHAPE = 3

flags.DEFINE_string("out", None, "JSON file of all variants.")
flags.DEFINE_list("variants", list(VARIANTS), f"Variants to run, of {VARIANTS}.")
flags.DEFINE_bool("tiny", False, "Tiny model and batch (CPU smoke test).")
flags.DEFINE_integer("batch", 512, "Global batch (--tiny: 16).")
flags.DEFINE_integer("warmup", 3, "Untimed steps per program.")
flags.DEFINE_integer("repeats", 5, "Timed blocks per program.")
flags.DEFINE_integer("iters", 10, "Steps per timed block.")
flags.DEFINE_integer("compile_threads", 8, "Programs compiled at once.")
FLAGS = flags.FLAGS


def _config(variant: str, tiny: bool, batch: int) -> ml_collections.ConfigDict:
  c = default.base_config()
  c.train.batch_size = batch
  c.mesh.update(dict(data=1, model=1))
  if tiny:
    c.sid.codebook_size, c.sid.max_collisions = 16, 16
    c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32,
                              num_heads=2, d_kv=16, d_ff=64))
  if variant == "scatter":
    c.recommender.embed_grad = "scatter"
  if variant.endswith("bf16"):
    c.recommender.dtype = "bfloat16"
  if variant == "nodropout":
    c.recommender.dropout = 0.0
  if not variant.startswith("bucketed"):
    c.train.length_buckets = ()
  return c


def _program_key(config: ml_collections.ConfigDict, items: int) -> tuple[str, int]:
  """Programs that differ only in `train.length_buckets` are the same for one batch shape."""
  c = config.copy_and_resolve_references()
  c.train.length_buckets = ()
  return io.fingerprint_json(c.to_dict()), items


def _prepare(variant: str, examples: rec_data.Examples, table: np.ndarray, state: dict
             ) -> dict[str, Any]:
  """The variant's programs (lowered, not compiled; by `_program_key`), batches, epoch plan.

  `state` is the train state every variant starts from (their parameters and optimizer states
  have the same structure), so only one init program is compiled.
  """
  config = _config(variant, FLAGS.tiny, FLAGS.batch if not FLAGS.tiny else 16)
  mesh = parallel.config_mesh(config)
  plan = rec_data.make_plan(examples, config.train.batch_size, config.seed,
                            config.train.length_buckets)
  order = plan.order(0)
  prog = rec_programs.train_programs(config, mesh, 1000)
  source = rec_data.BatchSource(examples, plan, layout_from_config(config).item_tokens(table),
                                table)
  shapes, counts, real = {}, {}, {}
  for items, steps in rec_data.steps_by_width(plan).items():
    items = items or config.data.max_history
    batches = [parallel.to_global(source.host_batch(s), mesh)
               for s in steps[:_BATCHES_PER_SHAPE]]
    shapes[items] = {"batches": batches, "key": _program_key(config, items),
                     "lower": lambda b=batches[0]: prog.train_step.lower(state, b)}
    counts[items] = len(steps)
    real[items] = sum(float(plan.rows(s, order)[1].sum()) for s in steps)
  return {"config": config, "shapes": shapes, "counts": counts, "real": real}


def _program_facts(compiled: Any) -> dict[str, Any]:
  """XLA's flops and bytes of one step, and its kernel launches (approximate: fusions, library
  calls and RNG ops of the optimised module; a step of many small kernels is latency-bound)."""
  text = compiled.as_text()
  kernels = sum(text.count(f" {op}(") for op in ("fusion", "custom-call", "rng-bit-generator"))
  return {"kernels_approx": kernels, **physics.xla_cost(compiled)}


def _time_shape(compiled: Any, batches: list, state0: dict) -> dict[str, Any]:
  loop = harness.StepLoop(compiled, jax.tree.map(jnp.copy, state0),  # the step donates its state
                          itertools.cycle(batches).__next__)
  return harness.measure(loop, jax.block_until_ready, warmup=FLAGS.warmup,
                         repeats=FLAGS.repeats, iters=FLAGS.iters)


def main(argv: list[str]) -> None:
  del argv
  unknown = set(FLAGS.variants) - set(VARIANTS)
  if unknown:
    raise ValueError(f"--variants: unknown {sorted(unknown)}, expected some of {VARIANTS}")
  start = time.perf_counter()
  probe = _config("base", FLAGS.tiny, 16)
  table = synthetic_inputs.random_sid_table(np.random.default_rng(0), 12101, probe.sid.levels,
                                            probe.sid.codebook_size, probe.sid.max_collisions)
  examples = synthetic_inputs.beauty_like_examples(len(table), probe.data.max_history,
                                                  seed=1)
  first = _config(FLAGS.variants[0], FLAGS.tiny, FLAGS.batch if not FLAGS.tiny else 16)
  state0 = rec_programs.train_programs(first, parallel.config_mesh(first), 1000).init()
  prepared = {v: _prepare(v, examples, table, state0) for v in FLAGS.variants}
  lowered = {}
  for p in prepared.values():
    for shape in p["shapes"].values():
      if shape["key"] not in lowered:
        lowered[shape["key"]] = shape["lower"]()
  compile_start = time.perf_counter()
  # The first program alone fills XLA's autotuning cache for the shapes the others share.
  keys = list(lowered)
  compiled = {keys[0]: lowered[keys[0]].compile()}
  first_compile_s = time.perf_counter() - compile_start
  with concurrent.futures.ThreadPoolExecutor(FLAGS.compile_threads) as pool:
    compiled.update(zip(keys[1:], pool.map(lambda k: lowered[k].compile(), keys[1:])))
  compile_s = time.perf_counter() - compile_start
  timings: dict[tuple[str, int], dict[str, Any]] = {}
  results: dict[str, Any] = {
      "environment": harness.environment(), "tiny": FLAGS.tiny, "batch": FLAGS.batch,
      "prepare_s": compile_start - start, "first_compile_s": first_compile_s,
      "compile_all_s": compile_s, "programs": len(lowered),
      "variants": {}}
  for variant, p in prepared.items():
    per_shape, epoch_s = {}, 0.0
    for items, shape in p["shapes"].items():
      if shape["key"] not in timings:
        timings[shape["key"]] = _time_shape(compiled[shape["key"]], shape["batches"], state0)
      timing = timings[shape["key"]]
      per_shape[str(items)] = {**_program_facts(compiled[shape["key"]]),
          "seconds_per_step": timing["seconds"], "steps_per_epoch": p["counts"][items],
          "timing": timing}
      epoch_s += timing["seconds"] * p["counts"][items]
    steps = sum(p["counts"].values())
    r = p["config"].recommender
    entry = {"variant": variant, "seconds_per_step": epoch_s / steps,
             "examples_per_s": sum(p["real"].values()) / epoch_s,
             "padded_examples_per_s": steps * p["config"].train.batch_size / epoch_s,
             "epoch_s": epoch_s, "steps_per_epoch": steps, "per_shape": per_shape,
             "dtype": r.dtype, "dropout": r.dropout, "embed_grad": r.embed_grad,
             "length_buckets": list(p["config"].train.length_buckets)}
    results["variants"][variant] = entry
    print(json.dumps({k: v for k, v in entry.items() if k != "per_shape"}
                     | {"per_shape_s": {k: v["seconds_per_step"] for k, v in per_shape.items()},
                        "per_shape_kernels": {k: v["kernels_approx"]
                                              for k, v in per_shape.items()}}), flush=True)
  results["total_s"] = time.perf_counter() - start
  print(json.dumps({"first_compile_s": first_compile_s, "compile_all_s": compile_s,
                    "programs": len(lowered),
                    "total_s": results["total_s"]}), flush=True)
  if FLAGS.out:
    io.write_json(FLAGS.out, results)


if __name__ == "__main__":
  app.run(main)
