"""Residual quantisation of many vectors: jitted JAX (`quantize.residual_quantize`) vs numpy.

  python benchmarks/quantize_bench.py --out=benchmarks/results/quantize_bench.json
  python benchmarks/quantize_bench.py --num_vectors=20000 --out=/tmp/qb.json   # CPU check

Default problem: 1M vectors, d=256, 3 levels x 256 codes. The numpy reference is the
straightforward implementation: per level, chunked float32 matmul distances
`||c||^2 - 2 x.c`, argmin, gather, subtract. JAX time is for device-resident inputs (the one-off
host->device copy is reported separately); both take the median of `--repeats` runs after a
warm-up, JAX with `block_until_ready`. Prints one JSON line and writes it to `--out`.
"""
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from r3vae_jax import io
from r3vae_jax import quantize

flags.DEFINE_integer("num_vectors", 1_000_000, "rows to quantise")
flags.DEFINE_integer("dim", 256, "vector dimension")
flags.DEFINE_integer("levels", 3, "residual levels L")
flags.DEFINE_integer("codes", 256, "codes per level K")
flags.DEFINE_integer("repeats", 5, "timed JAX runs (median reported)")
flags.DEFINE_integer("numpy_repeats", 3, "timed numpy runs (median reported)")
flags.DEFINE_integer("numpy_chunk", 65536, "rows per numpy matmul chunk")
flags.DEFINE_integer("chunk_size", 0, "rows per JAX score chunk (0 = automatic)")
flags.DEFINE_integer("seed", 0, "data seed")
flags.DEFINE_string("out", None, "JSON output path", required=True)


def numpy_residual_quantize(x: np.ndarray, codebooks: np.ndarray,
                            chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """Reference: codes `int32[N, L]` and quantized `[N, D]` with chunked numpy matmuls."""
  residual = x.copy()
  codes = np.empty((x.shape[0], codebooks.shape[0]), np.int32)
  for level, codebook in enumerate(codebooks):
    c2 = np.sum(codebook * codebook, axis=1)
    for start in range(0, x.shape[0], chunk):
      rows = residual[start:start + chunk]
      best = np.argmin(c2[None, :] - 2.0 * (rows @ codebook.T), axis=1)
      codes[start:start + chunk, level] = best
      rows -= codebook[best]
  return codes, x - residual


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  f = flags.FLAGS
  rng = np.random.default_rng(f.seed)
  x = rng.standard_normal((f.num_vectors, f.dim), dtype=np.float32)
  # Codebooks shrink per level, as residual codebooks do.
  scales = (0.5 ** np.arange(f.levels, dtype=np.float32))[:, None, None]
  codebooks = rng.standard_normal((f.levels, f.codes, f.dim), dtype=np.float32) * scales

  start = time.perf_counter()
  x_dev = jax.block_until_ready(jax.device_put(x))
  books_dev = jax.block_until_ready(jax.device_put(codebooks))
  transfer = time.perf_counter() - start

  chunk = f.chunk_size or None
  run = lambda: jax.block_until_ready(quantize.residual_quantize(x_dev, books_dev, "l2", chunk))
  start = time.perf_counter()
  jax_codes, jax_quantized, _ = run()
  first_call = time.perf_counter() - start
  jax_seconds = _median_seconds(run, f.repeats)

  np_codes, np_quantized = numpy_residual_quantize(x, codebooks, f.numpy_chunk)
  numpy_seconds = _median_seconds(
      lambda: numpy_residual_quantize(x, codebooks, f.numpy_chunk), f.numpy_repeats)

  jax_codes = np.asarray(jax_codes)
  result = dict(
      benchmark="residual_quantize", device=jax.devices()[0].device_kind,
      platform=jax.devices()[0].platform, jax_version=jax.__version__,
      numpy_version=np.__version__, num_vectors=f.num_vectors, dim=f.dim, levels=f.levels,
      codes=f.codes, repeats=f.repeats, numpy_repeats=f.numpy_repeats,
      jax_seconds=jax_seconds, jax_first_call_seconds=first_call,
      host_to_device_seconds=transfer, numpy_seconds=numpy_seconds,
      speedup=numpy_seconds / jax_seconds,
      vectors_per_second=f.num_vectors / jax_seconds,
      code_agreement=float(np.mean(np.all(jax_codes == np_codes, axis=1))),
      max_abs_quantized_diff=float(np.max(np.abs(np.asarray(jax_quantized) - np_quantized))),
  )
  print(json.dumps(result))
  io.write_json(f.out, result)


if __name__ == "__main__":
  app.run(main)
