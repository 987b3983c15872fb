"""Recommender training examples/s: ours (the trainer's programs) vs Hugging Face T5.

Synthetic training examples of the real shape (Beauty-size catalogue of random SIDs, histories
of 1..max_history items flattened to `max_history * (L+1)` left-padded tokens, the next item's
L+1 tokens as target), the paper's model and batch. Variants:

* `ours`: the trainer's update step (`recommender.programs.train_programs`, AOT-compiled) fed by
  the trainer's input pipeline (`recommender.data.device_batches`: host batch assembly on a
  background thread, transfer, prefetch 2); what `train_recommender` runs per step.
* `ours_step_only`: the same compiled step on pre-placed device batches (no input pipeline).
* `torch_eager`: `T5ForConditionalGeneration(labels=...)` + AdamW + clipping + schedule, fed by
  a standard `DataLoader` (default collation, pinned memory, `.to(device)`).
* `torch_eager_device_data`: the same with the examples already on the GPU.
* `torch_compiled`: `torch.compile(model)` + fused AdamW, device data.

Both sides start from the same weights (ours copied into T5). Both pad every history to
`max_history` items (no per-batch dynamic padding), so they do the same work per example.
"""
from __future__ import annotations

import itertools
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from benchmarks import harness, physics, synthetic_inputs
from r3vae_jax import parallel
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.recommender import programs as rec_programs
from r3vae_jax.recommender.tokens import layout_from_config

_ROTATING_BATCHES = 8


def _examples(config: ml_collections.ConfigDict, items: int, num_examples: int, seed: int
              ) -> tuple[np.ndarray, rec_data.Examples]:
  rng = np.random.default_rng(seed)
  table = synthetic_inputs.random_sid_table(rng, items, config.sid.levels,
                                            config.sid.codebook_size, config.sid.max_collisions)
  history = synthetic_inputs.random_histories(rng, num_examples, config.data.max_history, items)
  target = rng.integers(0, items, num_examples).astype(np.int32)
  return table, rec_data.Examples(history, target)


def _ours(config: ml_collections.ConfigDict, table: np.ndarray, examples: rec_data.Examples,
          opts: harness.Options, shared: dict) -> tuple[dict[str, Any], dict[str, Any]]:
  layout = layout_from_config(config)
  item_tokens = layout.item_tokens(table)
  mesh = parallel.config_mesh(config)
  plan = rec_data.BatchPlan(len(examples), config.train.batch_size, config.seed)
  total_steps = config.train.epochs * plan.steps_per_epoch
  prog = rec_programs.train_programs(config, mesh, total_steps)
  state = prog.init()
  shared["params"] = jax.device_get(state["params"])
  source = rec_data.BatchSource(examples, plan, item_tokens, table)
  placed = [parallel.to_global(source.host_batch(i), mesh) for i in range(_ROTATING_BATCHES)]
  start = time.perf_counter()
  compiled = prog.train_step.lower(state, placed[0]).compile()
  compile_s = time.perf_counter() - start
  cost = physics.xla_cost(compiled)
  batch = config.train.batch_size
  step_only = harness.StepLoop(compiled, state, itertools.cycle(placed).__next__)
  timing = harness.measure(step_only, jax.block_until_ready, warmup=opts.warmup + 2,
                           repeats=opts.repeats, iters=opts.torch_steps)
  step_only_result = {"rate": batch / timing["seconds"], "seconds_per_step": timing["seconds"],
                      "timing": timing, "xla_flops_per_step": cost["flops"],
                      "xla_bytes_per_step": cost["bytes"]}
  stream = iter(rec_data.device_batches(source, mesh, 0, 1 << 30, config.train.prefetch))
  pipeline_step = harness.StepLoop(compiled, step_only.state, lambda: next(stream)[1])
  try:
    timing = harness.measure(pipeline_step, jax.block_until_ready, warmup=opts.warmup + 2,
                             repeats=opts.repeats, iters=opts.torch_steps)
  finally:
    stream.close()
  pipeline = {"rate": batch / timing["seconds"], "seconds_per_step": timing["seconds"],
              "compile_s": compile_s, "timing": timing, "xla_flops_per_step": cost["flops"],
              "xla_bytes_per_step": cost["bytes"]}
  return pipeline, step_only_result


def _torch(config: ml_collections.ConfigDict, table: np.ndarray, examples: rec_data.Examples,
           params: dict, data: str, compiled: bool, shared: dict, opts: harness.Options
           ) -> dict[str, Any]:
  import torch
  from benchmarks.torch_reference import recommender as tr, weights
  device, t = opts.torch_device, config.train
  layout = layout_from_config(config)
  model = tr.build(config.recommender, layout.vocab_size, config.seed)
  weights.load_t5(model, params)
  model.to(device).train()
  steps_per_epoch = len(examples) // t.batch_size
  optimizer, schedule = tr.make_optimizer(model, t.lr, t.weight_decay, t.warmup_steps,
                                          t.epochs * steps_per_epoch, fused=compiled)
  tensors = tr.example_tensors(examples.history, examples.target, layout.item_tokens(table))
  if data == "dataloader":
    batches = tr.loader_batches(tr.dataloader(tensors, t.batch_size,
                                              pin_memory=device.type == "cuda"), device)
  else:
    if "tensors" not in shared:
      shared["tensors"] = {k: v.to(device) for k, v in tensors.items()}
    batches = tr.device_batches(shared["tensors"], t.batch_size)
  forward = torch.compile(model) if compiled else model
  autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=config.recommender.dtype == "bfloat16")

  def call():
    with autocast:
      return tr.train_step(forward, model, optimizer, schedule, next(batches), t.clip_norm)
  sync = harness.torch_sync(device)
  first_s = harness.timed_first_call(call, sync)
  timing = harness.measure(call, sync, warmup=opts.warmup + 2, repeats=opts.repeats,
                           iters=opts.torch_steps)
  return {"rate": t.batch_size / timing["seconds"], "seconds_per_step": timing["seconds"],
          "compile_and_first_s": first_s, "data": data, "timing": timing,
          "attn_implementation": str(getattr(model.config, "_attn_implementation", "?"))}


def run(runner: harness.Runner, config: ml_collections.ConfigDict, items: int,
        num_examples: int, opts: harness.Options) -> dict[str, Any]:
  """All variants; returns the workload's JSON entry (rates in examples/s)."""
  r, batch = config.recommender, config.train.batch_size
  table, examples = _examples(config, items, num_examples, config.seed)
  layout = layout_from_config(config)
  entry: dict[str, Any] = {
      "unit": "examples/s", "batch": batch, "items": items, "examples": num_examples,
      "history_items": config.data.max_history, "tokens_per_item": layout.num_levels,
      "model": {k: r[k] for k in ("num_encoder_layers", "num_decoder_layers", "d_model",
                                  "num_heads", "d_kv", "d_ff", "ffn", "dtype", "dropout")},
      "vocab": layout.vocab_size}
  shared: dict = {}

  def ours():
    pipeline, step_only = _ours(config, table, examples, opts, shared)
    entry["ours_step_only"] = step_only
    return pipeline
  runner.variant(entry, "ours", ours)
  if "params" not in shared:
    return entry
  params = shared["params"]
  runner.variant(entry, "torch_eager", lambda: _torch(config, table, examples, params,
                                                      "dataloader", False, shared, opts))
  runner.variant(entry, "torch_eager_device_data", lambda: _torch(
      config, table, examples, params, "device", False, shared, opts))
  if opts.torch_compile:
    runner.variant(entry, "torch_compiled", lambda: _torch(
        config, table, examples, params, "device", True, shared, opts), heavy=True, priority=0)
  else:
    entry["torch_compiled"] = {"skipped": "--notorch_compile"}
  shared.clear()

  num_params = sum(np.size(x) for x in jax.tree.leaves(params))
  enc_len = config.data.max_history * layout.num_levels
  common = dict(batch=batch, enc_len=enc_len, dec_len=layout.num_levels, d_model=r.d_model,
                heads=r.num_heads, d_kv=r.d_kv, d_ff=r.d_ff, enc_layers=r.num_encoder_layers,
                dec_layers=r.num_decoder_layers, params=num_params)
  ours_counts = physics.t5_step(head_width=layout.max_level_size, **common)
  hf_counts = physics.t5_step(head_width=layout.vocab_size, **common)
  entry["analytic_per_step"] = {"ours": ours_counts, "torch": hf_counts}
  entry["compute_peak"] = "bf16" if r.dtype == "bfloat16" else opts.compute_peak
  return entry
