"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over item-ID embeddings.

A user's last `max_len` items (left-padded) are embedded (`E[item] * sqrt(d)` plus a learned
position embedding, dropout) and pass through `num_blocks` blocks as in the paper's code: the
layer-normed input is the attention query, the attention output is added to it, then a layer
norm and a two-layer ReLU feed-forward network with its own residual; padded positions are
zeroed after every block, and a final layer norm gives the hidden state `h_t` of each position.
The score of item j after position t is `h_t . E[j]` (the input embedding table, shared).

Loss: full softmax cross-entropy over every item at every non-padded position (`loss`), not the
paper's binary cross-entropy against one sampled negative; on these Amazon sets the full softmax
is the stronger of the two (Petrov & Macdonald, RecSys 2023).

Shapes: `b` users, `t` positions (max_len), `d` d_model, `N` items. Item ids are 0..N-1 and -1
is padding; the embedding table has N + 1 rows, row N the padding row.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from r3vae_jax.recommender import layers


class _Norm(nnx.Module):

  def __init__(self, d: int):
    self.scale = nnx.Param(jnp.ones((d,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((d,), jnp.float32))

  def __call__(self, x: jax.Array) -> jax.Array:
    return layers.layer_norm(x, self.scale[...], self.bias[...], 1e-8)


class _Block(nnx.Module):
  """Attention (`qkv [3, d, heads, d/heads]` with biases, output `[heads, d/heads, d]`) and the
  point-wise feed-forward network (`w1, w2 [d, d]` with biases)."""

  def __init__(self, d: int, heads: int, rngs: nnx.Rngs):
    e = d // heads
    init = jax.nn.initializers.glorot_uniform()
    self.attn_norm = _Norm(d)
    self.qkv = nnx.Param(init(rngs.params(), (3, d, heads * e)).reshape(3, d, heads, e))
    self.qkv_bias = nnx.Param(jnp.zeros((3, heads, e), jnp.float32))
    self.out = nnx.Param(init(rngs.params(), (heads * e, d)).reshape(heads, e, d))
    self.out_bias = nnx.Param(jnp.zeros((d,), jnp.float32))
    self.ffn_norm = _Norm(d)
    self.w1 = nnx.Param(init(rngs.params(), (d, d)))
    self.b1 = nnx.Param(jnp.zeros((d,), jnp.float32))
    self.w2 = nnx.Param(init(rngs.params(), (d, d)))
    self.b2 = nnx.Param(jnp.zeros((d,), jnp.float32))

  def __call__(self, x: jax.Array, mask: jax.Array, keep: jax.Array, rate: float, keys
               ) -> jax.Array:
    """x float[b, t, d]; mask bool[b, 1, t, t] (may attend); keep float[b, t, 1] (1 = item)."""
    f32 = jnp.float32
    query = self.attn_norm(x)
    q = jnp.einsum("btd,dhe->bhte", query, self.qkv[0]) + self.qkv_bias[0][None, :, None]
    k = jnp.einsum("btd,dhe->bhte", x, self.qkv[1]) + self.qkv_bias[1][None, :, None]
    v = jnp.einsum("btd,dhe->bhte", x, self.qkv[2]) + self.qkv_bias[2][None, :, None]
    att = layers.attention(q, k, v, None, mask, f32, rate, keys())
    x = query + jnp.einsum("bhte,hed->btd", att, self.out[...]) + self.out_bias[...]
    x = self.ffn_norm(x)
    hidden = layers.dropout(jax.nn.relu(x @ self.w1[...] + self.b1[...]), rate, keys())
    x = x + layers.dropout(hidden @ self.w2[...] + self.b2[...], rate, keys())
    return x * keep


class SASRec(nnx.Module):
  """The model of the module docstring. Build with `from_config`."""

  def __init__(self, num_items: int, c: ml_collections.ConfigDict, rngs: nnx.Rngs):
    """Args: num_items N; c = `config.sasrec` (d_model, num_blocks, num_heads, dropout,
    max_len); rngs for init."""
    for field in ("d_model", "num_blocks", "num_heads", "max_len"):
      if not isinstance(c[field], int) or c[field] < 1:
        raise ValueError(f"config.sasrec.{field} must be a positive int, got {c[field]!r}")
    if c.d_model % c.num_heads:
      raise ValueError(f"config.sasrec.d_model ({c.d_model}) must be a multiple of "
                       f"config.sasrec.num_heads ({c.num_heads})")
    if not 0.0 <= c.dropout < 1.0:
      raise ValueError(f"config.sasrec.dropout must be in [0, 1), got {c.dropout!r}")
    self.num_items, self.d_model, self.rate = num_items, c.d_model, float(c.dropout)
    std = c.d_model ** -0.5
    self.items = nnx.Param(std * jax.random.normal(rngs.params(), (num_items + 1, c.d_model)))
    self.positions = nnx.Param(std * jax.random.normal(rngs.params(), (c.max_len, c.d_model)))
    self.blocks = nnx.List([_Block(c.d_model, c.num_heads, rngs) for _ in range(c.num_blocks)])
    self.final_norm = _Norm(c.d_model)

  def hidden(self, history: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """int[b, t] item ids (-1 = padding, t <= max_len) -> float32[b, t, d] hidden states.

    `rng` None: deterministic (evaluation); else dropout keys are folded from it.
    """
    keys = layers.DropoutKeys(rng)
    t = history.shape[1]
    item = history >= 0
    ids = jnp.where(item, history, self.num_items)
    x = self.items[...][ids] * (self.d_model ** 0.5) + self.positions[...][-t:][None]
    keep = item[..., None].astype(jnp.float32)
    x = layers.dropout(x, self.rate, keys()) * keep
    causal = jnp.tril(jnp.ones((t, t), bool))
    mask = causal[None, None] & item[:, None, None, :]
    for block in self.blocks:
      x = block(x, mask, keep, self.rate, keys)
    return self.final_norm(x)

  def item_scores(self, hidden: jax.Array) -> jax.Array:
    """float[..., d] -> float32[..., N] scores of every item (padding row excluded)."""
    return hidden @ self.items[...][:self.num_items].T

  def __call__(self, history: jax.Array) -> jax.Array:
    """int[b, t] histories -> float32[b, N] scores of each user's next item (last position)."""
    return self.item_scores(self.hidden(history)[:, -1])


def from_config(num_items: int, c: ml_collections.ConfigDict, seed: int) -> SASRec:
  return SASRec(num_items, c, nnx.Rngs(params=seed))


def loss(model: SASRec, inputs: jax.Array, targets: jax.Array, rng: jax.Array, capacity: int
         ) -> jax.Array:
  """Mean full-softmax cross-entropy over the batch's non-padded positions.

  Only the positions with a target are scored against every item: they are gathered into a
  buffer of `capacity` rows first (most positions of short histories are padding), so the
  `[capacity, N]` logits replace `[b * t, N]`.

  Args:
    model: the SASRec model.
    inputs: int[b, t] item ids, -1 = padding.
    targets: int[b, t] the item after each input position, -1 where none.
    rng: dropout key.
    capacity: static; at least the number of targets in any batch (`batch_capacity`).

  Returns:
    float32 scalar.
  """
  hidden = model.hidden(inputs, rng).reshape(-1, model.d_model)
  flat = targets.reshape(-1)
  count = jnp.sum(flat >= 0)
  (rows,) = jnp.nonzero(flat >= 0, size=capacity, fill_value=0)
  weight = (jnp.arange(capacity) < count).astype(jnp.float32)
  logits = model.item_scores(hidden[rows])
  target = jnp.maximum(flat[rows], 0)
  nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, target[:, None], 1)[:, 0]
  return jnp.sum(nll * weight) / jnp.maximum(jnp.sum(weight), 1.0)
