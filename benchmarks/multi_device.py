"""Sharded recommender training and decoding on every device of one host, against one device.

  python -m benchmarks.multi_device --out=$OUT/multi_gpu.json     # a multi-GPU host
  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python -m benchmarks.multi_device --tiny --out=/tmp/md.json  # CPU, 8 fake devices

Meshes (`data` x `model`): 1 x 1, then data = 2, 4, ... up to the devices present, and
N/2 x 2 (a `model` axis of 2) when N >= 2. On each mesh, with dropout off so that every mesh
computes the same function of the same seeded initial parameters:
  curve    `--steps` updates on the same global batches (`--batch`, default 512, the paper's);
           the largest |loss - loss on 1 x 1| over the curve and of the final parameters.
  rate     examples/s of the compiled step (median of `--repeats` blocks of `--iters` steps
           after warm-up), at the paper size and at `--large` (d_model 512, 8+8 layers, 8 heads,
           d_ff 2048) over a `--large_items` catalogue; efficiency = rate / (devices x rate on 1).
  decode   constrained beam search (`--beam`) of `--users` histories with the 1 x 1 curve's
           final parameters placed on the mesh: item ids must equal the one-device ids.
  reshard  the largest mesh's final state saved with orbax, restored on 1 x 1 and one more step
           taken on both; and the 1 x 1 state restored on the largest mesh, likewise.
  tokenizer  R3-VAE (the default recipe) on `--items` unit vectors of `--vector_dim`, batch on
           `data` (1 x 1 and data = 2, 4, ...): per-epoch loss over `--tokenizer_epochs`, its
           difference to 1 x 1, SIDs equal to 1 x 1's, and items/s of the compiled epochs.
Inputs are random (synthetic_inputs: speed and agreement do not depend on the values).
Every part's result or error goes into the JSON, rewritten after each part.
"""
from __future__ import annotations

import functools
import itertools
import os
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from benchmarks import harness, synthetic_inputs
from r3vae_jax import checkpoint, evaluate, io, parallel
from r3vae_jax.configs import default
from r3vae_jax.decode import build_trie
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.recommender import state as state_lib
from r3vae_jax.recommender import programs as rec_programs
from r3vae_jax.recommender.tokens import layout_from_config
from r3vae_jax.tokenizer import programs as tok_programs

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The program's flags, defined only when it runs as one (tests import this module beside
  others that define flags of the same names)."""
  flags.DEFINE_string("out", None, "JSON output path", required=True)
  flags.DEFINE_bool("tiny", False, "Tiny model, batch and catalogue (CPU check of the program).")
  flags.DEFINE_list("parts", ["curve", "rate", "decode", "reshard", "tokenizer"],
                    "Which parts to run (rate also runs rate_large).")
  flags.DEFINE_integer("batch", 512, "Global batch (--tiny: 32).")
  flags.DEFINE_integer("steps", 50, "Steps of the loss curve (--tiny: 4).")
  flags.DEFINE_integer("items", 12101, "Catalogue of the paper-size runs (Beauty's).")
  flags.DEFINE_integer("large_items", 1_000_000, "Catalogue of the large model's rate.")
  flags.DEFINE_integer("users", 4096, "Histories decoded per mesh (--tiny: 64).")
  flags.DEFINE_integer("beam", 20, "Beam size of the decoding part.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps before timing.")
  flags.DEFINE_integer("repeats", 5, "Timed blocks (median reported).")
  flags.DEFINE_integer("iters", 10, "Steps per timed block.")
  flags.DEFINE_integer("vector_dim", 384, "Item vector size of the tokenizer part (MiniLM's).")
  flags.DEFINE_integer("tokenizer_epochs", 20, "Epochs of the tokenizer part (--tiny: 3).")
  flags.DEFINE_integer("budget_s", 560, "Wall-clock budget; parts that do not fit are skipped.")
  flags.DEFINE_string("commit", "", "Commit to record (default: io.source_commit()).")


def make_config(size: str, tiny: bool, batch: int, items: int, beam: int
                ) -> ml_collections.ConfigDict:
  """The recommender config of one run: "paper" (6+6, d128) or "large" (8+8, d512), no dropout."""
  c = default.base_config()
  if tiny:
    c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=16,
                              num_heads=2, d_kv=8, d_ff=32))
    c.sid.codebook_size = 16
  elif size == "large":
    c.recommender.update(dict(num_encoder_layers=8, num_decoder_layers=8, d_model=512,
                              num_heads=8, d_kv=64, d_ff=2048))
  c.recommender.dropout = 0.0
  mean_group = items / c.sid.codebook_size ** c.sid.levels
  c.sid.max_collisions = max(8, int(8 * mean_group) + 8)
  c.train.update(dict(batch_size=batch, warmup_steps=0, length_buckets=(), example_window=0))
  c.eval.update(dict(beam_size=beam, ks=(5, 10)))
  return c


def mesh_shapes(num_devices: int) -> list[tuple[int, int]]:
  """(data, model): 1 x 1, powers of two of `data` up to the devices, and N/2 x 2."""
  shapes = [(1, 1)]
  n = 2
  while n <= num_devices:
    shapes.append((n, 1))
    n *= 2
  if num_devices >= 2 and num_devices % 2 == 0:
    shapes.append((num_devices // 2, 2))
  return shapes


def _mesh(shape: tuple[int, int]) -> jax.sharding.Mesh:
  return parallel.make_mesh(shape[0], shape[1], jax.devices()[:shape[0] * shape[1]])


@functools.lru_cache(maxsize=None)
def _inputs(items: int, levels: int, codebook: int, max_collisions: int, max_history: int,
            count: int) -> tuple[np.ndarray, rec_data.Examples]:
  rng = np.random.default_rng(0)
  table = synthetic_inputs.random_sid_table(rng, items, levels, codebook, max_collisions)
  history = synthetic_inputs.random_histories(rng, count, max_history, items)
  return table, rec_data.Examples(history, rng.integers(0, items, count).astype(np.int32))


def _workload(config: ml_collections.ConfigDict, items: int, batches: int):
  """(SID table, BatchSource of `batches` distinct global batches)."""
  count = config.train.batch_size * batches
  table, examples = _inputs(items, config.sid.levels, config.sid.codebook_size,
                            config.sid.max_collisions, config.data.max_history, count)
  plan = rec_data.BatchPlan(count, config.train.batch_size, config.seed)
  tokens = layout_from_config(config).item_tokens(table)
  return table, rec_data.BatchSource(examples, plan, tokens, table)


def run_curve(config, shape, source, steps) -> tuple[list[float], dict, Any]:
  """Losses of `steps` updates on `shape`; (losses, final state, train programs)."""
  mesh = _mesh(shape)
  prog = rec_programs.train_programs(config, mesh, steps)
  state, losses = prog.init(), []
  for i in range(steps):
    state, m = prog.train_step(state, parallel.to_global(source.host_batch(i), mesh))
    losses.append(m["loss"])
  return [float(x) for x in jax.device_get(losses)], state, prog


def _max_diff(a: Any, b: Any) -> float:
  return float(max(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def part_curve(config, shapes, source, steps) -> tuple[dict, Any]:
  """(per-mesh losses and differences to 1 x 1, the 1 x 1 final parameters on the host)."""
  out, finals = {}, {}
  for shape in shapes:
    start = time.perf_counter()
    losses, state, _ = run_curve(config, shape, source, steps)
    finals[shape] = jax.device_get(state["params"])
    out[f"{shape[0]}x{shape[1]}"] = {"losses": losses, "wall_s": time.perf_counter() - start}
  ref = out["1x1"]["losses"]
  for shape in shapes:
    entry = out[f"{shape[0]}x{shape[1]}"]
    entry["max_abs_loss_diff"] = float(np.max(np.abs(np.subtract(entry["losses"], ref))))
    entry["max_abs_param_diff"] = _max_diff(finals[shape], finals[(1, 1)])
  return out, finals[(1, 1)]


def part_rate(config, shapes, source, timing: dict[str, int], steps: int) -> dict:
  """examples/s per mesh; `timing`: harness.measure's warmup, repeats, iters; `steps`: the
  schedule length (the curve's, so that the persistent compilation cache serves its program)."""
  out = {}
  for shape in shapes:
    mesh = _mesh(shape)
    prog = rec_programs.train_programs(config, mesh, steps)
    batches = [parallel.to_global(source.host_batch(i), mesh) for i in range(4)]
    start = time.perf_counter()
    compiled = prog.train_step.lower(prog.init(), batches[0]).compile()
    compile_s = time.perf_counter() - start
    loop = harness.StepLoop(compiled, prog.init(), itertools.cycle(batches).__next__)
    measured = harness.measure(loop, jax.block_until_ready, **timing)
    out[f"{shape[0]}x{shape[1]}"] = {
        "devices": shape[0] * shape[1], "examples_per_s": config.train.batch_size /
        measured["seconds"], "seconds_per_step": measured["seconds"], "compile_s": compile_s,
        "timing": measured}
  one = out["1x1"]["examples_per_s"]
  for entry in out.values():
    entry["scaling_efficiency"] = entry["examples_per_s"] / (entry["devices"] * one)
  return out


def part_decode(config, shapes, table, params_host, users) -> dict:
  layout = layout_from_config(config)
  trie = build_trie(table, list(layout.level_sizes))
  rng = np.random.default_rng(1)
  history = synthetic_inputs.random_histories(rng, users, config.data.max_history,
                                              table.shape[0])
  batch = rec_data.make_batch(rec_data.Examples(history, np.zeros(users, np.int32)),
                              np.arange(users), np.ones(users), layout.item_tokens(table), table)
  inputs = {"enc_tokens": batch["enc_tokens"], "enc_mask": batch["enc_mask"]}
  out, ref = {}, None
  for shape in shapes:
    mesh = _mesh(shape)
    prog = rec_programs.model_programs(config, mesh)
    params = jax.device_put(params_host, prog.param_shardings)
    rank = lambda b, p=params, g=prog.generate: g(p, b, trie)
    size = min(users, 256 * shape[0])
    evaluate.rank_in_batches(rank, inputs, size, mesh)  # compile
    start = time.perf_counter()
    ranked = evaluate.rank_in_batches(rank, inputs, size, mesh)
    seconds = time.perf_counter() - start
    ref = ranked if ref is None else ref
    out[f"{shape[0]}x{shape[1]}"] = {"users_per_s": users / seconds, "batch": size,
                                     "identical_to_1x1": bool(np.array_equal(ranked, ref)),
                                     **ranking_agreement(ranked, ref)}
  return out


def ranking_agreement(ranked: np.ndarray, ref: np.ndarray) -> dict[str, float]:
  """`[users, K]` item ids against the reference: share of users whose whole ranking, top-1
  item, and top-K set are equal."""
  same_set = [set(a) == set(b) for a, b in zip(ranked.tolist(), ref.tolist())]
  return {"users_ranking_equal": float(np.mean(np.all(ranked == ref, axis=1))),
          "users_top1_equal": float(np.mean(ranked[:, 0] == ref[:, 0])),
          "users_topk_set_equal": float(np.mean(same_set))}


def _restore_on(config, state, shape, directory, steps) -> Any:
  """`state` saved by orbax, restored in the shardings of `shape`'s train state."""
  manager = checkpoint.make_manager(directory, keep=1, async_save=False)
  try:
    checkpoint.save(manager, 1, state, {"from": "multi_device"}, force=True)
    prog = rec_programs.train_programs(config, _mesh(shape), steps)
    abstract = state_lib.abstract_state(rec_programs.model_programs(config, _mesh(shape)).mdef,
                                        prog.tx, prog.shardings)
    return checkpoint.restore(manager, abstract, step=1)[1], prog
  finally:
    manager.close()


def part_reshard(config, big, source, steps) -> dict:
  """N -> 1 and 1 -> N: a restored state's next step equals the saving mesh's next step."""
  if big == (1, 1):
    raise ValueError("reshard: one device only, nothing to reshard")
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    for src, dst in ((big, (1, 1)), ((1, 1), big)):
      _, state, src_prog = run_curve(config, src, source, steps)
      directory = os.path.join(tmp, f"{src[0]}x{src[1]}")
      restored, dst_prog = _restore_on(config, state, dst, directory, steps)
      batch = source.host_batch(steps)
      _, m_src = src_prog.train_step(state, parallel.to_global(batch, _mesh(src)))
      restored_specs = {str(x.sharding.spec) for x in jax.tree.leaves(restored["params"])}
      _, m_dst = dst_prog.train_step(restored, parallel.to_global(batch, _mesh(dst)))
      out[f"{src[0]}x{src[1]}->{dst[0]}x{dst[1]}"] = {
          "next_loss_saved_mesh": float(m_src["loss"]),
          "next_loss_restored_mesh": float(m_dst["loss"]),
          "abs_diff": abs(float(m_src["loss"]) - float(m_dst["loss"])),
          "restored_param_specs": sorted(restored_specs)}
  return out


def tokenizer_config(tiny: bool, batch: int) -> ml_collections.ConfigDict:
  """The R3-VAE default recipe (identity encoder, top-1 cosine rating, SC + PD)."""
  c = default.base_config()
  c.tokenizer = "r3vae"
  c.r3vae.batch_size = batch
  if tiny:
    c.sid.codebook_size = 16
    c.r3vae.kmeans_iters = 5
  return c


def part_tokenizer(config, shapes, vectors: np.ndarray, epochs: int) -> dict:
  """Per data-axis mesh: the loss curve, SIDs and items/s of `epochs` R3-VAE epochs."""
  out, ref = {}, None
  for shape in shapes:
    mesh = _mesh(shape)
    setup = tok_programs.init_state(config, vectors, mesh, kmeans=True)
    args = (setup.vectors, setup.shuffle_key, np.int32(0))
    start = time.perf_counter()
    compiled = tok_programs.train_chunk.lower(setup.state, *args, num_epochs=epochs,
                                           **setup.static).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, terms = jax.block_until_ready(compiled(setup.state, *args))
    seconds = time.perf_counter() - start
    codes, _ = tok_programs.encode(setup.graphdef, state["params"], vectors, mesh)
    losses = [float(x) for x in jax.device_get(terms["loss"])]
    params = jax.device_get(state["params"])
    entry = {"devices": shape[0], "losses": losses, "compile_s": compile_s,
             "seconds": seconds, "items_per_s": vectors.shape[0] * epochs / seconds}
    ref = ref or (losses, codes, params)
    entry["max_abs_loss_diff"] = float(np.max(np.abs(np.subtract(losses, ref[0]))))
    entry["max_abs_param_diff"] = _max_diff(params, ref[2])
    entry["sid_rows_equal_to_1x1"] = float(np.mean(np.all(codes == ref[1], axis=1)))
    out[f"{shape[0]}x{shape[1]}"] = entry
  return out


def main(argv: list[str]) -> None:
  del argv
  tiny = FLAGS.tiny
  batch, steps = (32, 4) if tiny else (FLAGS.batch, FLAGS.steps)
  users = 64 if tiny else FLAGS.users
  items, large_items = (600, 2000) if tiny else (FLAGS.items, FLAGS.large_items)
  shapes = mesh_shapes(jax.device_count())
  result = {"kind": "multi_device", **harness.environment(FLAGS.commit),
            "command": " ".join(sys.argv), "meshes": [f"{d}x{m}" for d, m in shapes],
            "batch": batch, "steps": steps, "tiny": tiny,
            "matmul_precision": str(jax.config.jax_default_matmul_precision)}
  write = lambda: io.write_json(FLAGS.out, result)
  runner = harness.Runner(time.perf_counter() + FLAGS.budget_s, 0.0, write)
  beam = min(FLAGS.beam, 10) if tiny else FLAGS.beam
  paper = make_config("paper", tiny, batch, items, beam)
  table, source = _workload(paper, items, max(steps + 1, 4))
  large = make_config("large", tiny, batch, large_items, beam)
  timing = dict(warmup=FLAGS.warmup, repeats=FLAGS.repeats, iters=FLAGS.iters)
  trained = {}

  def curve():
    out, trained["params"] = part_curve(paper, shapes, source, steps)
    return out

  def decode():
    if "params" not in trained:
      trained["params"] = jax.device_get(run_curve(paper, (1, 1), source, steps)[1]["params"])
    return part_decode(paper, shapes, table, trained["params"], users)

  parts = {
      "curve": curve,
      "rate": lambda: part_rate(paper, shapes, source, timing, steps),
      "decode": decode,
      "reshard": lambda: part_reshard(paper, shapes[-1], source, steps),
      "tokenizer": lambda: part_tokenizer(
          tokenizer_config(tiny, 256 if tiny else 1024), [s for s in shapes if s[1] == 1],
          synthetic_inputs.unit_vectors(items, 32 if tiny else FLAGS.vector_dim),
          3 if tiny else FLAGS.tokenizer_epochs),
      "rate_large": lambda: part_rate(large, shapes, _workload(large, large_items, 4)[1],
                                      timing, steps),
  }
  wanted = set(FLAGS.parts) | ({"rate_large"} if "rate" in FLAGS.parts else set())
  unknown = set(FLAGS.parts) - set(parts)
  if unknown:
    raise ValueError(f"--parts: unknown {sorted(unknown)}, expected some of {sorted(parts)}")
  for name, fn in parts.items():
    if name in wanted:
      runner.variant(result, name, fn)
  write()
  print(f"multi_device: {result['meshes']} on {result['num_devices']} x {result['device']} -> "
        f"{FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
