"""The gradient tokenizers' programs (RQ-VAE, R3-VAE): model, k-means init, the jitted epoch
scan, coding every item.

  build_model(config, input_dim, seed) -> nnx.Module
  init_state(config, vectors, mesh, kmeans) -> Setup          (replicated state, static args)
  train_chunk(state, vectors, key, first_epoch, **static) -> (state, per-epoch loss terms)
  encode(graphdef, params, vectors, mesh) -> (codes int32[N, L], reconstruction MSE)

* The item vectors live on the device (replicated); each epoch shuffles them with
  `fold_in(key, epoch)` and runs `ceil(N / B)` AdamW steps (the last batch is topped up with the
  first items of the permutation). Batches are split over the `data` mesh axis, parameters are
  replicated. A chunk of epochs is one jitted `lax.scan`: no host sync per step.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from r3vae_jax import parallel
from r3vae_jax import quantize
from r3vae_jax.tokenizer import models

GRADIENT_TOKENIZERS = ("rqvae", "r3vae")
_EVAL_ROWS = 16384          # rows coded per jitted call during evaluation


# ---- model & k-means init ----------------------------------------------------------------

def build_model(config: ml_collections.ConfigDict, input_dim: int, seed: int) -> nnx.Module:
  """The `config.tokenizer` model ("rqvae" | "r3vae") with fresh parameters."""
  name, sid = config.tokenizer, config.sid
  if name not in GRADIENT_TOKENIZERS:
    raise ValueError(f"tokenizer: config.tokenizer must be one of "
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
