"""Gradient estimators for discrete choices, written as `jax.custom_vjp`.

* `straight_through(x, q)`: forward the quantised value `q`, backward the identity to `x`
  (VQ-VAE / TIGER); the codebook path (gradient to `q`) is off unless asked for.
* `rotation_trick(e, q)`: forward `q`, backward through the rotation-and-scale that carries `e`
  onto `q` (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick"), held
  constant: the gradient reaching `e` keeps its angle to `e` what it was to `q`.
* `gumbel_softmax(logits, key, tau, noise_scale, hard)`: straight-through Gumbel-softmax
  (DIGER). Forward the one-hot of the noisy argmax (or the soft sample), backward the exact
  gradient of the soft sample `softmax((logits + s * g) / tau)` with respect to `logits`, `tau`
  and the (learnable) noise scale `s`, with the same Gumbel noise `g` as the forward pass.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def straight_through(x: jax.Array, q: jax.Array, codebook_grad: bool = False) -> jax.Array:
  """Straight-through estimator.

  Args:
    x: continuous input, any shape `[..., D]`.
    q: its quantised value, same shape as `x`.
    codebook_grad: when True, the cotangent also flows (unchanged) to `q`, so the codebook
      entries that make up `q` receive the downstream gradient; when False `q` gets zero.

  Returns:
    `q` (same shape and dtype). Backward: d/dx = identity; d/dq = identity or zero.
  """
  del x, codebook_grad
  return q


def _straight_through_fwd(x, q, codebook_grad):
  del x, codebook_grad
  return q, None


def _straight_through_bwd(codebook_grad, _, g):
  return g, (g if codebook_grad else jnp.zeros_like(g))


straight_through.defvjp(_straight_through_fwd, _straight_through_bwd)


@jax.custom_vjp
def rotation_trick(e: jax.Array, q: jax.Array) -> jax.Array:
  """Rotation-trick estimator.

  With `u = e / |e|`, `v = q / |q|`, `r = (u + v) / |u + v|`, the rotation
  `R = I - 2 r r^T + 2 v u^T` takes `u` to `v`, and `lambda = |q| / |e|`, so `lambda R e = q`.
  Forward: `q`. Backward (R and lambda constant): `d/de = lambda R^T g
  = lambda (g - 2 r (r.g) + 2 u (v.g))`; `q` gets zero (its codebook learns from the VQ loss).

  Args:
    e: continuous input `[..., D]` (a residual).
    q: its quantised value, same shape.

  Returns:
    `q`.
  """
  del e
  return q


def _rotation_fwd(e, q):
  return q, (e, q)


def _rotation_bwd(res, g):
  e, q = res
  norm = lambda x: jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
  dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
  e_norm, q_norm = norm(e), norm(q)
  u, v = e / e_norm, q / q_norm
  r = (u + v) / norm(u + v)
  scale = q_norm / e_norm
  grad_e = scale * (g - 2.0 * r * dot(r, g) + 2.0 * u * dot(v, g))
  return grad_e, jnp.zeros_like(q)


rotation_trick.defvjp(_rotation_fwd, _rotation_bwd)


def gumbel_soft_sample(logits: jax.Array, noise: jax.Array, tau: jax.Array | float,
                       noise_scale: jax.Array | float) -> jax.Array:
  """The soft sample `softmax((logits + noise_scale * noise) / tau)` over the last axis.

  Args:
    logits: `[..., K]`.
    noise: standard Gumbel noise, same shape as `logits`.
    tau: temperature, a scalar or an array broadcastable to `logits`.
    noise_scale: `s`, a scalar or an array broadcastable to `logits` (e.g. `[L, 1, 1]` per
      level, or `[..., 1]` per row).

  Returns:
    `[..., K]` probabilities.
  """
  return jax.nn.softmax((logits + noise_scale * noise) / tau, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _gumbel_st(logits, noise, tau, noise_scale, hard):
  y = gumbel_soft_sample(logits, noise, tau, noise_scale)
  if not hard:
    return y
  return jax.nn.one_hot(jnp.argmax(y, axis=-1), y.shape[-1], dtype=y.dtype)


def _gumbel_st_fwd(logits, noise, tau, noise_scale, hard):
  return _gumbel_st(logits, noise, tau, noise_scale, hard), (logits, noise, tau, noise_scale)


def _gumbel_st_bwd(hard, residuals, g):
  del hard
  logits, noise, tau, noise_scale = residuals
  _, vjp = jax.vjp(lambda l, t, s: gumbel_soft_sample(l, noise, t, s), logits, tau, noise_scale)
  d_logits, d_tau, d_scale = vjp(g)
  return d_logits, jnp.zeros_like(noise), d_tau, d_scale


_gumbel_st.defvjp(_gumbel_st_fwd, _gumbel_st_bwd)


@functools.partial(jax.jit, static_argnames=("hard",))
def gumbel_softmax(logits: jax.Array, key: jax.Array, tau: jax.Array | float,
                   noise_scale: jax.Array | float, hard: bool = True) -> jax.Array:
  """Straight-through Gumbel-softmax over the last axis.

  Draws `g ~ Gumbel(0, 1)` of shape `logits.shape` from `key` and forms
  `y = softmax((logits + s * g) / tau)`. Forward: `one_hot(argmax(y))` when `hard`, else `y`.
  Backward (both modes): the gradient of `y` with respect to `logits`, `tau` and `s` (a custom
  VJP, so the hard one-hot passes the soft gradient: every code and the encoder get gradient).

  Args:
    logits: `[..., K]` (e.g. `-||z - c_k||^2`).
    key: a PRNG key (typed or raw `uint32[2]`).
    tau: temperature > 0, a scalar or an array broadcastable to `logits`.
    noise_scale: `s`, a scalar or broadcastable array; may be a learnable parameter.
    hard: static bool.

  Returns:
    `[..., K]` in the dtype of `logits`: one-hot rows (hard) or probabilities (soft).
  """
  noise = jax.random.gumbel(key, logits.shape, dtype=logits.dtype)
  tau = jnp.asarray(tau, logits.dtype)
  noise_scale = jnp.asarray(noise_scale, logits.dtype)
  return _gumbel_st(logits, noise, tau, noise_scale, bool(hard))
