"""RPG recommender: a small GPT-2-style decoder over items, predicting all m SID codes at once.

An item with codes (c_1 .. c_m) enters as the mean of m token embeddings, one table row per
(digit, code): `tokens [m*K, d]`, row `j*K + c_j`. Learned positions are added, dropout applied,
and `num_layers` pre-LayerNorm blocks (causal self-attention, GELU-tanh MLP) with a final
LayerNorm give a state h per position. Digit j's head is a residual SiLU block
`h + silu(h W_j + b_j)` (W_j starts at zero, so every head starts as the identity); its logits
over digit j's K codes are the cosines between the head output and the digit's token rows,
divided by a temperature. The loss is the cross-entropy of each digit, averaged over digits and
labelled positions.

An item's score is the mean over digits of its codes' log-probabilities (`decode.py`).

Shapes: B users, T positions (right-padded), m digits, K codes per digit, d model width.
Parameters carry logical axis names (`axes`: "vocab", "embed", "heads", "kv", "mlp") for
`recommender.sharding.param_shardings`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from r3vae_jax.recommender import layers


@dataclasses.dataclass(frozen=True)
class RPGConfig:
  """Sizes of the model (RPG's released settings: d 448, 2 layers, 4 heads, MLP 1024)."""
  num_digits: int = 32
  codebook_size: int = 256
  d_model: int = 448
  num_layers: int = 2
  num_heads: int = 4
  d_ff: int = 1024
  max_len: int = 50
  temperature: float = 0.03
  embed_dropout: float = 0.5
  attn_dropout: float = 0.5
  layer_norm_eps: float = 1e-12
  init_std: float = 0.02


def _normal(key, shape, std, axes) -> nnx.Param:
  return nnx.Param(std * jax.random.normal(key, shape, jnp.float32), axes=axes)


def _zeros(shape, axes) -> nnx.Param:
  return nnx.Param(jnp.zeros(shape, jnp.float32), axes=axes)


def _ones(shape, axes) -> nnx.Param:
  return nnx.Param(jnp.ones(shape, jnp.float32), axes=axes)


class Block(nnx.Module):
  """Pre-LN GPT-2 block: x + attn(ln(x)); x + mlp(ln(x)); biases everywhere."""

  def __init__(self, cfg: RPGConfig, rngs: nnx.Rngs):
    d, h = cfg.d_model, cfg.num_heads
    e, std = d // h, cfg.init_std
    out_std = std / (2 * cfg.num_layers) ** 0.5
    self.ln1_scale, self.ln1_bias = _ones((d,), ("embed",)), _zeros((d,), ("embed",))
    self.qkv = _normal(rngs.params(), (d, 3, h, e), std, ("embed", None, "heads", "kv"))
    self.qkv_bias = _zeros((3, h, e), (None, "heads", "kv"))
    self.out = _normal(rngs.params(), (h, e, d), out_std, ("heads", "kv", "embed"))
    self.out_bias = _zeros((d,), ("embed",))
    self.ln2_scale, self.ln2_bias = _ones((d,), ("embed",)), _zeros((d,), ("embed",))
    self.fc = _normal(rngs.params(), (d, cfg.d_ff), std, ("embed", "mlp"))
    self.fc_bias = _zeros((cfg.d_ff,), ("mlp",))
    self.proj = _normal(rngs.params(), (cfg.d_ff, d), out_std, ("mlp", "embed"))
    self.proj_bias = _zeros((d,), ("embed",))
    self.cfg = cfg

  def __call__(self, x: jax.Array, mask: jax.Array, key: jax.Array | None) -> jax.Array:
    """x [B, T, d], mask bool[B, T] (valid positions) -> [B, T, d]."""
    cfg = self.cfg
    y = layers.layer_norm(x, self.ln1_scale[...], self.ln1_bias[...], cfg.layer_norm_eps)
    q, k, v = jnp.unstack(jnp.einsum("btd,dchk->cbthk", y, self.qkv[...])
                          + self.qkv_bias[...][:, None, None], axis=0)
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    t = x.shape[1]
    allowed = jnp.tril(jnp.ones((t, t), bool))[None, None] & mask[:, None, None, :]
    weights = jax.nn.softmax(jnp.where(allowed, logits, -1e9), axis=-1)
    weights = layers.dropout(weights, cfg.attn_dropout, key)
    att = jnp.einsum("bhqs,bshk->bqhk", weights, v)
    x = x + jnp.einsum("bqhk,hkd->bqd", att, self.out[...]) + self.out_bias[...]
    y = layers.layer_norm(x, self.ln2_scale[...], self.ln2_bias[...], cfg.layer_norm_eps)
    y = jax.nn.gelu(y @ self.fc[...] + self.fc_bias[...], approximate=True)
    return x + y @ self.proj[...] + self.proj_bias[...]


class RPG(nnx.Module):
  """The model; `states` -> per-digit head outputs, `digit_logits` -> code logits."""

  def __init__(self, cfg: RPGConfig, rngs: nnx.Rngs):
    d, std = cfg.d_model, cfg.init_std
    self.cfg = cfg
    self.tokens = _normal(rngs.params(), (cfg.num_digits * cfg.codebook_size, d), std,
                          ("vocab", "embed"))
    self.positions = _normal(rngs.params(), (cfg.max_len, d), std, (None, "embed"))
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
    self.lnf_scale, self.lnf_bias = _ones((d,), ("embed",)), _zeros((d,), ("embed",))
    self.head_w = _zeros((cfg.num_digits, d, d), (None, "embed", "mlp"))
    self.head_b = _zeros((cfg.num_digits, d), (None, "embed"))

  def item_embeddings(self, sids: jax.Array) -> jax.Array:
    """sids int[..., m] (codes in [0, K)) -> float32[..., d] mean of the digits' token rows."""
    offsets = jnp.arange(self.cfg.num_digits, dtype=jnp.int32) * self.cfg.codebook_size
    return jnp.take(self.tokens[...], sids + offsets, axis=0).mean(-2)

  def states(self, sids: jax.Array, mask: jax.Array, key: jax.Array | None = None
             ) -> jax.Array:
    """Head outputs for every position.

    Args:
      sids: int32[B, T, m] codes of the history items (padding rows arbitrary, masked).
      mask: bool[B, T] valid positions (a prefix of each row: right padding).
      key: dropout key (None = evaluation).

    Returns:
      float32[B, T, m, d].
    """
    cfg = self.cfg
    t = sids.shape[1]
    keys = [None] * (cfg.num_layers + 1) if key is None else list(
        jax.random.split(key, cfg.num_layers + 1))
    x = self.item_embeddings(sids) + self.positions[...][:t]
    x = layers.dropout(x, cfg.embed_dropout, keys[0])
    for block, k in zip(self.blocks, keys[1:]):
      x = block(x, mask, k)
    h = layers.layer_norm(x, self.lnf_scale[...], self.lnf_bias[...], cfg.layer_norm_eps)
    return h[..., None, :] + jax.nn.silu(
        jnp.einsum("btd,mde->btme", h, self.head_w[...]) + self.head_b[...])

  def digit_logits(self, states: jax.Array) -> jax.Array:
    """states float[..., m, d] -> float32[..., m, K] cosine logits / temperature."""
    cfg = self.cfg
    table = self.tokens[...].reshape(cfg.num_digits, cfg.codebook_size, -1)
    table = table * jax.lax.rsqrt(jnp.sum(table ** 2, -1, keepdims=True) + 1e-12)
    s = states * jax.lax.rsqrt(jnp.sum(states ** 2, -1, keepdims=True) + 1e-12)
    return jnp.einsum("...md,mkd->...mk", s, table) / cfg.temperature


def loss(model: RPG, sids: jax.Array, mask: jax.Array, labels: jax.Array,
         key: jax.Array | None) -> jax.Array:
  """Mean over labelled positions and digits of the code cross-entropy.

  Args:
    model: the RPG model.
    sids: int32[B, T, m] input items' codes.
    mask: bool[B, T] valid input positions.
    labels: int32[B, T, m] next items' codes; rows of -1 are unlabelled positions.
    key: dropout key.
  """
  logits = model.digit_logits(model.states(sids, mask, key))            # [B, T, m, K]
  logp = jax.nn.log_softmax(logits, -1)
  valid = labels[..., 0] >= 0                                           # [B, T]
  picked = jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
  per_position = -picked.mean(-1)                                       # [B, T]
  return jnp.sum(jnp.where(valid, per_position, 0.0)) / jnp.maximum(valid.sum(), 1)


def last_states(model: RPG, sids: jax.Array, mask: jax.Array) -> jax.Array:
  """Head outputs at each row's last valid position: float32[B, m, d] (no dropout)."""
  states = model.states(sids, mask, None)
  last = jnp.maximum(mask.sum(-1) - 1, 0)
  return jnp.take_along_axis(states, last[:, None, None, None], axis=1)[:, 0]


def digit_log_probs(model: RPG, sids: jax.Array, mask: jax.Array) -> jax.Array:
  """float32[B, m, K] log-softmax over each digit's codes at the last valid position."""
  return jax.nn.log_softmax(model.digit_logits(last_states(model, sids, mask)), -1)
