"""Pure functions of the T5 encoder-decoder (arrays in, arrays out).

Shapes: `b` batch, `q`/`k` query/key positions, `h` heads, `d` d_model, `e` d_kv, `f` d_ff.
Matrix products take a compute `dtype` (float32 or bfloat16) and return float32; norms,
softmaxes and the residual stream stay float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MASKED = -1e9  # attention logit of a masked key (finite, so fully masked rows stay finite)
NEG = -1e9  # output logit of a code past its level's size (finite: no 0 * inf NaNs)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float = 1e-6) -> jax.Array:
  """T5 LayerNorm (no mean subtraction, no bias): [..., d] -> [..., d] float32."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def matmul(spec: str, x: jax.Array, w: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """`einsum(spec, x, w)` computed in `dtype`, accumulated and returned in float32."""
  return jnp.einsum(spec, x.astype(dtype), w.astype(dtype),
                    preferred_element_type=jnp.float32)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """[..., d] -> [..., d]: mean and variance over the last axis, then `scale` and `bias`."""
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when `key` is None (deterministic) or `rate` is 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class DropoutKeys:
  """Dropout keys: a fresh fold-in of `rng` per call, or None everywhere when deterministic.

  A stack of layers takes one key from its `DropoutKeys`; layer i draws from `fold_in(that, i)`.
  """

  def __init__(self, rng: jax.Array | None):
    self._rng, self._count = rng, 0

  def __call__(self) -> jax.Array | None:
    if self._rng is None:
      return None
    self._count += 1
    return jax.random.fold_in(self._rng, self._count)


def relative_position_bucket(relative_position: np.ndarray, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bucketing of `key_pos - query_pos`: exact for small distances, log-spaced after.

  Args:
    relative_position: int[...] key position minus query position.
    bidirectional: separate buckets for keys before and after the query (encoder); otherwise
      keys after the query share bucket 0 (decoder, where they are masked anyway).
    num_buckets: total buckets.
    max_distance: distances >= this share the last bucket (of their direction).

  Returns:
    int32[...] bucket ids in [0, num_buckets).
  """
  n = -np.asarray(relative_position, np.int64)
  bucket = np.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  safe = np.maximum(n, 1).astype(np.float64)
  large = max_exact + (np.log(safe / max_exact) / np.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(np.int64)
  large = np.minimum(large, num_buckets - 1)
  return (bucket + np.where(n < max_exact, n, large)).astype(np.int32)


def relative_bias(table: jax.Array, query_len: int, key_len: int, bidirectional: bool,
                  max_distance: int) -> jax.Array:
  """Position bias of a whole stack, computed once and shared by its layers.

  The bucket of each (query, key) pair is a constant, so the lookup is a product with a constant
  one-hot matrix `[q*k, buckets]` (exact at HIGHEST precision): its gradient is a dense
  `[buckets, q*k] @ [q*k, h]` product instead of a scatter-add of q*k rows into a few buckets.

  Args:
    table: float[num_buckets, h] learned bias per bucket and head.
    query_len, key_len: static lengths.

  Returns:
    float32[h, query_len, key_len].
  """
  rel = np.arange(key_len)[None, :] - np.arange(query_len)[:, None]
  buckets = relative_position_bucket(rel, bidirectional, table.shape[0], max_distance)
  onehot = (buckets.reshape(-1, 1) == np.arange(table.shape[0])).astype(np.float32)
  bias = jnp.dot(onehot, table.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
  return jnp.transpose(bias.reshape(query_len, key_len, -1), (2, 0, 1))


@jax.custom_vjp
def embed_lookup_onehot_grad(table: jax.Array, tokens: jax.Array) -> jax.Array:
  """`table[tokens]` whose table gradient is a one-hot product, not a scatter-add.

  The backward pass of a gather scatter-adds one row per token; on a GPU, thousands of tokens
  hitting the same row (PAD in left-padded histories, BOS) serialise on atomics. Here the
  gradient is `onehot(tokens)^T @ grad`: a bfloat16 one-hot (exact) times the float32 gradient
  split into three bfloat16 parts (hi + mid + lo carry its 24 mantissa bits), accumulated in
  float32: tensor-core products, float32 accuracy, no contention.

  Args:
    table: float[vocab, d]; tokens: int[...] in [0, vocab).

  Returns:
    float[..., d] (table's dtype), equal to `table[tokens]`.
  """
  return jnp.take(table, tokens, axis=0)


def _lookup_fwd(table: jax.Array, tokens: jax.Array) -> tuple[jax.Array, tuple]:
  # A zero-width stand-in carries the table's row count to the backward pass.
  return jnp.take(table, tokens, axis=0), (tokens, jnp.zeros((table.shape[0], 0), table.dtype))


def _lookup_bwd(res: tuple, grad: jax.Array) -> tuple[jax.Array, None]:
  tokens, shape_of_table = res
  flat = tokens.reshape(-1)
  onehot = (flat[:, None] == jnp.arange(shape_of_table.shape[0], dtype=flat.dtype)
            ).astype(jnp.bfloat16)
  rest = grad.reshape(flat.shape[0], -1).astype(jnp.float32)
  table_grad = jnp.zeros((onehot.shape[1], rest.shape[1]), jnp.float32)
  for _ in range(3 if grad.dtype != jnp.bfloat16 else 1):
    part = rest.astype(jnp.bfloat16)
    rest = rest - part.astype(jnp.float32)
    table_grad = table_grad + jnp.einsum("nv,nd->vd", onehot, part,
                                         preferred_element_type=jnp.float32)
  return table_grad.astype(shape_of_table.dtype), None


embed_lookup_onehot_grad.defvjp(_lookup_fwd, _lookup_bwd)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None,
              mask: jax.Array, dtype: jnp.dtype, dropout_rate: float = 0.0,
              key: jax.Array | None = None) -> jax.Array:
  """Scaled dot-product attention with an additive bias and a boolean mask.

  Head-major layouts (batch and head dimensions lead) need no transposes around the products.

  Args:
    q: [b, h, q, e]; k, v: [b, h, k, e].
    bias: float[h, q, k] (or broadcastable to [b, h, q, k]) or None.
    mask: bool broadcastable to [b, h, q, k]; False = may not attend.
    dtype: compute dtype of the two matrix products.
    dropout_rate, key: dropout on the attention weights (`key` None = off).

  Returns:
    float32[b, h, q, e].
  """
  logits = matmul("bhqe,bhke->bhqk", q, k, dtype) * (q.shape[-1] ** -0.5)
  if bias is not None:
    logits = logits + bias
  logits = jnp.where(mask, logits, MASKED)
  weights = dropout(jax.nn.softmax(logits, axis=-1), dropout_rate, key)
  return matmul("bhqk,bhke->bhqe", weights, v, dtype)


def feed_forward(x: jax.Array, wi: jax.Array, wo: jax.Array, kind: str, dtype: jnp.dtype,
                 dropout_rate: float = 0.0, key: jax.Array | None = None) -> jax.Array:
  """T5 FFN: ReLU `relu(x wi) wo`, or gated GELU `(gelu(x wi[0]) * (x wi[1])) wo`.

  Args:
    x: [..., d].
    wi: [d, f] for "relu"; [2, d, f] for "gated-gelu".
    wo: [f, d].
    kind: "relu" | "gated-gelu".

  Returns:
    float32[..., d].
  """
  if kind == "relu":
    hidden = jax.nn.relu(matmul("...d,df->...f", x, wi, dtype))
  elif kind == "gated-gelu":
    gate = jax.nn.gelu(matmul("...d,df->...f", x, wi[0], dtype), approximate=True)
    hidden = gate * matmul("...d,df->...f", x, wi[1], dtype)
  else:
    raise ValueError(f"config.recommender.ffn must be 'relu' or 'gated-gelu', got {kind!r}")
  return matmul("...f,fd->...d", dropout(hidden, dropout_rate, key), wo, dtype)
