"""R3-VAE training speed and time to convergence, on Beauty vectors and on 1M x 768 synthetic.

  python benchmarks/tokenizer_scaling.py --vectors=.carry/beauty_minilm.npy \
      --out=benchmarks/results/tokenizer_scaling_h100.json

Per workload (`beauty` from `--vectors`, `synthetic` = `--synthetic_items` x `--synthetic_dim`
rows around unit-sphere topic centres): the trainer's own program (`programs.init_state`,
`programs.train_chunk`, `programs.encode`) runs the base config's R3-VAE (`--epochs`, default
`r3vae.epochs`; synthetic: `--synthetic_epochs`) in chunks of `--eval_every` epochs. Each chunk
is timed to `block_until_ready` (compile excluded: the chunk program is compiled ahead of
time), then every item is coded and its collision rate, level-1 usage and reconstruction MSE
recorded. `converged_epoch` is the first evaluated epoch whose collision rate is within `--tol`
of the run's best and whose training loss is within `--tol` (relative) of the last one;
`seconds_to_converge` is the training time up to it.
Prints one JSON line and writes it to `--out`.
"""
import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax import quantize
from r3vae_jax.configs import default
from r3vae_jax.tokenizer import programs

flags.DEFINE_string("vectors", None, ".npy float32 [N, D] Beauty item vectors (None: skip)")
flags.DEFINE_integer("synthetic_items", 1_000_000, "synthetic rows (0: skip)")
flags.DEFINE_integer("synthetic_dim", 768, "synthetic dimension")
flags.DEFINE_integer("epochs", None, "Beauty epochs (default: config.r3vae.epochs)")
flags.DEFINE_integer("eval_every", None, "epochs per timed chunk (default: r3vae.eval_every)")
flags.DEFINE_integer("synthetic_epochs", 10, "epochs on the synthetic workload")
flags.DEFINE_float("tol", 0.01, "convergence tolerance (collision rate: absolute; loss: relative)")
flags.DEFINE_integer("seed", 0, "seed of the data and the run")
flags.DEFINE_string("out", None, "JSON output path", required=True)


def _synthetic(n: int, dim: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((max(1, n // 50), dim), dtype=np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  x = centres[rng.integers(0, centres.shape[0], n)]
  return x + 0.3 / np.sqrt(dim) * rng.standard_normal(x.shape, dtype=np.float32)


def _run(vectors: np.ndarray, epochs: int, eval_every: int, seed: int, tol: float) -> dict:
  config = default.base_config()
  config.seed = seed
  c = config.r3vae
  mesh = parallel.config_mesh(config)
  start = time.perf_counter()
  setup = programs.init_state(config, vectors, mesh, kmeans=c.kmeans_init)
  jax.block_until_ready(setup.state)
  init_s = time.perf_counter() - start
  state = setup.state
  args = (setup.vectors, setup.shuffle_key)
  start = time.perf_counter()
  chunk = programs.train_chunk.lower(state, *args, jnp.int32(0), num_epochs=eval_every,
                                  **setup.static).compile()
  compile_s = time.perf_counter() - start
  curve, train_s = [], 0.0
  for epoch in range(0, epochs, eval_every):
    start = time.perf_counter()
    state, terms = jax.block_until_ready(chunk(state, *args, jnp.int32(epoch)))
    train_s += time.perf_counter() - start
    codes, recon = programs.encode(setup.graphdef, state["params"], vectors, mesh)
    curve.append(dict(epoch=epoch + eval_every, train_seconds=train_s,
                      train_loss=float(terms["loss"][-1]), reconstruction_mse=recon,
                      collision_rate=float(quantize.collision_rate(jnp.asarray(codes))),
                      usage_level1=float(np.unique(codes[:, 0]).size
                                         / config.sid.codebook_size)))
  best = min(p["collision_rate"] for p in curve)
  last = curve[-1]["train_loss"]
  done = next(p for p in curve if p["collision_rate"] <= best + tol
              and abs(p["train_loss"] - last) <= tol * abs(last))
  n = vectors.shape[0]
  return dict(num_items=int(n), dim=int(vectors.shape[1]), epochs=epochs,
              steps_per_epoch=-(-n // setup.static["batch"]), batch_size=setup.static["batch"],
              kmeans_init_seconds=init_s, compile_seconds=compile_s, train_seconds=train_s,
              items_per_second=epochs * n / train_s, converged_epoch=done["epoch"],
              seconds_to_converge=done["train_seconds"], curve=curve)


def main(argv):
  del argv
  f = flags.FLAGS
  c = default.base_config().r3vae
  every = f.eval_every or c.eval_every
  results = {}
  out = dict(benchmark="tokenizer_scaling", config=c.to_dict(),
             device=jax.devices()[0].device_kind, num_devices=jax.device_count(),
             platform=jax.devices()[0].platform, jax_version=jax.__version__, results=results)
  workloads = []
  if f.vectors:
    workloads.append(("beauty", lambda: np.asarray(io.read_npy(f.vectors), np.float32),
                      f.epochs or c.epochs, every))
  if f.synthetic_items:
    workloads.append(("synthetic", lambda: _synthetic(f.synthetic_items, f.synthetic_dim, f.seed),
                      f.synthetic_epochs, min(every, f.synthetic_epochs)))
  for name, load, epochs, chunk in workloads:  # written after each: a cut-short run keeps some
    results[name] = _run(load(), epochs, chunk, f.seed, f.tol)
    print(json.dumps({name: results[name]}, default=str), flush=True)
    io.write_json(f.out, out)


if __name__ == "__main__":
  app.run(main)
