"""DIGER's differentiable code assignment: residual quantisation with Gumbel straight-through.

At level l, with residual `e_l` (e_0 = z):

    logits = -||e_l - c_k||^2                  [B, K]
    y_soft = softmax((logits + s * g) / tau)   g ~ Gumbel(0, 1), s = per-item noise scale
    y      = one_hot(argmax y_soft)            forward; backward d y_soft (straight through)
    q_l    = y @ C_l                           forward: the chosen codeword exactly
    e_l+1  = e_l - q_l

so every codeword (through `y @ C_l` and the logits) and the encoder (through the logits) get
the gradient of whatever consumes `y` (DIGER: the recommender's input embeddings and targets).
An item with s = 0 is assigned greedily; its backward pass is that of softmax(logits / tau).

With `normalize`, the logits of a level are first mapped to [-1, 1] by the batch's largest and
smallest value (`range_normalize`), as the released DIGER code does (its Sinkhorn path centres the
distances so). The Gumbel scale s is then relative to the spread of the distances: an RQ-VAE
latent is small (Beauty, 32-d: the median gap between the best and second-best logit is 3e-3 at
level 1 and 1e-4 at level 3), so raw logits plus Gumbel noise of any useful scale make a noisy
item's code a near-uniform draw over the codebook; normalized, the scale matters (at 1, as in the
released code, most noisy items still move; at 0.1 far fewer). The map is monotone per level:
greedy codes are unchanged.

The tokenizer's own losses (reconstruction, VQ/commitment) are computed on the chosen codes
exactly as in RQ-VAE pretraining (`tokenizer_losses`): residuals on stop-gradient codes and the
vector straight-through estimator into the decoder, so only the recommendation loss travels
through the indicators.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from r3vae_jax import quantize

_HIGHEST = jax.lax.Precision.HIGHEST


class Assignment(NamedTuple):
  """Result of `gumbel_residual` for a batch of B latents, L levels of K codes, dim D.

  Attributes:
    indicators: float[B, L, K], exact one-hot rows forward, Gumbel-softmax gradient backward.
    codes: int32[B, L], the chosen codes (sampled where the noise scale is > 0).
    greedy: int32[B, L], the noiseless argmax at each level (on the chosen residual path).
    quantized: float[B, L, D], `indicators @ C_l` (forward: the chosen codewords).
  """
  indicators: jax.Array
  codes: jax.Array
  greedy: jax.Array
  quantized: jax.Array


def range_normalize(logits: jax.Array) -> jax.Array:
  """Logits mapped affinely to [-1, 1] by their overall max and min (constants: no gradient).

  Args:
    logits: float[B, K].

  Returns:
    float[B, K], `(logits - mid) / half_range` with mid and half_range of the whole array.
  """
  top, bottom = jax.lax.stop_gradient(logits.max()), jax.lax.stop_gradient(logits.min())
  mid = (top + bottom) / 2
  return (logits - mid) / (top - mid + 1e-5)


def gumbel_residual(z: jax.Array, codebooks: jax.Array, key: jax.Array, tau: float | jax.Array,
                    noise_scale: jax.Array, detach: bool = False,
                    normalize: bool = False) -> Assignment:
  """Residual Gumbel straight-through assignment (module docstring).

  Args:
    z: float[B, D] encoder latents.
    codebooks: float[L, K, D].
    key: PRNG key; level l draws its noise from `fold_in(key, l)`.
    tau: softmax temperature > 0.
    noise_scale: float[B, L] per-item, per-level scale of the Gumbel noise (0 = greedy).
    detach: cut the gradient of the indicators (the released DIGER code's detached SID table:
      an ablation, and the control of the gradient-path test).
    normalize: `range_normalize` each level's logits before the noise (module docstring).

  Returns:
    `Assignment`.
  """
  levels = codebooks.shape[0]
  if noise_scale.shape != (z.shape[0], levels):
    raise ValueError(f"gumbel_residual: noise_scale must be [batch, levels] = "
                     f"{(z.shape[0], levels)}, got {noise_scale.shape}")
  residual = z
  indicators, codes, greedy, quantized = [], [], [], []
  for level in range(levels):
    book = codebooks[level]
    logits = quantize.pairwise_scores(residual, book, "l2")
    if normalize:
      logits = range_normalize(logits)
    y = quantize.gumbel_softmax(logits, jax.random.fold_in(key, level), tau,
                                noise_scale[:, level:level + 1], hard=True)
    if detach:
      y = jax.lax.stop_gradient(y)
    q = jnp.matmul(y, book, precision=_HIGHEST)
    indicators.append(y)
    codes.append(jnp.argmax(y, axis=-1).astype(jnp.int32))
    greedy.append(jnp.argmax(logits, axis=-1).astype(jnp.int32))
    quantized.append(q)
    residual = residual - q
  return Assignment(jnp.stack(indicators, 1), jnp.stack(codes, 1), jnp.stack(greedy, 1),
                    jnp.stack(quantized, 1))


def tokenizer_losses(z: jax.Array, codebooks: jax.Array, codes: jax.Array, beta: float,
                     weights: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RQ-VAE's VQ/commitment loss for given codes, and the decoder input.

  Residuals run on stop-gradient codewords (as in RQ-VAE pretraining):
  `e_l = z - sum_{j<l} sg(c_{k_j})`; loss
  `sum_l ||sg(e_l) - c_{k_l}||^2 + beta ||e_l - sg(c_{k_l})||^2` (weighted means over items, dims).

  Args:
    z: float[B, D] latents.
    codebooks: float[L, K, D].
    codes: int32[B, L] the chosen codes.
    beta: commitment weight.
    weights: float[B] item weights (0 = padding), not all zero.

  Returns:
    (vq_loss scalar, decoder input float[B, D] = `straight_through(z, sum_l c_{k_l})`).
  """
  total_weight = jnp.maximum(weights.sum(), 1e-9) * z.shape[-1]

  def wmse(a, b):
    return jnp.sum(weights[:, None] * jnp.square(a - b)) / total_weight

  residual, total = z, jnp.zeros_like(z)
  vq = jnp.zeros((), z.dtype)
  for level in range(codebooks.shape[0]):
    q = codebooks[level][codes[:, level]]
    vq += wmse(jax.lax.stop_gradient(residual), q) + beta * wmse(residual,
                                                                  jax.lax.stop_gradient(q))
    total += jax.lax.stop_gradient(q)
    residual = residual - jax.lax.stop_gradient(q)
  return vq, quantize.straight_through(z, total)

