"""A BERT encoder (as in all-MiniLM-L6-v2) in JAX: pure functions plus a thin NNX holder.

Parameters are a flat dict of arrays; per-layer tensors are stacked on a leading layer axis
[L, ...] and linear weights stored [in, out]. `from_torch_names` converts a Hugging Face BertModel
state dict (linear weights [out, in]) into that layout.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax.recommender.layers import layer_norm

_LAYER_TENSORS = {  # our name -> Hugging Face name inside encoder.layer.{i}.
    "q_w": "attention.self.query.weight", "q_b": "attention.self.query.bias",
    "k_w": "attention.self.key.weight", "k_b": "attention.self.key.bias",
    "v_w": "attention.self.value.weight", "v_b": "attention.self.value.bias",
    "o_w": "attention.output.dense.weight", "o_b": "attention.output.dense.bias",
    "ln1_g": "attention.output.LayerNorm.weight", "ln1_b": "attention.output.LayerNorm.bias",
    "ff1_w": "intermediate.dense.weight", "ff1_b": "intermediate.dense.bias",
    "ff2_w": "output.dense.weight", "ff2_b": "output.dense.bias",
    "ln2_g": "output.LayerNorm.weight", "ln2_b": "output.LayerNorm.bias",
}
_EMBED_TENSORS = {
    "word": "embeddings.word_embeddings.weight",
    "position": "embeddings.position_embeddings.weight",
    "token_type": "embeddings.token_type_embeddings.weight",
    "emb_ln_g": "embeddings.LayerNorm.weight", "emb_ln_b": "embeddings.LayerNorm.bias",
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  num_layers: int
  num_heads: int
  hidden: int
  layer_norm_eps: float = 1e-12


def from_torch_names(state: Mapping[str, np.ndarray], num_layers: int) -> dict[str, np.ndarray]:
  """HF BertModel tensors -> our flat dict (stacked layers, [in, out] linear weights).

  Raises:
    KeyError: naming the first missing tensor.
  """
  def get(name):
    for prefix in ("", "bert.", "0.auto_model."):
      if prefix + name in state:
        return np.asarray(state[prefix + name], np.float32)
    raise KeyError(f"weights: tensor {name!r} not found")

  params = {ours: get(theirs) for ours, theirs in _EMBED_TENSORS.items()}
  for ours, theirs in _LAYER_TENSORS.items():
    stacked = np.stack([get(f"encoder.layer.{i}.{theirs}") for i in range(num_layers)])
    params[ours] = np.swapaxes(stacked, 1, 2) if ours.endswith("_w") else stacked
  return params


def bert_layer(x: jax.Array, mask: jax.Array, p: Mapping[str, jax.Array], num_heads: int,
               eps: float) -> jax.Array:
  """One post-LN transformer layer. x [B, S, H], mask bool[B, S] (True = token) -> [B, S, H]."""
  b, s, h = x.shape
  d = h // num_heads
  def heads(w, bias):
    return (x @ w + bias).reshape(b, s, num_heads, d)
  q, k, v = heads(p["q_w"], p["q_b"]), heads(p["k_w"], p["k_b"]), heads(p["v_w"], p["v_b"])
  logits = jnp.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(d).astype(np.float32)
  logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
  ctx = jnp.einsum("bnqk,bknd->bqnd", jax.nn.softmax(logits, axis=-1), v).reshape(b, s, h)
  x = layer_norm(x + ctx @ p["o_w"] + p["o_b"], p["ln1_g"], p["ln1_b"], eps)
  ff = jax.nn.gelu(x @ p["ff1_w"] + p["ff1_b"], approximate=False) @ p["ff2_w"] + p["ff2_b"]
  return layer_norm(x + ff, p["ln2_g"], p["ln2_b"], eps)


def bert_encode(params: Mapping[str, jax.Array], ids: jax.Array, mask: jax.Array,
                cfg: BertConfig) -> jax.Array:
  """Token ids int32[B, S] (mask bool[B, S]) -> last hidden states [B, S, H]."""
  s = ids.shape[1]
  x = params["word"][ids] + params["position"][:s][None] + params["token_type"][0]
  x = layer_norm(x, params["emb_ln_g"], params["emb_ln_b"], cfg.layer_norm_eps)
  layers = {k: params[k] for k in _LAYER_TENSORS}
  def step(h, p):
    return bert_layer(h, mask, p, cfg.num_heads, cfg.layer_norm_eps), None
  x, _ = jax.lax.scan(step, x, layers)
  return x


def mean_pool_normalize(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Sentence-transformers pooling: mean over real tokens, then L2 normalise. -> [B, H]."""
  m = mask[..., None].astype(hidden.dtype)
  pooled = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


class SentenceBert(nnx.Module):
  """Holds the BERT parameters; calling it embeds a batch of token ids into unit vectors."""

  def __init__(self, params: Mapping[str, np.ndarray], cfg: BertConfig):
    self.cfg = cfg
    self.names = tuple(sorted(params))
    for name in self.names:
      setattr(self, name, nnx.Param(jnp.asarray(params[name])))

  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """ids int32[B, S], mask bool[B, S] -> float32[B, H] unit-norm sentence vectors."""
    params = {name: getattr(self, name)[...] for name in self.names}
    return mean_pool_normalize(bert_encode(params, ids, mask, self.cfg), mask)
