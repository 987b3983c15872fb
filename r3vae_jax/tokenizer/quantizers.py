"""Pure residual-quantisation passes of the two VAE tokenizers (arrays in, arrays out).

* `residual_vq`: TIGER's RQ-VAE. Nearest (or batch-balanced) code per level on the residual;
  straight-through: the residual chain runs on stop-gradient codes and the estimator carries the
  decoder's gradient to the latent once (`z_q = st(z, sum_l q_l)`); rotation: each level's code
  through the rotation trick, the gradient down the residual chain. VQ loss per level:
  `||sg(e_l) - q_l||^2 + beta ||e_l - sg(q_l)||^2` (each a mean over batch and dims, as `F.mse_loss`).
* `reference_split`: R3-VAE's anchor. `alpha = z.r / ||r||^2`, `e_0 = z - alpha r`.
* `rating_residual`: R3-VAE's rating quantisation per level, fully differentiable (no
  straight-through): `q_l = rating_quantize(e_{l-1}, C_l)`, `e_l = e_{l-1} - q_l`.
* `cosine_loss`, `prefix_cosine_loss`: `1 - cos` losses (RecBoard's reconstruction and its
  semantic-cohesion term, the cosine between `e_0` and every prefix's estimate).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r3vae_jax import quantize


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean squared error over all elements. `[B, D], [B, D] -> []`."""
  return jnp.mean(jnp.square(a - b))


def select_codes(codes: jax.Array, book: jax.Array) -> jax.Array:
  """`book[codes]` as a one-hot matmul.  `int32[B], [K, D] -> [B, D]`.

  Same values as the gather (HIGHEST precision: exact), but the codebook gradient is a matmul
  instead of a scatter-add, which GPUs serialise when many rows pick the same code.
  """
  onehot = jax.nn.one_hot(codes, book.shape[0], dtype=book.dtype)
  return jnp.matmul(onehot, book, precision=jax.lax.Precision.HIGHEST)


ESTIMATORS = ("straight_through", "rotation")


def residual_vq(z: jax.Array, codebooks: jax.Array, beta: float,
                balance_epsilon: float = 0.0, balance_iters: int = 50,
                estimator: str = "straight_through"
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Residual nearest-code quantisation through a gradient estimator.

  Args:
    z: latents `[B, D]`.
    codebooks: `[L, K, D]`.
    beta: commitment weight.
    balance_epsilon: 0 = nearest code; > 0 = the batch's balanced assignment at every level
      (`quantize.balanced_codes` at this entropy weight, `balance_iters` Sinkhorn iterations).
    estimator: "straight_through": the residual chain runs on stop-gradient codes and `z_q` is
      `straight_through(z, sum_l q_l)` (identity to `z` backward); "rotation": every level's
      code passes through `quantize.rotation_trick(e_l, q_l)` and the next residual is
      `e_l - that` (the gradient runs down the chain; RecBoard's TIGER `rqvae` config).

  Returns:
    (z_q `[B, D]` = sum of the codes forward; codes int32 `[B, L]`; vq_loss scalar = sum over
    levels of codebook + beta * commitment terms; the chosen codes `[B, L, D]`,
    differentiable w.r.t. the codebooks only).
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"tokenizer/quantizers.py: estimator must be one of {ESTIMATORS}, "
                     f"got {estimator!r}")
  residual = z
  total = jnp.zeros_like(z)
  codes, chosen, vq_loss = [], [], jnp.zeros((), z.dtype)
  for level in range(codebooks.shape[0]):
    book = codebooks[level]
    idx, scores = quantize.nearest_code(jax.lax.stop_gradient(residual),
                                        jax.lax.stop_gradient(book))
    if balance_epsilon > 0:
      idx = quantize.balanced_codes(scores, balance_epsilon, balance_iters)
    q = select_codes(idx, book)
    vq_loss += mse(jax.lax.stop_gradient(residual), q)
    vq_loss += beta * mse(residual, jax.lax.stop_gradient(q))
    passed = (quantize.rotation_trick(residual, jax.lax.stop_gradient(q))
              if estimator == "rotation" else jax.lax.stop_gradient(q))
    total += passed
    residual = residual - passed
    codes.append(idx)
    chosen.append(q)
  z_q = total if estimator == "rotation" else quantize.straight_through(z, total)
  return z_q, jnp.stack(codes, axis=1), vq_loss, jnp.stack(chosen, axis=1)


def reference_split(z: jax.Array, reference: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Splits latents into their component along a reference vector and the rest.

  Args:
    z: `[B, D]`.
    reference: `[D]`.

  Returns:
    (alpha `[B]` = z.r / ||r||^2, e_0 `[B, D]` = z - alpha r).
  """
  alpha = (z @ reference) / (jnp.sum(jnp.square(reference)) + 1e-12)
  return alpha, z - alpha[:, None] * reference[None, :]


def rating_residual(e0: jax.Array, codebooks: jax.Array, temperature: float, mode: str
                    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Residual rating quantisation over L levels (differentiable).

  Args:
    e0: residual to quantise `[B, D]`.
    codebooks: `[L, K, D]`.
    temperature: softmax temperature of the cosine ratings.
    mode: "soft" (rating-weighted sum of all codes) or "hard" (top-1 code times its rating).

  Returns:
    (per-level outputs `q_l` `[B, L, D]` (their sum is the quantised vector); codes int32
    `[B, L]` = argmax rating per level; weights `[B, L, K]` rating weights; final residual
    `[B, D]`).
  """
  residual = e0
  levels, codes, weights = [], [], []
  for level in range(codebooks.shape[0]):
    q, idx, w = quantize.rating_quantize(residual, codebooks[level], temperature=temperature,
                                         mode=mode)
    residual = residual - q
    levels.append(q)
    codes.append(idx)
    weights.append(w)
  return (jnp.stack(levels, axis=1), jnp.stack(codes, axis=1), jnp.stack(weights, axis=1),
          residual)


def cosine_loss(a: jax.Array, b: jax.Array) -> jax.Array:
  """`1 - mean_b cos(a_b, b_b)`.  `[B, D], [B, D] -> []`."""
  return 1.0 - jnp.mean(jnp.sum(quantize.l2_normalize(a) * quantize.l2_normalize(b), axis=-1))


def prefix_cosine_loss(target: jax.Array, start: jax.Array, per_level: jax.Array) -> jax.Array:
  """RecBoard's semantic-cohesion loss: mean over levels l of `cosine_loss(target, start +
  sum_{m <= l} q_m)`.  `[B, D], [B, D], [B, L, D] -> []`."""
  prefixes = start[:, None, :] + jnp.cumsum(per_level, axis=1)
  return jnp.mean(jax.vmap(cosine_loss, in_axes=(None, 1))(target, prefixes))
