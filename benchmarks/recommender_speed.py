"""Recommender training: where one update step's time goes, and what removes it.

In one process, at paper size (T5 6+6, d_model 128, 4 heads, d_kv 64, d_ff 256, dropout 0.1,
SIDs 3 x 256 + collision level, batch 512, every history padded to 20 items x 4 tokens):

1. the cold compiles of the trainer's update step (`recommender.programs.train_programs`) for the
   variants of `--cold_variants`, one after another, with no persistent cache;
   and the constrained beam search (`config.eval.batch_size` users);
2. every variant of `--variants` (below) compiled, then timed on pre-placed device batches:
   median seconds per step of `--repeats` blocks, examples/s, XLA's flops/bytes, the
   program's memory (arguments, outputs, temporaries); `compile_s` is the variant's compile
   with the others compiling alongside (`base` is already in the process's cache from 1.);
3. a `jax.profiler` trace of `--profile_steps` steps of each variant of `--profile`,
   summarised by `trace_summary` (top kernels, their share of the busy time, the device's idle
   gaps), the first trace copied beside the JSON;
4. the PyTorch variants of `--torch_ways` (`vs_torch_recommender`: Hugging Face T5, e.g. the
   whole step under `torch.compile`) on the same examples, float32 weights of the `base` run,
   TF32 matrix products as JAX's default.

Variants (names joined by "_" combine): `base` (the trainer's default step), `bf16` (matrix
products in bfloat16, float32 parameters and optimizer), `scan` (each layer stack one `lax.scan`:
`recommender.scan_layers`), `cmdbuf` (XLA command buffers, CUDA graphs,
for fusions, library calls and the program's control flow: `compiler_options`), `noautotune`
(`xla_gpu_autotune_level=0`: no timing of GEMM and fusion candidates while compiling; what it
saves in compile time against what it costs per step).

  python -m benchmarks.recommender_speed --out=$OUT/recommender_speed_h100.json
  python -m benchmarks.recommender_speed --tiny --out=/tmp/speed_tiny.json     # CPU smoke run
"""
from __future__ import annotations

import os

# Before JAX starts: leave GPU memory to PyTorch (--torch_ways) in this process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")

# pylint: disable=g-import-not-at-top,wrong-import-position
import concurrent.futures
import itertools
import json
import shutil
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from benchmarks import harness, physics, trace_summary, vs_torch_recommender
from r3vae_jax import io, parallel
from r3vae_jax.configs import default
from r3vae_jax.decode import build_trie
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.recommender import programs as rec_programs
from r3vae_jax.recommender.tokens import layout_from_config

COMMAND_BUFFERS = {
    "xla_gpu_enable_command_buffer": "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL",
    "xla_gpu_graph_min_graph_size": "1",
}
NO_AUTOTUNE = {"xla_gpu_autotune_level": 0}

flags.DEFINE_string("out", None, "JSON file of the run.")
flags.DEFINE_list("variants", ["base", "bf16", "bf16_cmdbuf", "bf16_scan",
                               "base_cmdbuf"], "Variants (module docstring).")
flags.DEFINE_list("profile", ["base", "bf16"], "Variants traced.")
flags.DEFINE_integer("profile_steps", 16, "Update steps per trace.")
flags.DEFINE_bool("tiny", False, "Tiny model and batch (CPU smoke run).")
flags.DEFINE_integer("warmup", 3, "Untimed calls per variant.")
flags.DEFINE_integer("repeats", 5, "Timed blocks per variant.")
flags.DEFINE_integer("steps", 48, "Update steps per timed block.")
flags.DEFINE_integer("compile_threads", 8, "Programs compiled at once.")
flags.DEFINE_list("cold_variants", ["base"], "Variants compiled one after another first, "
                  "before anything else (step 1; the first is cold, later ones may reuse its "
                  "autotuning results); empty: none.")
flags.DEFINE_list("torch_ways", [], "PyTorch variants timed last, in this process, on the same "
                  f"examples (of {vs_torch_recommender.TORCH_WAYS}).")
flags.DEFINE_float("time_budget_s", 1e9, "No PyTorch variant starts after this many seconds.")
flags.DEFINE_string("commit", "", "Commit recorded in the JSON (default: git rev-parse).")
FLAGS = flags.FLAGS


def config_for(tiny: bool) -> ml_collections.ConfigDict:
  c = default.base_config()
  c.mesh.update(dict(data=1, model=1))
  if tiny:
    c.sid.codebook_size, c.sid.max_collisions = 16, 16
    c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32,
                              num_heads=2, d_kv=16, d_ff=64))
    c.data.max_history = 5
    c.train.batch_size = 16
  return c


def parse_variant(name: str) -> dict[str, Any]:
  """"bf16_scan_cmdbuf" -> {"dtype": "bfloat16", "scan_layers": True, "compiler_options": {...}}."""
  spec: dict[str, Any] = {"dtype": "float32", "scan_layers": False, "compiler_options": {}}
  for part in name.split("_"):
    if part == "base":
      continue
    if part == "bf16":
      spec["dtype"] = "bfloat16"
    elif part == "scan":
      spec["scan_layers"] = True
    elif part == "cmdbuf":
      spec["compiler_options"].update(COMMAND_BUFFERS)
    elif part == "noautotune":
      spec["compiler_options"].update(NO_AUTOTUNE)
    else:
      raise ValueError(f"error: --variants: unknown part {part!r} of {name!r}; expected base, "
                       f"bf16, scan, cmdbuf or noautotune joined by '_'")
  return spec


class Variant:
  """One program: its config, state, placed inputs and compiled step."""

  def __init__(self, name: str, base: ml_collections.ConfigDict, table: np.ndarray,
               examples: rec_data.Examples, mesh):
    self.name, self.spec = name, parse_variant(name)
    c = ml_collections.ConfigDict(base.to_dict())
    c.recommender.dtype = self.spec["dtype"]
    c.recommender.scan_layers = self.spec["scan_layers"]
    self.config = c
    plan = rec_data.BatchPlan(len(examples), c.train.batch_size, c.seed)
    total = c.train.epochs * plan.steps_per_epoch
    prog = rec_programs.train_programs(c, mesh, total)
    self.state = prog.init()
    source = rec_data.BatchSource(examples, plan, layout_from_config(c).item_tokens(table),
                                  table)
    self.fn = prog.train_step
    self.inputs = [parallel.to_global(source.host_batch(i), mesh) for i in range(4)]
    self.compiled = None
    self.compile_s = None

  def compile(self) -> None:
    start = time.perf_counter()
    lowered = self.fn.lower(self.state, self.inputs[0])
    options = self.spec["compiler_options"] if jax.default_backend() == "gpu" else {}
    self.compiled = lowered.compile(compiler_options=options or None)
    self.compile_s = time.perf_counter() - start

  def loop(self) -> harness.StepLoop:
    loop = harness.StepLoop(self.compiled, self.state, itertools.cycle(self.inputs).__next__)
    return loop


def _memory(compiled) -> dict[str, Any]:
  try:
    m = compiled.memory_analysis()
  except Exception as e:  # pylint: disable=broad-except  # not every backend reports it
    return {"error": str(e)[:200]}
  if m is None:
    return {}
  return {k: getattr(m, k) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                     "alias_size_in_bytes", "temp_size_in_bytes")
          if hasattr(m, k)}


def time_variant(v: Variant, warmup: int, repeats: int, steps: int) -> dict[str, Any]:
  loop = v.loop()
  timing = harness.measure(loop, jax.block_until_ready, warmup=warmup, repeats=repeats,
                           iters=steps)
  v.state = loop.state
  batch = v.config.train.batch_size
  per_step = timing["seconds"]
  cost = physics.xla_cost(v.compiled)
  return {"spec": v.spec, "compile_s": v.compile_s, "seconds_per_step": per_step,
          "examples_per_s": batch / per_step, "timing": timing,
          "xla_flops_per_call": cost["flops"], "xla_bytes_per_call": cost["bytes"],
          "memory": _memory(v.compiled)}


def profile_variant(v: Variant, steps: int, trace_dir: str) -> dict[str, Any]:
  loop = v.loop()
  jax.block_until_ready(loop())
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    out = None
    for _ in range(steps):
      out = loop()
    jax.block_until_ready(out)
  v.state = loop.state
  return trace_summary.summarise_dir(trace_dir, steps)


def cold_compile(names: list[str], base: ml_collections.ConfigDict, table: np.ndarray,
                 examples: rec_data.Examples, mesh) -> dict[str, Any]:
  """The steps of `names` compiled one after another first in the process (nothing cached),
  then the beam search of the first's config."""
  out: dict[str, Any] = {"order": list(names), "train_step_s": {}}
  for name in names:
    v = Variant(name, base, table, examples, mesh)
    v.compile()
    out["train_step_s"][name] = v.compile_s
  v = Variant(names[0], base, table, examples, mesh)
  base = v.config
  mp = rec_programs.model_programs(base, mesh)
  enc_len = base.data.max_history * layout_from_config(base).num_levels
  users = base.eval.batch_size
  batch = {"enc_tokens": np.zeros((users, enc_len), np.int32),
           "enc_mask": np.ones((users, enc_len), bool)}
  trie = jax.device_put(build_trie(table, list(layout_from_config(base).level_sizes)),
                        parallel.replicated(mesh))
  start = time.perf_counter()
  mp.generate_scored.lower(v.state["params"], parallel.to_global(batch, mesh), trie).compile()
  out["beam_search_s"] = time.perf_counter() - start
  out["beam_search_users_per_call"] = users
  return out


def main(argv):
  del argv
  start = time.perf_counter()
  base = config_for(FLAGS.tiny)
  mesh = parallel.config_mesh(base)
  items = 300 if FLAGS.tiny else 12_101
  table, examples = vs_torch_recommender._examples(  # pylint: disable=protected-access
      base, items, 8 * base.train.batch_size * 8, base.seed)
  env = harness.environment(FLAGS.commit)
  record: dict[str, Any] = {
      "kind": "benchmark", "name": "recommender_speed", **env,
      "command": " ".join(["python -m benchmarks.recommender_speed"] + sys.argv[1:]),
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "batch": base.train.batch_size,
      "history_items": base.data.max_history, "model": base.recommender.to_dict()}
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))

  def write():
    record["wall_s"] = time.perf_counter() - start
    io.write_json(FLAGS.out, json.loads(json.dumps(record, default=str)))

  try:
    record["cold_compile"] = (cold_compile(FLAGS.cold_variants, base, table, examples, mesh)
                              if FLAGS.cold_variants else {"skipped": "--cold_variants empty"})
  except Exception as e:  # pylint: disable=broad-except  # recorded, the run goes on
    record["cold_compile"] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
  write()
  variants = {}
  for name in FLAGS.variants:
    try:
      variants[name] = Variant(name, base, table, examples, mesh)
    except Exception as e:  # pylint: disable=broad-except
      record.setdefault("variants", {})[name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}

  def compile_one(v: Variant):
    try:
      v.compile()
      return None
    except Exception as e:  # pylint: disable=broad-except
      return f"{type(e).__name__}: {str(e)[:500]}"

  with concurrent.futures.ThreadPoolExecutor(FLAGS.compile_threads) as pool:
    errors = dict(zip(variants, pool.map(compile_one, variants.values())))
  results = record.setdefault("variants", {})
  for name, v in variants.items():
    if errors[name]:
      results[name] = {"error": errors[name]}
      continue
    try:
      results[name] = time_variant(v, FLAGS.warmup, FLAGS.repeats, FLAGS.steps)
    except Exception as e:  # pylint: disable=broad-except
      results[name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
    write()
  record["profiles"] = {}
  for i, name in enumerate(n for n in FLAGS.profile if n in variants and not errors[n]):
    trace_dir = tempfile.mkdtemp(prefix=f"trace_{name}_")
    try:
      summary = profile_variant(variants[name], FLAGS.profile_steps, trace_dir)
      if i == 0 and os.path.getsize(summary["trace"]) < 15 << 20:
        kept = os.path.join(out_dir, f"trace_{name}.json.gz")
        shutil.copy(summary["trace"], kept)
        summary["trace"] = os.path.basename(kept)
      record["profiles"][name] = summary
    except Exception as e:  # pylint: disable=broad-except
      record["profiles"][name] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
    write()
  record["torch"] = {}
  if FLAGS.torch_ways:
    import torch  # pylint: disable=import-outside-toplevel  # after JAX claimed its libraries
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.enable_cudnn_sdp(False)   # cuDNN is JAX's build in this process
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    opts = harness.Options(warmup=FLAGS.warmup, repeats=FLAGS.repeats, torch_steps=FLAGS.steps,
                           torch_compile=True, torch_device=device, peaks=None,
                           compute_peak="tf32")
    params = jax.device_get(variants["base"].state["params"]) if "base" in variants else None
    shared: dict = {}
    for way in FLAGS.torch_ways:
      if params is None or time.perf_counter() - start > FLAGS.time_budget_s:
        record["torch"][way] = {"skipped": "time budget or no base variant"}
        continue
      try:
        record["torch"][way] = vs_torch_recommender._torch(  # pylint: disable=protected-access
            base, table, examples, params, "device", way, shared, opts)
      except Exception as e:  # pylint: disable=broad-except
        record["torch"][way] = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
      write()
  try:
    record["peak_device_memory_bytes"] = jax.devices()[0].memory_stats()["peak_bytes_in_use"]
  except Exception:  # pylint: disable=broad-except  # CPU devices report no memory stats
    record["peak_device_memory_bytes"] = None
  write()
  for name, r in results.items():
    line = (f"{r['examples_per_s']:10.0f} ex/s  {1e3 * r['seconds_per_step']:7.2f} ms/step  "
            f"compile {r['compile_s']:5.1f}s" if "examples_per_s" in r else r.get("error", ""))
    print(f"{name:28s} {line}")
  for way, r in record["torch"].items():
    line = (f"{r['rate']:10.0f} ex/s  {1e3 * r['seconds_per_step']:7.2f} ms/step  "
            f"first call {r['compile_and_first_s']:5.1f}s" if "rate" in r else str(r)[:300])
    print(f"torch {way:22s} {line}")
  for name, p in record["profiles"].items():
    if "top" in p:
      print(f"profile {name}: {p['kernels_per_step']:.0f} kernels/step, busy "
            f"{p['busy_us_per_step']:.0f} us/step, idle {p['idle_us_per_step']:.0f} us/step")
      for t in p["top"][:12]:
        print(f"   {t['us_per_step']:8.1f} us x{t['calls_per_step']:5.1f} "
              f"{100 * t['share_of_busy']:5.1f}%  {t['name'][:90]}")
  print(f"cold compile: {record['cold_compile']}; wall {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  app.run(main)
