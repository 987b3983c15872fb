r"""Ours vs the PyTorch way, same GPU, one process: tokenizer training, recommender training,
constrained decoding. Writes one JSON (results.md shape, "kind": "benchmark") and prints a table.

On the GPU (about 8 minutes; --time_budget_s bounds it, variants past it are recorded skipped):

  python -m benchmarks.run --name=h100 --out=$OUT/vs_torch_h100.json --commit=<sha>

On a CPU, everything shrunk (under 2 minutes; torch.compile off unless asked):

  python -m benchmarks.run --tiny --out=/tmp/vs_torch_tiny.json

Workloads (see each module's docstring for its variants):
  tokenizer/<name>/<beauty|1m>   vs_torch_tokenizer: steps/s, batch 1024
  recommender_train              vs_torch_recommender: examples/s, batch 512, history 20 x 4
  decode_beauty, decode_1m       vs_torch_decode: users/s, beam 20

Both sides use the same float32 weights; float32 matmuls run on the tensor cores as TF32 on
both sides (JAX's default precision on GPU; `torch.backends.cuda.matmul.allow_tf32`).
`speedup` = ours / the fastest PyTorch variant that ran. Methodology: benchmarks/README.md.
"""
from __future__ import annotations

import os

# Before JAX starts: share the GPU with PyTorch (no 75% preallocation by XLA).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")

# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from benchmarks import harness
from benchmarks import physics
from benchmarks import vs_torch_decode
from benchmarks import vs_torch_recommender
from benchmarks import vs_torch_tokenizer
from r3vae_jax import io
from r3vae_jax.configs import default
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("name", "vs_torch", "Results name: benchmarks/results/<name>.json.")
flags.DEFINE_string("out", "", "JSON path (default benchmarks/results/<name>.json).")
flags.DEFINE_bool("tiny", False, "Shrink every size to run on a CPU in under 2 minutes.")
flags.DEFINE_list("workloads", ["recommender", "decode_beauty", "tokenizer", "decode_1m"],
                  "Workloads, in run order.")
flags.DEFINE_list("tokenizers", ["r3vae", "rqvae"], "Tokenizers timed.")
flags.DEFINE_list("tokenizer_catalogues", ["beauty", "1m"], "Tokenizer catalogue sizes.")
flags.DEFINE_string("beauty_vectors", "", "Optional .npy float32 [N, D] item vectors for the "
                    "Beauty tokenizer case (default: random 12,101 x 384).")
flags.DEFINE_float("time_budget_s", 420.0, "No variant starts after this many seconds.")
flags.DEFINE_float("heavy_reserve_s", 90.0, "A torch.compile variant starts only with this "
                   "much budget left.")
flags.DEFINE_integer("repeats", 5, "Timed blocks per variant (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed warm-up calls per variant (plus the first call).")
flags.DEFINE_integer("torch_steps", 10, "Steps per timed block of step-loop variants.")
flags.DEFINE_bool("torch_compile", True, "Time torch.compile variants of the training steps "
                  "(default off with --tiny).")
flags.DEFINE_bool("torch_compile_decode", True, "Time a torch.compile'd forward inside HF "
                  "generate on the Beauty catalogue (default off with --tiny).")
flags.DEFINE_list("torch_ways", list(vs_torch_recommender.TORCH_WAYS), "PyTorch variants of the "
                  f"recommender workload, of {vs_torch_recommender.TORCH_WAYS}.")
flags.DEFINE_bool("torch_tf32", True, "TF32 float32 matmuls in torch, as JAX's default on GPU.")
flags.DEFINE_enum("recommender_dtype", "float32", ["float32", "bfloat16"],
                  "Recommender compute dtype (torch: autocast to bfloat16).")
flags.DEFINE_integer("decode_batch", 0, "Our users per decoding batch (0: config.eval.batch_size).")
flags.DEFINE_integer("torch_decode_users", 512, "Users decoded by HF generate (extrapolated).")
flags.DEFINE_integer("torch_decode_batch", 128, "Users per HF generate call.")
flags.DEFINE_integer("million_items", 1_000_000, "Items of the large catalogue.")
flags.DEFINE_integer("million_codebook", 256, "Codes per level of the large catalogue's SIDs.")
flags.DEFINE_integer("million_torch_users", 256, "Users decoded by HF on the large catalogue.")
flags.DEFINE_integer("e2e_best_epoch", 0, "If > 0: estimate the time to this best epoch on "
                     "Beauty from the measured rates (train + per-epoch validation decoding).")
flags.DEFINE_integer("e2e_train_examples", 131_413, "Training examples per Beauty epoch "
                     "(interactions - 3 x users).")
flags.DEFINE_integer("e2e_valid_users", 22_363, "Validation users decoded per epoch.")
flags.DEFINE_string("commit", "", "Commit recorded in the JSON (default: git rev-parse).")

BEAUTY_ITEMS, BEAUTY_USERS, BEAUTY_DIM, LARGE_DIM = 12_101, 22_363, 384, 768


# ---- sizes ---------------------------------------------------------------------------------------

def sizes() -> ml_collections.ConfigDict:
  """Every size of the run: the paper's (default) or the tiny CPU ones."""
  s = ml_collections.ConfigDict(dict(
      beauty_items=BEAUTY_ITEMS, beauty_dim=BEAUTY_DIM, large_items=FLAGS.million_items,
      large_dim=LARGE_DIM, min_scan_steps=100, rec_items=BEAUTY_ITEMS, rec_examples=40 * 512,
      users=BEAUTY_USERS, large_users=BEAUTY_USERS, torch_decode_users=FLAGS.torch_decode_users,
      torch_decode_batch=FLAGS.torch_decode_batch, large_torch_users=FLAGS.million_torch_users,
      large_codebook=FLAGS.million_codebook))
  if FLAGS.tiny:
    s.update(dict(beauty_items=1024, beauty_dim=32, large_items=4096, large_dim=48,
                  min_scan_steps=8, rec_items=300, rec_examples=8 * 32, users=64,
                  large_users=64, torch_decode_users=8, torch_decode_batch=8,
                  large_torch_users=8, large_codebook=32))
  return s


def base_config() -> ml_collections.ConfigDict:
  """The paper configuration (or a small one with --tiny), one device."""
  c = default.base_config()
  c.mesh.data = 1
  c.recommender.dtype = FLAGS.recommender_dtype
  if FLAGS.tiny:
    c.sid.codebook_size = 16
    c.sid.max_collisions = 16
    for name in ("rqvae", "r3vae"):
      c[name].update(dict(hidden=(32,), latent_dim=8, batch_size=128))
    c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32,
                              num_heads=2, d_kv=16, d_ff=64, dropout=0.0))  # dropout: CPU compile
    c.data.max_history = 5
    c.train.batch_size = 32
    c.eval.batch_size = 32
  if FLAGS.decode_batch:
    c.eval.batch_size = FLAGS.decode_batch
  return c


# ---- workloads -----------------------------------------------------------------------------------

def tokenizer_vectors(catalogue: str, s: ml_collections.ConfigDict) -> np.ndarray:
  if catalogue == "beauty" and FLAGS.beauty_vectors:
    return io.read_npy(FLAGS.beauty_vectors).astype(np.float32)
  n, d = ((s.beauty_items, s.beauty_dim) if catalogue == "beauty"
          else (s.large_items, s.large_dim))
  return np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)


def run_workloads(runner: harness.Runner, opts: harness.Options, s: ml_collections.ConfigDict,
                  compile_decode: bool, results: dict[str, Any]) -> None:
  """Runs every light variant (heavy ones are queued on `runner`), filling `results`."""
  for workload in FLAGS.workloads:
    if workload == "recommender":
      results["recommender_train"] = vs_torch_recommender.run(
          runner, base_config(), s.rec_items, s.rec_examples, opts, tuple(FLAGS.torch_ways))
    elif workload == "tokenizer":
      for catalogue in FLAGS.tokenizer_catalogues:
        vectors = tokenizer_vectors(catalogue, s)
        for name in FLAGS.tokenizers:
          c = base_config()
          c.tokenizer = name
          c.r3vae.update(default.R3VAE_SOFT_VARIANT)  # the variant the torch twin implements
          results[f"tokenizer_train/{name}/{catalogue}"] = vs_torch_tokenizer.run_case(
              runner, c, catalogue, vectors, opts, s.min_scan_steps)
        del vectors
    elif workload in ("decode_beauty", "decode_1m"):
      c = base_config()
      large = workload == "decode_1m"
      if large:
        c.sid.codebook_size = s.large_codebook
      results[workload] = vs_torch_decode.run(
          runner, c, s.large_items if large else s.beauty_items,
          s.large_users if large else s.users, c.eval.batch_size,
          s.large_torch_users if large else s.torch_decode_users, s.torch_decode_batch, opts,
          compile_decode and not large)
    else:
      raise ValueError(f"--workloads: unknown workload {workload!r}")


# ---- summary -------------------------------------------------------------------------------------

def summarise(entry: dict[str, Any], peaks: dict[str, float] | None) -> None:
  """Adds the physical view, best_torch and speedup (ours / fastest torch variant that ran)."""
  if "analytic_per_step" in entry:
    physics.attach(entry, peaks)
  torch_rates = {k: v["rate"] for k, v in entry.items()
                 if k.startswith("torch") and isinstance(v, dict) and "rate" in v}
  ours = entry.get("ours", {})
  if torch_rates:
    best = max(torch_rates, key=torch_rates.get)
    entry["best_torch"] = best
    entry["best_torch_rate"] = torch_rates[best]
  if torch_rates and "rate" in ours:
    entry["speedup"] = ours["rate"] / entry["best_torch_rate"]
  verdict = ours.get("physical_xla", ours.get("physical", {})).get("verdict")
  if verdict:
    entry["verdict_ours"] = verdict
  best_physical = entry.get(entry.get("best_torch", ""), {}).get("physical", {})
  if "verdict" in best_physical:
    entry["verdict_torch"] = best_physical["verdict"]


def end_to_end(results: dict[str, Any]) -> dict[str, Any] | None:
  """Estimated time to the best epoch on Beauty from measured rates (--e2e_best_epoch)."""
  rec, dec = results.get("recommender_train", {}), results.get("decode_beauty", {})
  if not FLAGS.e2e_best_epoch or "speedup" not in rec or "speedup" not in dec:
    return None
  out = {"best_epoch": FLAGS.e2e_best_epoch, "train_examples_per_epoch": FLAGS.e2e_train_examples,
         "valid_users_per_epoch": FLAGS.e2e_valid_users,
         "note": "estimated: epochs x (examples / training rate + valid users / decoding rate); "
                 "the torch decoding rate is extrapolated from a subset of users"}
  for side, train_rate, dec_rate in (
      ("ours", rec["ours"]["rate"], dec["ours"]["rate"]),
      ("torch", rec["best_torch_rate"], dec["best_torch_rate"])):
    epoch_s = FLAGS.e2e_train_examples / train_rate + FLAGS.e2e_valid_users / dec_rate
    out[f"{side}_epoch_s"] = epoch_s
    out[f"{side}_time_to_best_s"] = FLAGS.e2e_best_epoch * epoch_s
  out["speedup"] = out["torch_time_to_best_s"] / out["ours_time_to_best_s"]
  return out


def table(results: dict[str, Any]) -> str:
  """The short table printed last."""
  lines = [f"{'workload':34s} {'unit':11s} {'ours':>11s} {'best torch':>11s} {'variant':24s} "
           f"{'speedup':>8s}  bound (ours)"]
  for name, e in results.items():
    ours = e.get("ours", {})
    ours_s = f"{ours['rate']:11.1f}" if "rate" in ours else f"{'-':>11s}"
    torch_s = f"{e['best_torch_rate']:11.1f}" if "best_torch_rate" in e else f"{'-':>11s}"
    speed = f"{e['speedup']:7.1f}x" if "speedup" in e else f"{'-':>8s}"
    bound = e.get("verdict_ours", "").split(":")[0].split(" (")[0]
    lines.append(f"{name:34s} {e.get('unit', ''):11s} {ours_s} {torch_s} "
                 f"{e.get('best_torch', '-'):24s} {speed}  {bound}")
  return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------

def main(argv):
  del argv
  start = time.perf_counter()
  devices = jax.devices()        # JAX claims its CUDA libraries before torch is imported.
  logging.info("JAX devices: %s", devices)
  torch_compile, compile_decode = (
      FLAGS[name].value and not (FLAGS.tiny and not FLAGS[name].present)
      for name in ("torch_compile", "torch_compile_decode"))
  import torch  # pylint: disable=import-outside-toplevel
  torch_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.backends.cuda.matmul.allow_tf32 = FLAGS.torch_tf32
  torch.backends.cudnn.allow_tf32 = FLAGS.torch_tf32
  torch.backends.cuda.enable_cudnn_sdp(False)   # cuDNN is JAX's build in this process.
  env = harness.environment(FLAGS.commit)
  peaks = harness.peaks_for(env["device"]) if env["platform"] == "gpu" else None
  s = sizes()
  record: dict[str, Any] = {
      "kind": "benchmark", "name": FLAGS.name, **env, "torch_device": str(torch_device),
      "command": " ".join(["python -m benchmarks.run"] + sys.argv[1:]),
      "flags": {f.name: f.value for f in FLAGS.get_key_flags_for_module(sys.modules[__name__])},
      "precision": {"jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
                    "torch_allow_tf32": FLAGS.torch_tf32, "params": "float32",
                    "recommender_compute": FLAGS.recommender_dtype},
      "peaks": peaks}
  record["ceilings_measured"] = harness.ceilings(512 if FLAGS.tiny else 8192,
                                                 (1 << 22) if FLAGS.tiny else (1 << 30), 5)
  opts = harness.Options(warmup=1 if FLAGS.tiny else FLAGS.warmup,
                         repeats=2 if FLAGS.tiny else FLAGS.repeats,
                         torch_steps=2 if FLAGS.tiny else FLAGS.torch_steps,
                         torch_compile=torch_compile, torch_device=torch_device, peaks=peaks,
                         compute_peak="tf32")
  record["effective"] = {"warmup": opts.warmup, "repeats": opts.repeats,
                         "torch_steps": opts.torch_steps, "torch_compile": torch_compile,
                         "torch_compile_decode": compile_decode, "sizes": s.to_dict()}
  out = FLAGS.out or os.path.join("benchmarks", "results", f"{FLAGS.name}.json")
  results: dict[str, Any] = {}

  def write() -> None:
    for entry in results.values():
      summarise(entry, peaks)
    record["workloads"] = results
    record["speedups"] = {k: v["speedup"] for k, v in results.items() if "speedup" in v}
    e2e = end_to_end(results)
    if e2e:
      record["end_to_end_beauty"] = e2e
    record["wall_time_s"] = time.perf_counter() - start
    io.write_json(out, json.loads(json.dumps(record, default=_jsonable)))

  runner = harness.Runner(deadline=start + FLAGS.time_budget_s,
                          heavy_reserve_s=FLAGS.heavy_reserve_s, on_update=write)
  run_workloads(runner, opts, s, compile_decode, results)
  runner.run_heavy()
  write()
  print(table(results))
  e2e = record.get("end_to_end_beauty")
  if e2e:
    print(f"time to best epoch {e2e['best_epoch']} (estimated): ours "
          f"{e2e['ours_time_to_best_s']:.0f}s, torch {e2e['torch_time_to_best_s']:.0f}s, "
          f"{e2e['speedup']:.1f}x")
  print(f"device {env['device']}; wall {record['wall_time_s']:.0f}s; wrote {out}")


def _jsonable(x: Any) -> Any:
  if isinstance(x, (np.generic,)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


if __name__ == "__main__":
  app.run(main)
