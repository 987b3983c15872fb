"""Tokenizer training speed and result: R3-VAE and RQ-VAE on given (or synthetic) vectors.

  python benchmarks/tokenizer_bench.py --vectors=beauty_minilm.npy --out=/tmp/tok.json
  python benchmarks/tokenizer_bench.py --num_items=1000000 --dim=768 --epochs=2 --nofit \
      --out=/tmp/tok_1m.json                                  # scaling: training only
  python benchmarks/tokenizer_bench.py --num_items=512 --dim=16 --epochs=2 --codebook_size=8 \
      --hidden=16 --latent_dim=8 --batch_size=64 --out=/tmp/tok_cpu.json   # CPU check

Per tokenizer (the base config's settings unless overridden by flags):

* `train`: the trainer's own jitted program (`programs.train_chunk`): k-means init (timed),
  ahead-of-time compile (timed), then `--epochs` epochs as one call, timed to
  `block_until_ready`: `train_seconds`, `items_per_second` = epochs * N / train_seconds.
* `fit` (unless `--nofit`): `api.fit_tokenizer` end to end in a temporary workdir (k-means init,
  training with SID metrics every `eval_every` epochs, checkpoints, SID table): `fit_seconds`
  and the final metrics of the selected epoch.

Synthetic vectors (no `--vectors`): `--num_items` rows around `--num_items // 50` Gaussian
topic centres on the unit sphere. Prints one JSON line and writes it to `--out`.
"""
import json
import tempfile
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax.configs import default
from r3vae_jax.tokenizer import api
from r3vae_jax.tokenizer import programs

flags.DEFINE_string("vectors", None, ".npy of float32 [N, D] item vectors (default: synthetic)")
flags.DEFINE_integer("num_items", 12101, "synthetic: rows")
flags.DEFINE_integer("dim", 384, "synthetic: dimension")
flags.DEFINE_list("tokenizers", ["r3vae", "rqvae"], "which gradient tokenizers to run")
flags.DEFINE_integer("epochs", 200, "epochs to train (and to fit)")
flags.DEFINE_integer("eval_every", None, "fit: epochs between SID evaluations (default: config)")
flags.DEFINE_integer("batch_size", None, "batch size (default: config)")
flags.DEFINE_integer("codebook_size", None, "K (default: config)")
flags.DEFINE_integer("levels", None, "L (default: config)")
flags.DEFINE_list("hidden", None, "encoder hidden sizes (default: config)")
flags.DEFINE_integer("latent_dim", None, "latent dimension (default: config)")
flags.DEFINE_bool("fit", True, "also run fit_tokenizer end to end (SID metrics, checkpoints)")
flags.DEFINE_integer("seed", 0, "seed of the data and the run")
flags.DEFINE_string("out", None, "JSON output path", required=True)


def _vectors(f) -> tuple[np.ndarray, str]:
  if f.vectors:
    return np.asarray(io.read_npy(f.vectors), np.float32), f.vectors
  rng = np.random.default_rng(f.seed)
  centres = rng.standard_normal((max(1, f.num_items // 50), f.dim), dtype=np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  x = centres[rng.integers(0, centres.shape[0], f.num_items)]
  x += 0.3 / np.sqrt(f.dim) * rng.standard_normal(x.shape, dtype=np.float32)
  return x, f"synthetic({f.num_items}x{f.dim})"


def _config(f, name: str):
  config = default.base_config()
  config.tokenizer = name
  config.seed = f.seed
  if f.codebook_size:
    config.sid.codebook_size = f.codebook_size
  if f.levels:
    config.sid.levels = f.levels
  c = config[name]
  c.epochs = f.epochs
  overrides = dict(eval_every=f.eval_every, batch_size=f.batch_size, latent_dim=f.latent_dim,
                   hidden=tuple(int(h) for h in f.hidden) if f.hidden else None)
  c.update({k: v for k, v in overrides.items() if v is not None})
  return config


def _train_only(config, vectors: np.ndarray) -> dict:
  """K-means init, AOT compile, then all epochs as one timed call of the trainer's program."""
  c = config[config.tokenizer]
  mesh = parallel.config_mesh(config)
  start = time.perf_counter()
  setup = programs.init_state(config, vectors, mesh, kmeans=c.kmeans_init)
  jax.block_until_ready(setup.state)
  init_s = time.perf_counter() - start
  args = (setup.state, setup.vectors, setup.shuffle_key, jnp.int32(0))
  start = time.perf_counter()
  compiled = programs.train_chunk.lower(*args, num_epochs=c.epochs, **setup.static).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  state, terms = jax.block_until_ready(compiled(*args))
  train_s = time.perf_counter() - start
  codes, recon = programs.encode(setup.graphdef, state["params"], vectors, mesh)
  return dict(kmeans_init_seconds=init_s, compile_seconds=compile_s, train_seconds=train_s,
              items_per_second=c.epochs * vectors.shape[0] / train_s,
              steps=c.epochs * -(-vectors.shape[0] // setup.static["batch"]),
              batch_size=setup.static["batch"],
              final_train_terms={k: float(v[-1]) for k, v in terms.items()},
              final_reconstruction_mse=recon,
              final_usage_level1=float(np.unique(codes[:, 0]).size / config.sid.codebook_size))


def _fit(config, vectors: np.ndarray) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    _, metrics = api.fit_tokenizer(config, vectors, workdir)
    return dict(fit_seconds=time.perf_counter() - start, metrics=metrics)


def main(argv):
  del argv
  f = flags.FLAGS
  vectors, source = _vectors(f)
  results = {}
  for name in f.tokenizers:
    config = _config(f, name)
    entry = dict(config=config[name].to_dict(), sid=config.sid.to_dict(),
                 train=_train_only(config, vectors))
    if f.fit:
      entry["fit"] = _fit(config, vectors)
    results[name] = entry
  out = dict(benchmark="tokenizer_train", vectors=source, num_items=int(vectors.shape[0]),
             dim=int(vectors.shape[1]), epochs=f.epochs, device=jax.devices()[0].device_kind,
             num_devices=jax.device_count(), platform=jax.devices()[0].platform,
             jax_version=jax.__version__, results=results)
  print(json.dumps(out, default=str))
  io.write_json(f.out, out)


if __name__ == "__main__":
  app.run(main)
