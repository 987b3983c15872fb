"""Tokenizer training steps/s: ours (the trainer's jitted epoch scan) vs the PyTorch reference.

Variants of one case (tokenizer x catalogue size), same model, batch and optimizer:

* `ours`: `r3vae_jax.tokenizer.programs.train_chunk`, the trainer's own jitted program: the item
  vectors on the device, whole epochs of AdamW steps in one jitted `lax.scan`.
* `ours_step_loop`: one jitted step per batch dispatched from a Python loop (pre-placed device
  batches), the PyTorch-shaped loop in JAX; its compiled step also gives XLA's cost analysis.
* `torch_eager`: `nn.Module` + the standard host `DataLoader` (pinned memory, `.to(device)`).
* `torch_eager_device_data`: the same with the vectors already on the GPU (`randperm` slices).
* `torch_compiled`: `torch.compile(model)` + fused AdamW, device data.

Codebooks start random (k-means initialisation is outside the timed loop and does not change
the cost of a step).
"""
from __future__ import annotations

import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from benchmarks import harness, physics
from r3vae_jax import parallel
from r3vae_jax.tokenizer import programs as tok_programs


def _ours_chunk(config: ml_collections.ConfigDict, vectors: np.ndarray, batch: int,
                min_steps: int, opts: harness.Options) -> dict[str, Any]:
  n = vectors.shape[0]
  mesh = parallel.make_mesh(1, 1, jax.devices()[:1])
  setup = tok_programs.init_state(config, vectors, mesh, kmeans=False)
  if setup.static["batch"] != batch:
    raise ValueError(f"tokenizer trainer batch {setup.static['batch']} != benchmark batch {batch}")
  steps_per_epoch = math.ceil(n / batch)
  epochs = max(1, math.ceil(min_steps / steps_per_epoch))
  state, epoch = setup.state, 0

  def call():
    nonlocal state, epoch
    state, terms = tok_programs.train_chunk(state, setup.vectors, setup.shuffle_key,
                                         jnp.int32(epoch), num_epochs=epochs, **setup.static)
    epoch += epochs
    return terms
  compile_s = harness.timed_first_call(call, jax.block_until_ready)
  timing = harness.measure(call, jax.block_until_ready, warmup=opts.warmup, repeats=opts.repeats)
  steps = epochs * steps_per_epoch
  return {"rate": steps / timing["seconds"], "seconds_per_step": timing["seconds"] / steps,
          "steps_per_call": steps, "compile_and_first_s": compile_s, "timing": timing}


def _ours_step_loop(config: ml_collections.ConfigDict, vectors: np.ndarray, batch: int,
                    opts: harness.Options) -> dict[str, Any]:
  c = config[config.tokenizer]
  model = tok_programs.build_model(config, vectors.shape[1], config.seed)
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  tx = optax.adamw(c.lr, weight_decay=c.weight_decay)

  def step(state, x):
    loss, grads = jax.value_and_grad(lambda p: nnx.merge(graphdef, p)(x).loss)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss

  state = jax.device_put({"params": params, "opt": tx.init(params)})
  rng = np.random.default_rng(0)
  batches = [jax.device_put(vectors[rng.choice(vectors.shape[0], batch, replace=False)])
             for _ in range(8)]
  compiled = jax.jit(step, donate_argnums=0).lower(state, batches[0]).compile()
  i = 0

  def call():
    nonlocal state, i
    state, loss = compiled(state, batches[i % len(batches)])
    i += 1
    return loss
  timing = harness.measure(call, jax.block_until_ready, warmup=opts.warmup + 2,
                           repeats=opts.repeats, iters=opts.torch_steps)
  cost = physics.xla_cost(compiled)
  return {"rate": 1.0 / timing["seconds"], "seconds_per_step": timing["seconds"],
          "xla_flops_per_step": cost["flops"], "xla_bytes_per_step": cost["bytes"],
          "timing": timing}


def _torch(config: ml_collections.ConfigDict, vectors: np.ndarray, params: dict, batch: int,
           data: str, compiled: bool, device_vectors: dict, opts: harness.Options
           ) -> dict[str, Any]:
  import torch
  from benchmarks.torch_reference import tokenizer as tt, weights
  name = config.tokenizer
  c, device = config[name], opts.torch_device
  model = tt.build(name, c, config.sid, vectors.shape[1])
  weights.load_tokenizer(model, params)
  model.to(device).train()
  optimizer = tt.make_optimizer(model, c.lr, c.weight_decay, fused=compiled)
  if data == "dataloader":
    batches = tt.loader_batches(tt.dataloader(vectors, batch, pin_memory=device.type == "cuda"),
                                device)
  else:
    if "x" not in device_vectors:
      device_vectors["x"] = torch.from_numpy(vectors).to(device)
    batches = tt.device_batches(device_vectors["x"], batch)
  forward = torch.compile(model) if compiled else model
  call = lambda: tt.train_step(forward, optimizer, next(batches))
  sync = harness.torch_sync(device)
  first_s = harness.timed_first_call(call, sync)
  timing = harness.measure(call, sync, warmup=opts.warmup + 2, repeats=opts.repeats,
                           iters=opts.torch_steps)
  return {"rate": 1.0 / timing["seconds"], "seconds_per_step": timing["seconds"],
          "compile_and_first_s": first_s, "data": data, "timing": timing}


def run_case(runner: harness.Runner, config: ml_collections.ConfigDict, label: str,
             vectors: np.ndarray, opts: harness.Options, min_scan_steps: int) -> dict[str, Any]:
  """All variants of one tokenizer on one catalogue; returns the workload's JSON entry."""
  name = config.tokenizer
  c = config[name]
  n, dim = vectors.shape
  batch = min(c.batch_size, n)
  entry: dict[str, Any] = {
      "unit": "steps/s", "tokenizer": name, "catalogue": label, "items": n, "dim": dim,
      "batch": batch, "model": {"hidden": list(c.hidden), "latent_dim": c.latent_dim,
                                "levels": config.sid.levels,
                                "codebook_size": config.sid.codebook_size}}
  runner.variant(entry, "ours", lambda: _ours_chunk(config, vectors, batch, min_scan_steps, opts))
  runner.variant(entry, "ours_step_loop", lambda: _ours_step_loop(config, vectors, batch, opts))
  if "xla_flops_per_step" in entry.get("ours_step_loop", {}) and "rate" in entry["ours"]:
    for key in ("xla_flops_per_step", "xla_bytes_per_step"):
      entry["ours"][key] = entry["ours_step_loop"][key]
  params = nnx.to_pure_dict(nnx.state(tok_programs.build_model(config, dim, config.seed), nnx.Param))
  device_vectors: dict = {}
  runner.variant(entry, "torch_eager", lambda: _torch(config, vectors, params, batch,
                                                      "dataloader", False, device_vectors, opts))
  runner.variant(entry, "torch_eager_device_data", lambda: _torch(
      config, vectors, params, batch, "device", False, device_vectors, opts))
  if opts.torch_compile:
    runner.variant(entry, "torch_compiled", lambda: _torch(
        config, vectors, params, batch, "device", True, device_vectors, opts),
                   heavy=True, priority=1)
  else:
    entry["torch_compiled"] = {"skipped": "--notorch_compile"}
  device_vectors.clear()

  analytic = physics.tokenizer_step(
      name, batch, dim, c.hidden, c.latent_dim, config.sid.levels, config.sid.codebook_size,
      rating=c.get("rating", "soft"), use_sc=c.get("use_sc", False), use_pd=c.get("use_pd", False))
  entry["analytic_per_step"] = {"ours": analytic, "torch": analytic}
  entry["compute_peak"] = opts.compute_peak
  return entry
