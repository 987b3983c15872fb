r"""Trie-constrained beam search on the device vs a Python-callback trie decoder, same model.

Two catalogues (random SID tables of the stated shape; random model weights: speed only):
  beauty:  22,363 users, 12,101 items, SIDs 3 x 256 codes + a 256-way collision level, beam 20.
  million: 1,000,000 items, SIDs 3 x 8192 codes + collision level, beam 20.

Model: the real T5 decoder (`r3vae_jax.recommender.model.make_step_fn`, paper size 6+6 layers,
d_model 128); `--model=mlp` decodes a small stand-in MLP step function instead.

"device" decoder: `r3vae_jax.decode.beam_search` under one `jax.jit` (encoder + 4 decoder steps
+ trie masking + top-k + cache gathers), all users in batches through `evaluate.rank_in_batches`
(host->device transfer and result fetch included), median of `--repeats` after a warm-up.

"callback" decoder, written the standard way (as with HF `generate(prefix_allowed_tokens_fn=)`):
a dict-of-dicts trie; at every step the logits come back to the host, a Python function is
called per beam with its prefix to list the allowed codes, a mask is built and sent back, and
the masked log-softmax / top-k / cache gather run as jitted calls on the same model step. It is
timed on `--callback_users` users only and EXTRAPOLATED linearly to the whole user count (the
JSON says so). Both decoders score identically; the JSON reports how often their rankings agree
and the largest difference of their per-rank scores (random weights make many near-ties, so
rankings of equal-scored items may swap under floating-point noise, e.g. TF32 matmuls on GPU).

On the GPU (writes benchmarks/results/decode_bench.json):
  python -m benchmarks.decode_bench --out=benchmarks/results/decode_bench.json
Tiny CPU smoke run (seconds):
  python -m benchmarks.decode_bench --out=/tmp/decode_bench.json --beauty_users=48 \
    --beauty_items=300 --million_items=3000 --million_codebook=64 --million_users=24 \
    --num_layers=1 --batch_size=16 --callback_users=8 --callback_batch=8 --repeats=1
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from typing import Any, Callable, NamedTuple

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import synthetic_inputs, trace_summary
from r3vae_jax import evaluate, io, parallel
from r3vae_jax.configs import default
from r3vae_jax.decode import beam_search, build_trie, gather_beams, masked_log_softmax

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "benchmarks/results/decode_bench.json", "JSON results path.")
flags.DEFINE_list("scenarios", ["beauty", "million"], "Which catalogues to run.")
flags.DEFINE_enum("model", "t5", ["t5", "mlp"], "The decoded model: the T5 recommender or a "
                  "small MLP stand-in.")
flags.DEFINE_integer("beauty_users", 22363, "Users decoded (Beauty test set).")
flags.DEFINE_integer("beauty_items", 12101, "Items (Beauty).")
flags.DEFINE_integer("beauty_codebook", 256, "Codes per level (Beauty).")
flags.DEFINE_integer("million_users", 22363, "Users decoded (1M catalogue).")
flags.DEFINE_integer("million_items", 1_000_000, "Items (1M catalogue).")
flags.DEFINE_integer("million_codebook", 8192, "Codes per level (1M catalogue).")
flags.DEFINE_integer("levels", 3, "Code levels before the collision level.")
flags.DEFINE_integer("max_collisions", 256, "Collision level vocabulary.")
flags.DEFINE_integer("beam", 20, "Beam width.")
flags.DEFINE_integer("history", 20, "History items per user.")
flags.DEFINE_integer("num_layers", 6, "Encoder and decoder layers (each).")
flags.DEFINE_integer("d_model", 128, "Model width.")
flags.DEFINE_string("dtype", "float32", "Model compute dtype (float32 | bfloat16).")
flags.DEFINE_enum("matmul_precision", "default", ["default", "high", "highest"],
                  "jax_default_matmul_precision ('highest': no TF32 on GPU).")
flags.DEFINE_integer("batch_size", 4096, "Max users per jitted device call (beauty).")
flags.DEFINE_integer("million_batch_size", 1024, "Max users per jitted device call (million).")
flags.DEFINE_integer("dense_budget", 2**26, "Trie: dense child table when nodes*K <= this.")
flags.DEFINE_integer("repeats", 5, "Timed repeats of the device decoder (median).")
flags.DEFINE_integer("callback_users", 512, "Users decoded by the callback decoder.")
flags.DEFINE_integer("callback_batch", 128, "Users per callback-decoder generate call.")
flags.DEFINE_bool("trace", False, "Also trace one timed decode of all users with jax.profiler "
                  "and store its summary (benchmarks.trace_summary: top kernels, idle gaps).")
flags.DEFINE_integer("seed", 0, "Random SIDs, histories and weights.")


class BenchModel(NamedTuple):
  """A model as the decoders see it: pure functions of `params`."""
  name: str
  params: Any
  encode: Callable[[Any, dict[str, jax.Array]], Any]            # (params, batch) -> ctx
  make_step: Callable[[Any, Any, int], tuple[Callable, Any]]    # (params, ctx, beam) -> (step_fn, cache)
  num_params: int


# ---- models ---------------------------------------------------------------------------------

def t5_model(level_sizes: list[int], seed: int) -> BenchModel:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from r3vae_jax.recommender import model as rec  # pylint: disable=g-import-not-at-top
  config = default.base_config()
  config.sid.levels = len(level_sizes) - 1
  config.sid.codebook_size = level_sizes[0]
  config.sid.max_collisions = level_sizes[-1]
  config.recommender.num_encoder_layers = FLAGS.num_layers
  config.recommender.num_decoder_layers = FLAGS.num_layers
  config.recommender.d_model = FLAGS.d_model
  config.recommender.dtype = FLAGS.dtype
  model = rec.T5Recommender.from_config(config, seed=seed)
  graphdef, state = nnx.split(model)

  def encode(params, batch):
    return nnx.merge(graphdef, params).encode(batch["tokens"], batch["mask"]), batch["mask"]

  def make_step(params, ctx, beam):
    return rec.make_step_fn(nnx.merge(graphdef, params), ctx[0], ctx[1], beam)

  return BenchModel(f"t5 {FLAGS.num_layers}+{FLAGS.num_layers} d{FLAGS.d_model}", state, encode,
                    make_step, rec.count_params(model))


def mlp_model(level_sizes: list[int], vocab: int, seed: int) -> BenchModel:
  """Stand-in: mean of history token embeddings -> MLP; per step h' = tanh(h W + E_l[prev])."""
  d = FLAGS.d_model
  keys = iter(jax.random.split(jax.random.key(seed), 4 + 2 * len(level_sizes)))
  normal = lambda shape, scale: jax.random.normal(next(keys), shape) * scale
  params = {"tok": normal((vocab, d), 1.0), "w_enc": normal((d, d), d ** -0.5),
            "w_step": normal((d, d), d ** -0.5), "bos": normal((d,), 1.0),
            "emb": [normal((k, d), 1.0) for k in level_sizes],
            "out": [normal((d, k), d ** -0.5) for k in level_sizes]}

  def encode(p, batch):
    mask = batch["mask"][..., None]
    mean = (p["tok"][batch["tokens"]] * mask).sum(1) / jnp.maximum(mask.sum(1), 1)
    return jnp.tanh(mean @ p["w_enc"])

  def make_step(p, ctx, beam):
    def step_fn(prev, level, cache):
      x = p["bos"] if level == 0 else p["emb"][level - 1][prev]
      h = jnp.tanh(cache["h"] @ p["w_step"] + x)
      return h @ p["out"][level], {"h": h}
    return step_fn, {"h": jnp.repeat(ctx, beam, axis=0)}

  count = sum(x.size for x in jax.tree.leaves(params))
  return BenchModel(f"mlp stand-in d{d}", params, encode, make_step, count)


def user_inputs(rng: np.random.Generator, sid_table: np.ndarray, level_sizes: list[int],
                users: int) -> dict[str, np.ndarray]:
  """Random histories as flattened SID tokens (vocabulary: PAD, BOS, then each level's codes):
  tokens int32[U, H*(L+1)], mask bool[U, H*(L+1)], left-padded."""
  n, width = sid_table.shape
  offsets = 2 + np.concatenate([[0], np.cumsum(level_sizes)[:-1]])
  lengths = rng.integers(3, FLAGS.history + 1, size=users)
  items = rng.integers(0, n, size=(users, FLAGS.history))
  valid = np.arange(FLAGS.history)[None, :] >= FLAGS.history - lengths[:, None]  # left-padded
  tokens = np.where(valid[..., None], sid_table[items] + offsets, 0).reshape(users, -1)
  return {"tokens": tokens.astype(np.int32), "mask": np.repeat(valid, width, axis=1)}


# ---- the Python-callback decoder ------------------------------------------------------------

def dict_trie(sid_table: np.ndarray) -> dict:
  root: dict = {}
  for row in sid_table.tolist():
    node = root
    for code in row:
      node = node.setdefault(code, {})
  return root


def make_callback_decoder(model: BenchModel, sid_table: np.ndarray, level_sizes: list[int],
                          beam: int
                          ) -> Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
  """generate()-style decoding with a per-beam, per-step `prefix_allowed_tokens_fn`."""
  trie = dict_trie(sid_table)
  item_of = {tuple(row): i for i, row in enumerate(sid_table.tolist())}

  def prefix_allowed_tokens_fn(prefix: tuple[int, ...]) -> list[int]:
    node = trie
    for code in prefix:
      node = node.get(code)
      if node is None:
        return []
    return list(node)

  encode = jax.jit(model.encode)
  init = jax.jit(lambda p, ctx: model.make_step(p, ctx, beam)[1])
  step = jax.jit(lambda p, ctx, prev, cache, level: model.make_step(p, ctx, beam)[0](
      prev, level, cache), static_argnums=4)

  @jax.jit
  def select(logits, allowed, scores):
    batch = scores.shape[0]
    logp = masked_log_softmax(logits, allowed).reshape(batch, beam, -1)
    total = (scores[:, :, None] + logp).reshape(batch, -1)
    new_scores, flat = jax.lax.top_k(total, beam)
    return new_scores, flat // logp.shape[-1], flat % logp.shape[-1]

  reorder = jax.jit(gather_beams)

  def generate(batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """-> (item ids int32[users, beam], scores float32[users, beam]), best first."""
    users = batch["tokens"].shape[0]
    ctx = encode(model.params, batch)
    cache = init(model.params, ctx)
    scores = jnp.asarray(np.tile(np.where(np.arange(beam) == 0, 0.0, -np.inf), (users, 1)),
                         jnp.float32)
    prefixes = [[()] * beam for _ in range(users)]
    prev = jnp.full((users * beam,), -1, jnp.int32)
    for level, k in enumerate(level_sizes):
      logits, cache = step(model.params, ctx, prev, cache, level)
      allowed = np.zeros((users * beam, k), bool)
      for b in range(users):
        for j in range(beam):
          allowed[b * beam + j, prefix_allowed_tokens_fn(prefixes[b][j]) or [0]] = True
      scores, parent, code = select(logits, allowed, scores)
      parent_np, code_np = np.asarray(parent), np.asarray(code)
      prefixes = [[prefixes[b][parent_np[b, j]] + (int(code_np[b, j]),) for j in range(beam)]
                  for b in range(users)]
      prev = jnp.asarray(code_np.reshape(-1), jnp.int32)
      if level + 1 < len(level_sizes):
        cache = reorder(cache, parent)
    scores = np.asarray(scores)
    alive = np.isfinite(scores)
    items = np.asarray([[item_of.get(prefixes[b][j], -1) if alive[b, j] else -1
                         for j in range(beam)] for b in range(users)], np.int32)
    return items, scores

  return generate


# ---- one scenario ---------------------------------------------------------------------------

def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times, out


def run_scenario(name: str, users: int, items: int, codebook: int, batch_size: int,
                 use_t5: bool, mesh: jax.sharding.Mesh) -> dict[str, Any]:
  rng = np.random.default_rng(FLAGS.seed)
  beam = FLAGS.beam
  sid_table = synthetic_inputs.random_sid_table(rng, items, FLAGS.levels, codebook,
                                               FLAGS.max_collisions, first_level_zipf=1.3)
  level_sizes = [codebook] * FLAGS.levels + [FLAGS.max_collisions]
  inputs = user_inputs(rng, sid_table, level_sizes, users)
  start = time.perf_counter()
  trie = build_trie(sid_table, level_sizes, dense_budget=FLAGS.dense_budget)
  trie_build_s = time.perf_counter() - start
  trie = jax.device_put(trie, parallel.replicated(mesh))
  vocab = 2 + sum(level_sizes)
  model = t5_model(level_sizes, FLAGS.seed) if use_t5 else mlp_model(level_sizes, vocab,
                                                                     FLAGS.seed)
  logging.info("%s: %d users, %d items, trie %s (%.1f MB, built in %.1f s), model %s", name,
               users, items, trie.layouts, trie.nbytes / 2**20, trie_build_s, model.name)

  num_batches = -(-users // batch_size)  # equal batches: little padding in the last one
  batch_size = parallel.pad_to_multiple(-(-users // num_batches), mesh)

  def device_search(params, trie, batch):
    step_fn, cache = model.make_step(params, model.encode(params, batch), beam)
    return beam_search(step_fn, cache, trie, batch["tokens"].shape[0], beam, mesh=mesh)

  device_rank = jax.jit(lambda *args: device_search(*args).item_ids)

  rank_fn = lambda batch: device_rank(model.params, trie, batch)
  warm = jax.tree.map(lambda x: x[:batch_size], inputs)
  start = time.perf_counter()
  evaluate.rank_in_batches(rank_fn, warm, batch_size, mesh)
  compile_s = time.perf_counter() - start
  times, ranked = timed(lambda: evaluate.rank_in_batches(rank_fn, inputs, batch_size, mesh),
                        FLAGS.repeats)
  device_s = statistics.median(times)

  profile = None
  if FLAGS.trace:
    trace_dir = tempfile.mkdtemp(prefix=f"decode_trace_{name}_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      evaluate.rank_in_batches(rank_fn, inputs, batch_size, mesh)
    profile = trace_summary.summarise_dir(trace_dir, 1)

  sub = min(FLAGS.callback_users, users)
  generate = make_callback_decoder(model, sid_table, level_sizes, beam)
  cb_batch = min(FLAGS.callback_batch, sub)
  first = jax.tree.map(lambda x: x[:cb_batch], inputs)
  _, cb_first_scores = generate(first)  # also the warm-up: compiles its jitted parts
  start = time.perf_counter()
  cb_ranked = np.concatenate([
      generate(jax.tree.map(lambda x, s=s: x[s:s + cb_batch], inputs))[0]
      for s in range(0, sub, cb_batch)])
  cb_s = time.perf_counter() - start
  cb_full_s = cb_s * users / sub
  agree = ranked[:sub] == cb_ranked
  dev_first_scores = np.asarray(jax.jit(device_search)(model.params, trie, first).scores)
  finite = np.isfinite(dev_first_scores) & np.isfinite(cb_first_scores)
  score_diff = float(np.abs(dev_first_scores - cb_first_scores)[finite].max())

  result = {
      "users": users, "items": items, "level_sizes": level_sizes, "beam": beam,
      "model": model.name, "model_params": int(model.num_params),
      "trie": {"layouts": list(trie.layouts), "bytes": int(trie.nbytes),
               "build_s": trie_build_s,
               "max_branch": [getattr(lv, "max_branch", None) for lv in trie.levels]},
      "device_decoder": {"seconds": device_s, "users_per_s": users / device_s,
                         "all_repeats_s": times, "compile_and_first_batch_s": compile_s,
                         "batch_size": batch_size, "devices": mesh.size},
      "callback_decoder": {
          "users_measured": sub, "seconds_measured": cb_s, "users_per_s": sub / cb_s,
          "seconds_extrapolated_to_all_users": cb_full_s, "batch_size": cb_batch,
          "note": f"timed on {sub} users, extrapolated linearly to {users}"},
      "speedup": cb_full_s / device_s,
      "agreement": {"same_top1": float(agree[:, 0].mean()),
                    "same_full_ranking": float(agree.all(1).mean()),
                    "max_abs_score_diff_per_rank": score_diff,
                    "score_range_per_rank": float(np.ptp(dev_first_scores[finite])),
                    "scores_compared_users": cb_batch,
                    "users_compared": sub},
      "valid_items_fraction": float((ranked >= 0).mean()),
  }
  if profile is not None:
    result["profile_one_decode_of_all_users"] = profile
  logging.info("%s: device %.3f s (%.0f users/s), callback %.1f users/s -> %.1f s "
               "extrapolated, speedup %.1fx, top-1 agreement %.3f", name, device_s,
               users / device_s, sub / cb_s, cb_full_s, result["speedup"],
               result["agreement"]["same_top1"])
  return result


def main(argv):
  del argv
  if FLAGS.matmul_precision != "default":
    jax.config.update("jax_default_matmul_precision", FLAGS.matmul_precision)
  use_t5 = FLAGS.model == "t5"
  mesh = parallel.make_mesh()
  sizes = {"beauty": (FLAGS.beauty_users, FLAGS.beauty_items, FLAGS.beauty_codebook,
                      FLAGS.batch_size),
           "million": (FLAGS.million_users, FLAGS.million_items, FLAGS.million_codebook,
                       FLAGS.million_batch_size)}
  unknown = set(FLAGS.scenarios) - set(sizes)
  if unknown:
    raise app.UsageError(f"--scenarios: unknown {sorted(unknown)}; choose from {sorted(sizes)}")
  results = {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
             "device_count": jax.device_count(), "jax_version": jax.__version__,
             "dtype": FLAGS.dtype, "matmul_precision": FLAGS.matmul_precision, "scenarios": {}}
  for name in FLAGS.scenarios:
    results["scenarios"][name] = run_scenario(name, *sizes[name], use_t5=use_t5, mesh=mesh)
    io.write_json(FLAGS.out, results)
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
