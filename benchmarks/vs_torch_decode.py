"""Constrained beam-search decoding users/s: ours (device trie, one jitted search) vs HF generate.

One catalogue of random SIDs (`items` x (levels codes of `codebook` + a collision level)),
random user histories, the paper's model with the same weights on both sides, beam 20,
20 items returned per user. Variants:

* `ours`: the trainer's validation path: `recommender.programs.model_programs(...).generate`
  (encoder + L+1 cached decoder steps + trie masking + top-k in one `jax.jit`) over all users
  with `evaluate.rank_in_batches` (host->device transfer and the result fetch included).
* `torch_eager`: `T5ForConditionalGeneration.generate(num_beams=20,
  prefix_allowed_tokens_fn=...)` over a dict of prefixes, on the first `torch_users` users
  only, in batches of `torch_batch`; users/s EXTRAPOLATED to all users (labelled in the JSON).
* `torch_compiled`: the same with `model.forward = torch.compile(model.forward, dynamic=True)`.

The prefix dict's build time and the trie's build time are reported apart (done once per
catalogue, outside the timed loop).
"""
from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np

from benchmarks import harness, synthetic_inputs
from r3vae_jax import evaluate, parallel
from r3vae_jax.decode import build_trie
from r3vae_jax.recommender import programs as rec_programs
from r3vae_jax.recommender.tokens import layout_from_config


def _ours(config: ml_collections.ConfigDict, table: np.ndarray, inputs: dict[str, np.ndarray],
          batch: int, opts: harness.Options, shared: dict) -> dict[str, Any]:
  layout = layout_from_config(config)
  mesh = parallel.config_mesh(config)
  start = time.perf_counter()
  trie = build_trie(table, list(layout.level_sizes))
  trie_s = time.perf_counter() - start
  prog = rec_programs.model_programs(config, mesh)
  params = jax.device_put(prog.mdef.init_params(), prog.param_shardings)
  shared["params"] = jax.device_get(params)
  rank = lambda b: prog.generate(params, b, trie)
  users = inputs["enc_tokens"].shape[0]
  call = lambda: evaluate.rank_in_batches(rank, inputs, batch, mesh)
  start = time.perf_counter()
  ranked = call()            # numpy: the result is on the host, so the device is done
  first_s = time.perf_counter() - start
  timing = harness.measure(call, lambda out: out, warmup=0, repeats=opts.repeats)
  return {"rate": users / timing["seconds"], "seconds_all_users": timing["seconds"],
          "users": users, "batch": batch, "compile_and_first_s": first_s, "trie_build_s": trie_s,
          "trie_bytes": trie.nbytes, "trie_layouts": list(trie.layouts),
          "valid_fraction": float((ranked >= 0).mean()), "timing": timing}


def _torch(config: ml_collections.ConfigDict, table: np.ndarray, inputs: dict[str, np.ndarray],
           params: dict, torch_users: int, torch_batch: int, compiled: bool, shared: dict,
           opts: harness.Options) -> dict[str, Any]:
  import torch
  from benchmarks.torch_reference import decoding as td, recommender as tr, weights
  device = opts.torch_device
  layout = layout_from_config(config)
  model = tr.build(config.recommender, layout.vocab_size, config.seed)
  weights.load_t5(model, params)
  model.to(device).eval()
  if compiled:
    model.forward = torch.compile(model.forward, dynamic=True)
  if "prefixes" not in shared:
    start = time.perf_counter()
    catalogue = layout.item_tokens(table)[:-1]
    shared["prefixes"] = td.prefix_dict(catalogue)
    shared["lookup"] = td.item_lookup(catalogue)
    shared["prefix_build_s"] = time.perf_counter() - start
  users = inputs["enc_tokens"].shape[0]
  take = min(torch_users, users)
  ids = torch.from_numpy(inputs["enc_tokens"][:take].astype(np.int64)).to(device)
  mask = torch.from_numpy(inputs["enc_mask"][:take].astype(np.int64)).to(device)
  beams = config.eval.beam_size

  def one(lo: int) -> np.ndarray:
    return td.recommend(model, ids[lo:lo + torch_batch], mask[lo:lo + torch_batch],
                        shared["prefixes"], shared["lookup"], beams, layout.num_levels)
  sync = harness.torch_sync(device)
  first_s = harness.timed_first_call(lambda: one(0), sync)
  timing = harness.measure(lambda: [one(lo) for lo in range(0, take, torch_batch)], sync,
                           warmup=0, repeats=max(1, opts.repeats // 3))
  rate = take / timing["seconds"]
  return {"rate": rate, "users_measured": take, "batch": torch_batch,
          "seconds_measured": timing["seconds"], "seconds_all_users_extrapolated": users / rate,
          "note": f"timed on {take} users, extrapolated linearly to {users}",
          "compile_and_first_batch_s": first_s, "prefix_dict_build_s": shared["prefix_build_s"],
          "timing": timing}


def run(runner: harness.Runner, config: ml_collections.ConfigDict, items: int, users: int,
        batch: int, torch_users: int, torch_batch: int, opts: harness.Options,
        torch_compile: bool) -> dict[str, Any]:
  """All variants on one catalogue; returns the workload's JSON entry (rates in users/s)."""
  rng = np.random.default_rng(config.seed)
  layout = layout_from_config(config)
  start = time.perf_counter()
  table = synthetic_inputs.random_sid_table(rng, items, config.sid.levels,
                                            config.sid.codebook_size, config.sid.max_collisions)
  history = synthetic_inputs.random_histories(rng, users, config.data.max_history, items)
  item_tokens = layout.item_tokens(table)
  inputs = {"enc_tokens": item_tokens[history].reshape(users, -1),
            "enc_mask": np.repeat(history >= 0, layout.num_levels, axis=1)}
  entry: dict[str, Any] = {
      "unit": "users/s", "items": items, "users": users, "beam": config.eval.beam_size,
      "level_sizes": list(layout.level_sizes), "vocab": layout.vocab_size,
      "inputs_build_s": time.perf_counter() - start}
  shared: dict = {}
  runner.variant(entry, "ours", lambda: _ours(config, table, inputs, batch, opts, shared))
  if "params" not in shared:
    return entry
  params = shared["params"]
  runner.variant(entry, "torch_eager", lambda: _torch(
      config, table, inputs, params, torch_users, torch_batch, False, shared, opts))
  if torch_compile:
    runner.variant(entry, "torch_compiled", lambda: _torch(
        config, table, inputs, params, torch_users, torch_batch, True, shared, opts),
                   heavy=True, priority=2)
  else:
    entry["torch_compiled"] = {"skipped": "not attempted (--torch_compile_decode off)"}
  return entry
