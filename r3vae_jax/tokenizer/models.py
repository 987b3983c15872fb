"""Flax NNX tokenizer models: parameters only; the math lives in `quantizers` and `quantize`.

* `RQVAE` (TIGER): MLP encoder -> L levels of nearest-code quantisation with the
  straight-through estimator -> MLP decoder. Loss = MSE(x, x_hat) + VQ/commitment terms.
* `R3VAE`: a learnable reference vector `r` in the latent space (`alpha = z.r/||r||^2`, only
  `e_0 = z - alpha r` is quantised, `alpha r` is added back before decoding), rating
  quantisation per level and the SC/PD regularisers. The default recipe is the RecBoard
  re-implementation's (tokenizer/README.md): identity encoder on L2-normalised vectors, top-1
  cosine code times its cosine, `1 - cos` reconstruction, SC = `1 - cos(e_0, prefix estimate)`
  per level, PD over the codewords. The first version (MLP encoder, softmax ratings, soft SC/PD
  of the item vectors under the rating weights) is the same class with other field values.

Both return a `TokenizerOutput` from `__call__(x)`; `init_latents(x)` gives the vectors whose
residual k-means initialises the codebooks (`z` for RQ-VAE, `e_0` for R3-VAE).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax import quantize
from r3vae_jax.tokenizer import quantizers


class TokenizerOutput(NamedTuple):
  """What a tokenizer's forward pass returns.

  x_hat: reconstruction `[B, D_in]`; codes: int32 `[B, L]`; loss: scalar training loss;
  terms: dict of scalar loss components (for logging).
  """
  x_hat: jax.Array
  codes: jax.Array
  loss: jax.Array
  terms: dict[str, jax.Array]


def host_rng(rngs: nnx.Rngs) -> np.random.Generator:
  """A numpy generator seeded from one `rngs.params()` key.

  Parameters are drawn on the host: no per-op device compilation at construction (seconds on a
  CPU), and the same initial values on every backend.
  """
  key = rngs.params()
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  return np.random.default_rng(np.asarray(key).ravel().tolist())


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> nnx.Param:
  return nnx.Param(jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32))


class Dense(nnx.Module):
  """`x @ kernel + bias`; kernel ~ N(0, 1/fan_in) (LeCun normal), bias 0."""

  def __init__(self, fan_in: int, fan_out: int, rng: np.random.Generator):
    self.kernel = _normal(rng, (fan_in, fan_out), fan_in ** -0.5)
    self.bias = nnx.Param(jnp.zeros((fan_out,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    return x @ self.kernel[...] + self.bias[...]


class MLP(nnx.Module):
  """Dense layers with ReLU between them (none after the last)."""

  def __init__(self, sizes: Sequence[int], rng: np.random.Generator):
    self.layers = nnx.List([Dense(a, b, rng) for a, b in zip(sizes[:-1], sizes[1:])])

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i < len(self.layers) - 1:
        x = jax.nn.relu(x)
    return x


RATINGS = ("cosine_top1", "soft", "hard", "straight_through")


def _codebooks(levels: int, size: int, dim: int, rng: np.random.Generator) -> nnx.Param:
  """`[L, K, D]` codebooks, N(0, 1/D); replaced by k-means when `kmeans_init` is on."""
  return _normal(rng, (levels, size, dim), dim ** -0.5)


class RQVAE(nnx.Module):
  """TIGER's residual-quantised VAE.

  Args:
    input_dim: D_in of the item vectors.
    hidden: encoder hidden sizes (the decoder mirrors them).
    latent_dim: D of the latent and the codes.
    levels: L codebooks.
    codebook_size: K codes per level.
    beta: commitment weight.
    balance_epsilon, balance_iters: training-time balanced assignment
      (`quantizers.residual_vq`; 0 = nearest code).
    estimator: "straight_through" | "rotation" (`quantizers.residual_vq`).
    center_inputs: keep the item vectors' mean (`input_mean`, set from the data by the trainer,
      never trained) and encode `x - mean`, decode to `decoder(z_q) + mean`. Sentence vectors
      share a large common direction; the Beauty MiniLM codes collapse in the first steps either
      way (collisions 0.026 -> 0.98 after 10 steps) and recover to 0.129 uncentred, 0.081
      centred by step 600 (0.96 vs 0.24 at step 150; docs/experiments.md).
    rngs: parameter RNG (one `params` key seeds the host-side initialisation).
  """

  def __init__(self, input_dim: int, hidden: Sequence[int], latent_dim: int, levels: int,
               codebook_size: int, beta: float, balance_epsilon: float = 0.0,
               balance_iters: int = 50, estimator: str = "straight_through",
               center_inputs: bool = False, *, rngs: nnx.Rngs):
    rng = host_rng(rngs)
    self.encoder = MLP([input_dim, *hidden, latent_dim], rng)
    self.decoder = MLP([latent_dim, *reversed(hidden), input_dim], rng)
    self.codebooks = _codebooks(levels, codebook_size, latent_dim, rng)
    self.beta = beta
    self.balance_epsilon, self.balance_iters = balance_epsilon, balance_iters
    self.estimator = estimator
    self.input_mean = nnx.Param(jnp.zeros((input_dim,), jnp.float32)) if center_inputs else None

  def _mean(self) -> jax.Array | float:
    return 0.0 if self.input_mean is None else jax.lax.stop_gradient(self.input_mean[...])

  def encode(self, x: jax.Array) -> jax.Array:
    """`[B, D_in] -> [B, D]` latents (of the centred vectors with `center_inputs`)."""
    return self.encoder(x - self._mean())

  def decode(self, z_q: jax.Array) -> jax.Array:
    """`[B, D] -> [B, D_in]` reconstructed item vectors."""
    return self.decoder(z_q) + self._mean()

  def init_latents(self, x: jax.Array) -> jax.Array:
    """`[B, D_in] -> [B, D]`: the latents to run residual k-means on."""
    return self.encode(x)

  def quantize_level(self, residual: jax.Array, book: jax.Array) -> jax.Array:
    """One level's output `[B, D]`: the nearest code (k-means init)."""
    return quantizers.select_codes(quantize.nearest_code(residual, book)[0], book)

  def __call__(self, x: jax.Array, balance: bool = True) -> TokenizerOutput:
    """`balance=False`: nearest codes even when `balance_epsilon > 0` (SID tables)."""
    z = self.encode(x)
    z_q, codes, vq_loss, _ = quantizers.residual_vq(
        z, self.codebooks[...], self.beta, self.balance_epsilon if balance else 0.0,
        self.balance_iters, self.estimator)
    x_hat = self.decode(z_q)
    recon = quantizers.mse(x, x_hat)
    return TokenizerOutput(x_hat, codes, recon + vq_loss, {"recon": recon, "vq": vq_loss})


R3VAE_CHOICES = dict(encoder=("identity", "mlp"), rating=RATINGS, recon_loss=("cosine", "mse"),
                     sc_form=("prefix_cosine", "soft_pairs"), pd_form=("codebook", "soft_centres"))


class R3VAE(nnx.Module):
  """R3-VAE: reference-vector anchor + rating quantisation + SC/PD regularisers.

  Args:
    input_dim, hidden, latent_dim, levels, codebook_size: as `RQVAE`; with encoder "identity"
      the latent is the input (`latent_dim` unused) and `hidden` sizes the decoder only.
    encoder: "identity" (RecBoard) | "mlp".
    normalize: L2-normalise the latent before the reference split (RecBoard).
    reference_vector: learn `r` and quantise only `z - alpha r` (False: `e_0 = z`).
    rating: "cosine_top1" | "soft" | "hard" (`quantize.rating_quantize`) | "straight_through"
      (nearest code + straight-through estimator + VQ loss with `beta`: the no-rating ablation).
    temperature: softmax temperature of the cosine ratings (soft/hard, and soft_pairs SC).
    beta: commitment weight of the straight-through ablation.
    recon_loss: "cosine" (`1 - cos(x, x_hat)`) | "mse".
    sc_form: "prefix_cosine" (`quantizers.prefix_cosine_loss`, added) | "soft_pairs"
      (`quantize.soft_semantic_cohesion` under the rating weights, subtracted).
    pd_form: "codebook" (PD over each level's codewords) | "soft_centres" (over the soft group
      centres of the item vectors).
    sc_weight, pd_weight: weights of the two terms; use_sc, use_pd: keep each (ablations).
    pd_t: the temperature t of preference discrimination.
    rngs: parameter RNG.
  """

  def __init__(self, input_dim: int, hidden: Sequence[int], latent_dim: int, levels: int,
               codebook_size: int, *, encoder: str, normalize: bool, reference_vector: bool,
               rating: str, temperature: float, beta: float, recon_loss: str, sc_form: str,
               pd_form: str, sc_weight: float, pd_weight: float, use_sc: bool, use_pd: bool,
               pd_t: float, rngs: nnx.Rngs):
    for field, value in dict(encoder=encoder, rating=rating, recon_loss=recon_loss,
                             sc_form=sc_form, pd_form=pd_form).items():
      if value not in R3VAE_CHOICES[field]:
        raise ValueError(f"r3vae.{field} must be one of {R3VAE_CHOICES[field]}, got {value!r}")
    if sc_form == "soft_pairs" and use_sc and rating == "straight_through":
      raise ValueError("r3vae.sc_form 'soft_pairs' needs rating weights; rating "
                       "'straight_through' has none (use sc_form 'prefix_cosine')")
    rng = host_rng(rngs)
    if encoder == "identity":
      latent_dim = input_dim
      self.encoder = None
    else:
      self.encoder = MLP([input_dim, *hidden, latent_dim], rng)
    self.decoder = MLP([latent_dim, *reversed(hidden), input_dim], rng)
    self.codebooks = _codebooks(levels, codebook_size, latent_dim, rng)
    self.reference = _normal(rng, (latent_dim,), latent_dim ** -0.5) if reference_vector else None
    self.normalize = normalize
    self.rating = rating
    self.temperature = temperature
    self.beta = beta
    self.recon_loss = recon_loss
    self.sc_form = sc_form
    self.pd_form = pd_form
    self.sc_weight = sc_weight
    self.pd_weight = pd_weight
    self.use_sc = use_sc
    self.use_pd = use_pd
    self.pd_t = pd_t

  def encode(self, x: jax.Array) -> jax.Array:
    """`[B, D_in] -> [B, D]`: the latent (normalised if `normalize`)."""
    z = x if self.encoder is None else self.encoder(x)
    return quantize.l2_normalize(z) if self.normalize else z

  def split(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`[B, D] -> (anchor part alpha r [B, D], e_0 [B, D])`."""
    if self.reference is None:
      return jnp.zeros_like(z), z
    r = self.reference[...]
    alpha, e0 = quantizers.reference_split(z, r)
    return alpha[:, None] * r[None, :], e0

  def init_latents(self, x: jax.Array) -> jax.Array:
    """`[B, D_in] -> [B, D]`: `e_0`, the part of the latent that is quantised."""
    return self.split(self.encode(x))[1]

  def quantize_level(self, residual: jax.Array, book: jax.Array) -> jax.Array:
    """One level's output `[B, D]` for `residual [B, D]` and `book [K, D]` (k-means init)."""
    if self.rating == "straight_through":
      return quantizers.select_codes(quantize.nearest_code(residual, book)[0], book)
    return quantize.rating_quantize(residual, book, self.temperature, self.rating)[0]

  def __call__(self, x: jax.Array) -> TokenizerOutput:
    anchor, e0 = self.split(self.encode(x))
    books = self.codebooks[...]
    levels = books.shape[0]
    terms = {}
    if self.rating == "straight_through":
      quantized, codes, terms["vq"], per_level = quantizers.residual_vq(
          e0, books, self.beta)
      weights = None
    else:
      per_level, codes, weights, _ = quantizers.rating_residual(
          e0, books, self.temperature, self.rating)
      quantized = jnp.sum(per_level, axis=1)
    x_hat = self.decoder(anchor + quantized)
    terms["recon"] = (quantizers.cosine_loss(x, x_hat) if self.recon_loss == "cosine"
                      else quantizers.mse(x, x_hat))
    loss = terms["recon"] + terms.get("vq", 0.0)
    if self.use_sc and self.sc_form == "prefix_cosine":
      terms["sc_loss"] = quantizers.prefix_cosine_loss(e0, anchor, per_level)
      loss += self.sc_weight * terms["sc_loss"]
    elif self.use_sc:
      terms["soft_sc"] = sum(quantize.soft_semantic_cohesion(x, weights[:, l])
                             for l in range(levels)) / levels
      loss -= self.sc_weight * terms["soft_sc"]
    if self.use_pd and self.pd_form == "codebook":
      terms["pd"] = sum(quantize.soft_preference_discrimination(books[l], None, self.pd_t)
                        for l in range(levels)) / levels
      loss += self.pd_weight * terms["pd"]
    elif self.use_pd:
      if weights is None:
        weights = jnp.stack([jax.nn.one_hot(codes[:, l], books.shape[1], dtype=x.dtype)
                             for l in range(levels)], axis=1)
      terms["soft_pd"] = sum(quantize.soft_preference_discrimination(
          *quantize.soft_group_centres(x, weights[:, l]), self.pd_t) for l in range(levels)) / levels
      loss += self.pd_weight * terms["soft_pd"]
    return TokenizerOutput(x_hat, codes, loss, terms)


def sid_pass(model: nnx.Module, x: jax.Array) -> TokenizerOutput:
  """The forward pass that assigns SIDs: per-item nearest codes, never a batch's balanced
  assignment (which depends on the other rows of the batch).  `[B, D_in]`."""
  return model(x, balance=False) if isinstance(model, RQVAE) else model(x)


def weight_decay_mask(params: Any) -> Any:
  """The `optax.adamw` mask: True for every leaf that weight decay applies to, False under an
  `input_mean` key (a data statistic, never trained). Any pytree holding tokenizer parameters."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not any(getattr(k, "key", None) == "input_mean" for k in path), params)
