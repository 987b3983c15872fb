"""Trainer of the gradient tokenizers (RQ-VAE, R3-VAE): one jitted, sharded scan per eval chunk.

Sections, top to bottom: model & k-means init, optimizer & sharded state, the jitted epoch
scan, evaluation (SID metrics), checkpoint/resume, the train loop.

* The item vectors live on the device (replicated); each epoch shuffles them with
  `fold_in(key, epoch)` and runs `ceil(N / B)` AdamW steps (the last batch is topped up with the
  first items of the permutation). Batches are split over the `data` mesh axis, parameters are
  replicated. `eval_every` epochs are one jitted `lax.scan`: no host sync per step.
* After every chunk the whole catalogue is coded and `quantize.sid_report` computed.
* **Best epoch rule** (`sid.select`): among evaluated epochs, first any epoch whose SID table
  can be built (max group size <= `sid.max_collisions`), then "min_collision": the lowest
  collision rate (share of items whose full L-code tuple is not unique), ties broken by the
  lower reconstruction error; or "last": the latest such epoch (TIGER uses its final RQ-VAE).
  Its parameters are kept in the train state (`best_params`), so the result never needs an
  older checkpoint.
* Checkpoints (orbax, `workdir/tokenizer/<name>_ckpt`) are written after every chunk; a rerun
  resumes from the latest one and ends in the same state as an uninterrupted run (all
  randomness is a function of the seed and the epoch).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from r3vae_jax import checkpoint
from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax import quantize
from r3vae_jax.tokenizer import models

GRADIENT_TOKENIZERS = ("rqvae", "r3vae")
_EVAL_ROWS = 16384          # rows coded per jitted call during evaluation


@dataclasses.dataclass
class TrainResult:
  """The best epoch's model, codes int32[N, L] and metrics; every evaluation in `history`."""
  model: nnx.Module
  codes: np.ndarray
  metrics: dict[str, Any]
  best_epoch: int
  history: list[dict[str, Any]]


# ---- model & k-means init ----------------------------------------------------------------

def build_model(config: ml_collections.ConfigDict, input_dim: int, seed: int) -> nnx.Module:
  """The `config.tokenizer` model ("rqvae" | "r3vae") with fresh parameters."""
  name, sid = config.tokenizer, config.sid
  if name not in GRADIENT_TOKENIZERS:
    raise ValueError(f"tokenizer/train.py: config.tokenizer must be one of "
                     f"{GRADIENT_TOKENIZERS}, got {name!r}")
  c = config[name]
  rngs = nnx.Rngs(params=seed)
  if name == "rqvae":
    return models.RQVAE(input_dim, tuple(c.hidden), c.latent_dim, sid.levels, sid.codebook_size,
                        c.beta, c.balance_epsilon, c.balance_iters, c.estimator,
                        c.center_inputs, rngs=rngs)
  return models.R3VAE(input_dim, tuple(c.hidden), c.latent_dim, sid.levels, sid.codebook_size,
                      encoder=c.encoder, normalize=c.normalize,
                      reference_vector=c.reference_vector, rating=c.rating,
                      temperature=c.rating_temperature, beta=c.beta, recon_loss=c.recon_loss,
                      sc_form=c.sc_form, pd_form=c.pd_form, sc_weight=c.sc_weight,
                      pd_weight=c.pd_weight, use_sc=c.use_sc, use_pd=c.use_pd, pd_t=c.pd_t,
                      rngs=rngs)


@functools.partial(jax.jit, static_argnames="graphdef")
def _first_pass(params: dict[str, Any], vectors: jax.Array, *, graphdef: Any
                ) -> tuple[jax.Array | None, jax.Array]:
  """(reference set to the mean latent, or None without one; the latents to cluster `[N, D]`)."""
  model = nnx.merge(graphdef, params)
  if getattr(model, "reference", None) is None:
    return None, model.init_latents(vectors)
  model.reference[...] = jnp.mean(model.encode(vectors), axis=0)
  return model.reference[...], model.init_latents(vectors)


@functools.partial(jax.jit, static_argnames=("graphdef", "k", "iters"))
def _fit_level(params: dict[str, Any], residual: jax.Array, key: jax.Array, *, graphdef: Any,
               k: int, iters: int) -> tuple[jax.Array, jax.Array]:
  """k-means on one level's residuals `[N, D]`: (codebook `[k, D]`, the next residuals)."""
  book, _ = quantize.kmeans(key, residual, k, iters)
  return book, residual - nnx.merge(graphdef, params).quantize_level(residual, book)


def kmeans_init(model: nnx.Module, vectors: jax.Array, key: jax.Array, iters: int,
                max_items: int) -> None:
  """Sets the codebooks (in place) by residual k-means on the model's initial latents.

  For R3-VAE the reference vector is first set to the mean latent (the common direction that
  the anchor removes), then the codebooks are fitted on `e_0`. Level l + 1 clusters the
  residuals left by the model's own quantiser at level l (`model.quantize_level`: the rating
  for R3-VAE, the nearest code for RQ-VAE). At most `max_items` items (a seeded random subset)
  are used.

  Args:
    model: `RQVAE` or `R3VAE`.
    vectors: `[N, D_in]`.
    key: PRNG key.
    iters: Lloyd iterations per level.
    max_items: cap on the items used.
  """
  sample_key, fit_key = jax.random.split(key)
  if vectors.shape[0] > max_items:
    vectors = vectors[jax.random.choice(sample_key, vectors.shape[0], (max_items,), replace=False)]
  levels, k, _ = model.codebooks.shape
  if vectors.shape[0] < k:
    raise ValueError(f"tokenizer: k-means init needs at least codebook_size={k} items, "
                     f"got {vectors.shape[0]}")
  graphdef, params = nnx.split(model)
  reference, latents = _first_pass(nnx.to_pure_dict(params), vectors, graphdef=graphdef)
  if reference is not None:
    model.reference[...] = reference
  params = nnx.to_pure_dict(nnx.state(model))
  books, residual = [], latents
  for level_key in jax.random.split(fit_key, levels):
    book, residual = _fit_level(params, residual, level_key, graphdef=graphdef, k=k, iters=iters)
    books.append(book)
  model.codebooks[...] = jnp.stack(books)


# ---- optimizer & sharded state -----------------------------------------------------------

def _batch_size(requested: int, num_items: int, mesh: jax.sharding.Mesh) -> int:
  batch = min(requested, parallel.pad_to_multiple(num_items, mesh))
  parallel.check_batch_size(batch, mesh)
  return batch


def optimizer(lr: float, weight_decay: float, warmup_steps: int = 0
              ) -> optax.GradientTransformation:
  """The tokenizers' AdamW (no weight decay on `input_mean`, `models.weight_decay_mask`).

  `warmup_steps > 0`: the rate rises linearly from 0 to `lr` over that many steps, then stays
  (the state then counts steps, so a checkpoint restores only with the same choice).
  """
  rate = optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps > 0 else lr
  return optax.adamw(rate, weight_decay=weight_decay, mask=models.weight_decay_mask)


@dataclasses.dataclass
class Setup:
  """A fresh run on a mesh: model structure, replicated state and vectors, static step args."""
  graphdef: Any
  state: dict[str, Any]         # {"params", "opt"}, replicated
  vectors: jax.Array            # [N, D_in], replicated
  shuffle_key: jax.Array
  static: dict[str, Any]        # the static arguments of `train_chunk` except num_epochs


def init_state(config: ml_collections.ConfigDict, vectors: np.ndarray, mesh: jax.sharding.Mesh,
               kmeans: bool) -> Setup:
  """Builds `config.tokenizer`'s model (k-means init on the first pass if `kmeans`) and AdamW.

  Keys: `PRNGKey(config.seed)` splits into the k-means key and the shuffle key; parameters
  are initialised from `config.seed`.
  """
  c = config[config.tokenizer]
  rep = parallel.replicated(mesh)
  init_key, shuffle_key = jax.random.split(jax.random.PRNGKey(config.seed))
  model = build_model(config, vectors.shape[1], config.seed)
  x_dev = jax.device_put(vectors, rep)
  if getattr(model, "input_mean", None) is not None:  # RQ-VAE with center_inputs
    model.input_mean[...] = jnp.mean(x_dev, axis=0)
  if kmeans:
    kmeans_init(model, x_dev, init_key, c.kmeans_iters, c.kmeans_max_items)
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  state = jax.device_put(
      {"params": params, "opt": optimizer(c.lr, c.weight_decay, c.warmup_steps).init(params)},
      rep)
  static = dict(graphdef=graphdef, lr=c.lr, weight_decay=c.weight_decay,
                warmup_steps=c.warmup_steps, mesh=mesh,
                batch=_batch_size(c.batch_size, vectors.shape[0], mesh))
  return Setup(graphdef, state, x_dev, shuffle_key, static)


# ---- the jitted epoch scan ---------------------------------------------------------------

@functools.partial(jax.jit, donate_argnums=0, static_argnames=(
    "graphdef", "lr", "weight_decay", "warmup_steps", "mesh", "batch", "num_epochs"))
def train_chunk(state: dict[str, Any], vectors: jax.Array, key: jax.Array,
                first_epoch: jax.Array, *, graphdef: Any, lr: float, weight_decay: float,
                warmup_steps: int, mesh: jax.sharding.Mesh, batch: int, num_epochs: int
                ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """`num_epochs` epochs of AdamW steps as one `lax.scan` (epochs) of `lax.scan` (batches).

  Args:
    state: {"params": pure dict of the model, "opt": AdamW state} (donated).
    vectors: `[N, D_in]` all items (replicated).
    key: shuffle key; epoch e uses the permutation drawn from `fold_in(key, e)`.
    first_epoch: int32 scalar, the index of the first epoch of the chunk.
    graphdef, lr, weight_decay, warmup_steps, mesh, batch, num_epochs: static (compiled once
      per value).

  Returns:
    (state, terms): each loss term's mean per epoch, `[num_epochs]`.
  """
  tx = optimizer(lr, weight_decay, warmup_steps)
  num_items = vectors.shape[0]
  steps = math.ceil(num_items / batch)
  data_sharding = NamedSharding(mesh, P(parallel.DATA))

  def loss_fn(params, x):
    out = nnx.merge(graphdef, params)(x)
    return out.loss, {"loss": out.loss, **out.terms}

  def train_step(state, idx):
    x = jax.lax.with_sharding_constraint(vectors[idx], data_sharding)
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], x)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, terms

  def epoch(state, e):
    perm = jax.random.permutation(jax.random.fold_in(key, e), num_items)
    idx = jnp.concatenate([perm, perm[:steps * batch - num_items]]).reshape(steps, batch)
    state, terms = jax.lax.scan(train_step, state, idx)
    return state, jax.tree.map(jnp.mean, terms)

  return jax.lax.scan(epoch, state, first_epoch + jnp.arange(num_epochs))


# ---- evaluation --------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames="graphdef")
def _encode_rows(params: dict[str, Any], x: jax.Array, *, graphdef: Any
                 ) -> tuple[jax.Array, jax.Array]:
  """`[B, D_in] -> (codes int32[B, L], squared reconstruction error per row [B])`."""
  out = models.sid_pass(nnx.merge(graphdef, params), x)
  return out.codes, jnp.sum(jnp.square(x - out.x_hat), axis=-1)


def encode(graphdef: Any, params: dict[str, Any], vectors: np.ndarray,
           mesh: jax.sharding.Mesh) -> tuple[np.ndarray, float]:
  """Codes every item (rows sharded over `data`, `_EVAL_ROWS` at a time).

  Returns:
    (codes int32 `[N, L]`, reconstruction MSE averaged over items and dims).
  """
  data_sharding = NamedSharding(mesh, P(parallel.DATA))
  n = vectors.shape[0]
  step = parallel.pad_to_multiple(min(n, _EVAL_ROWS), mesh)
  codes, sq_err = [], []
  for start in range(0, n, step):
    x = vectors[start:start + step]
    pad = step - x.shape[0]
    c, e = _encode_rows(params, jax.device_put(np.pad(x, ((0, pad), (0, 0))), data_sharding),
                        graphdef=graphdef)
    codes.append(np.asarray(c)[:step - pad])
    sq_err.append(np.asarray(e)[:step - pad])
  return np.concatenate(codes).astype(np.int32), float(np.concatenate(sq_err).sum() / vectors.size)


def evaluate(vectors: np.ndarray, codes: np.ndarray, recon_mse: float, codebook_size: int
             ) -> dict[str, Any]:
  """SID metrics of a code table plus the reconstruction MSE (mean over items and dims)."""
  report = quantize.sid_report(vectors, codes, codebook_size)
  return {**report, "reconstruction_mse": recon_mse}


def selection_key(metrics: dict[str, Any], max_collisions: int, rule: str = "min_collision"
                  ) -> tuple[float, ...]:
  """The best-epoch rule `rule` (`sid.select`; lower is better): see the module docstring."""
  unbuildable = float(metrics["max_group_size"] > max_collisions)
  if rule == "last":
    return (unbuildable, -float(metrics["epoch"]))
  return (unbuildable, metrics["collision_rate"], metrics["reconstruction_mse"])


def pick_best(history: list[dict[str, Any]], sid: ml_collections.ConfigDict) -> dict[str, Any]:
  """The best of the evaluated epochs' metrics under `sid.select` (the earliest on a tie)."""
  return min(history, key=lambda m: selection_key(m, sid.max_collisions, sid.select))


# ---- checkpoint / resume -----------------------------------------------------------------

_RESUMABLE_FIELDS = ("epochs", "eval_every", "checkpoint_keep")  # may change between runs
# Fields added after checkpoints were written: at these values they stay out of the fingerprint,
# so the earlier checkpoints (trained the same way) still resume.
_LATER_FIELDS = {"warmup_steps": 0}


def _run_fingerprint(config: ml_collections.ConfigDict, vectors: np.ndarray) -> str:
  """What a checkpoint must match to be resumed (raising `epochs` extends a finished run)."""
  name = config.tokenizer
  section = {k: v for k, v in config[name].to_dict().items()
             if k not in _RESUMABLE_FIELDS and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
  return io.fingerprint_json({"tokenizer": name, "section": section,
                              "sid": config.sid.to_dict(), "seed": config.seed,
                              "vectors": io.fingerprint_array(vectors)})


# ---- the train loop ----------------------------------------------------------------------

def train_tokenizer(config: ml_collections.ConfigDict, vectors: np.ndarray, workdir: str
                    ) -> TrainResult:
  """Trains `config.tokenizer` ("rqvae" | "r3vae") on item vectors, resuming if possible.

  Args:
    config: the full config (fields tokenizer, seed, sid, mesh and the tokenizer's section:
      hidden, latent_dim, lr, weight_decay, epochs, batch_size, eval_every, kmeans_init,
      kmeans_iters, kmeans_max_items, checkpoint_keep, ...).
    vectors: float32 `[N, D_in]` item vectors.
    workdir: checkpoints go to `workdir/tokenizer/<name>_ckpt`.

  Returns:
    `TrainResult` of the best evaluated epoch (rule in the module docstring).
  """
  name = config.tokenizer
  c = config[name]
  vectors = np.asarray(vectors, np.float32)
  if vectors.ndim != 2 or vectors.shape[0] < 2:
    raise ValueError(f"tokenizer: vectors must be [N >= 2, D], got shape {vectors.shape}")
  if c.epochs < 1 or c.eval_every < 1:
    raise ValueError(f"config.{name}: epochs and eval_every must be >= 1, "
                     f"got {c.epochs}, {c.eval_every}")
  n = vectors.shape[0]
  mesh = parallel.config_mesh(config)
  ckpt_dir = os.path.join(workdir, "tokenizer", f"{name}_ckpt")
  manager = checkpoint.make_manager(ckpt_dir, keep=c.checkpoint_keep)
  setup = init_state(config, vectors, mesh, kmeans=c.kmeans_init and not manager.all_steps())
  graphdef, x_dev, static = setup.graphdef, setup.vectors, setup.static
  fingerprint = _run_fingerprint(config, vectors)
  tree = {"state": setup.state, "best_params": _copy(setup.state["params"])}
  restored = checkpoint.restore(manager, checkpoint.abstract_like(tree))
  if restored is not None:
    step, tree, meta = restored
    if meta["fingerprint"] != fingerprint:
      raise io.ArtifactError(
          f"{ckpt_dir}: checkpoint of another run (config/vectors fingerprint "
          f"{meta['fingerprint']} != {fingerprint}); use a fresh workdir or delete it")
    epoch, history = step, meta["history"]
    logging.info("%s: resumed from epoch %d of %d", name, epoch, c.epochs)
  else:
    epoch, history = 0, []

  t0, start_epoch = time.time(), epoch
  while epoch < c.epochs:
    num = min(c.eval_every, c.epochs - epoch)
    state, terms = train_chunk(tree["state"], x_dev, setup.shuffle_key, jnp.int32(epoch),
                               num_epochs=num, **static)
    epoch += num
    codes, recon = encode(graphdef, state["params"], vectors, mesh)
    metrics = {"epoch": epoch, **evaluate(vectors, codes, recon, config.sid.codebook_size),
               **{f"train_{k}": float(v[-1]) for k, v in terms.items()}}
    _check_finite(metrics, name, epoch)
    is_best = pick_best(history + [metrics], config.sid) is metrics
    tree = {"state": state,
            "best_params": _copy(state["params"]) if is_best else tree["best_params"]}
    history.append(metrics)
    checkpoint.save(manager, epoch, tree, {"fingerprint": fingerprint, "history": history})
    _log_progress(name, epoch, c.epochs, start_epoch, t0, n, metrics)
  manager.wait_until_finished()

  best = pick_best(history, config.sid)
  codes, _ = encode(graphdef, tree["best_params"], vectors, mesh)
  logging.info("%s: best epoch %d (collision rate %.4f, recon %.4g)", name, best["epoch"],
               best["collision_rate"], best["reconstruction_mse"])
  return TrainResult(nnx.merge(graphdef, tree["best_params"]), codes, best, int(best["epoch"]),
                     history)


def _copy(tree: Any) -> Any:
  """A device copy (the train state is donated to the next chunk; the best must survive)."""
  return jax.tree.map(jnp.copy, tree)


def _check_finite(metrics: dict[str, Any], name: str, epoch: int) -> None:
  """Training losses and reconstruction must be finite (SC/PD are NaN when undefined)."""
  bad = [k for k, v in metrics.items() if (k.startswith("train_") or k == "reconstruction_mse")
         and not math.isfinite(v)]
  if bad:
    raise FloatingPointError(f"{name}: non-finite {bad} at epoch {epoch}")


def _log_progress(name: str, epoch: int, epochs: int, start_epoch: int, t0: float, n: int,
                  metrics: dict[str, Any]) -> None:
  elapsed = time.time() - t0
  done = epoch - start_epoch
  rate = done * n / max(elapsed, 1e-9)
  eta = elapsed / done * (epochs - epoch)
  logging.info("%s epoch %d/%d: loss %.4g recon %.4g collision %.4f usage@1 %.3f | "
               "%.0f items/s, ETA %.0fs", name, epoch, epochs, metrics["train_loss"],
               metrics["reconstruction_mse"], metrics["collision_rate"],
               metrics["usage_per_level"][0], rate, eta)
