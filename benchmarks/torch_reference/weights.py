"""Copies our Flax parameters (pure dicts, `nnx.to_pure_dict`) into the PyTorch references.

Used by the parity tests and by the benchmark so both sides start from the same weights.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn


def _tensor(x: Any) -> torch.Tensor:
  return torch.from_numpy(np.array(x, np.float32))


def _set(param: torch.Tensor, value: torch.Tensor, name: str) -> None:
  if tuple(param.shape) != tuple(value.shape):
    raise ValueError(f"torch_reference.weights: {name} has shape {tuple(param.shape)} in torch, "
                     f"{tuple(value.shape)} from the Flax parameters")
  with torch.no_grad():
    param.copy_(value.to(param.device, param.dtype))


def _mlp(seq: nn.Sequential, layers: Mapping[int, Mapping[str, Any]], name: str) -> None:
  linears = [m for m in seq if isinstance(m, nn.Linear)]
  if len(linears) != len(layers):
    raise ValueError(f"torch_reference.weights: {name} has {len(linears)} Linear layers in "
                     f"torch, {len(layers)} in the Flax parameters")
  for i, lin in enumerate(linears):
    _set(lin.weight, _tensor(layers[i]["kernel"]).T, f"{name}.{i}.kernel")
    _set(lin.bias, _tensor(layers[i]["bias"]), f"{name}.{i}.bias")


def load_tokenizer(model: nn.Module, params: Mapping[str, Any]) -> None:
  """Our RQVAE/R3VAE params (`encoder/layers/i/{kernel,bias}`, `decoder/...`, `codebooks`,
  `reference`) -> `torch_reference.tokenizer.RQVAE/R3VAE` (Linear weights transposed)."""
  _mlp(model.encoder, params["encoder"]["layers"], "encoder")
  _mlp(model.decoder, params["decoder"]["layers"], "decoder")
  _set(model.codebooks, _tensor(params["codebooks"]), "codebooks")
  if getattr(model, "reference", None) is not None:
    _set(model.reference, _tensor(params["reference"]), "reference")


def _attention(att: nn.Module, p: Mapping[str, Any], name: str) -> None:
  """Our fused projections -> T5Attention `q/k/v/o.weight`.

  Self-attention holds `qkv [3, d, h, e]`, cross-attention `q [d, h, e]` and `kv [2, d, h, e]`;
  both `o [h, e, d]`. T5 does not scale attention logits; ours scale by d_kv^-0.5, folded into
  q here.
  """
  if "qkv" in p:
    q, k, v = (_tensor(p["qkv"])[i] for i in range(3))
  else:
    q, (k, v) = _tensor(p["q"]), (_tensor(p["kv"])[i] for i in range(2))
  d, h, e = q.shape
  _set(att.q.weight, q.reshape(d, h * e).T * e ** -0.5, f"{name}.q")
  _set(att.k.weight, k.reshape(d, h * e).T, f"{name}.k")
  _set(att.v.weight, v.reshape(d, h * e).T, f"{name}.v")
  _set(att.o.weight, _tensor(p["o"]).reshape(h * e, d).T, f"{name}.o")


def _ffn(dense: nn.Module, p: Mapping[str, Any], name: str) -> None:
  _set(dense.wi.weight, _tensor(p["wi"]).T, f"{name}.wi")
  _set(dense.wo.weight, _tensor(p["wo"]).T, f"{name}.wo")


def load_t5(model: nn.Module, params: Mapping[str, Any]) -> torch.Tensor:
  """Our T5Recommender params -> a `transformers.T5ForConditionalGeneration`.

  Returns:
    Our `item_position` table float32[L+1, d] (T5 has no such parameter; add it to the
    encoder's `inputs_embeds` to reproduce our encoder input).
  """
  _set(model.shared.weight, _tensor(params["embed"]), "embed")
  enc, dec = model.encoder, model.decoder
  if len(enc.block) != len(params["encoder"]) or len(dec.block) != len(params["decoder"]):
    raise ValueError(f"torch_reference.weights: layer counts differ: torch "
                     f"{len(enc.block)}+{len(dec.block)}, Flax {len(params['encoder'])}+"
                     f"{len(params['decoder'])}")
  _set(enc.block[0].layer[0].SelfAttention.relative_attention_bias.weight,
       _tensor(params["enc_bias"]), "enc_bias")
  _set(dec.block[0].layer[0].SelfAttention.relative_attention_bias.weight,
       _tensor(params["dec_bias"]), "dec_bias")
  for i, block in enumerate(enc.block):
    p = params["encoder"][i]
    _set(block.layer[0].layer_norm.weight, _tensor(p["attn_norm"]), f"encoder.{i}.attn_norm")
    _attention(block.layer[0].SelfAttention, p["attn"], f"encoder.{i}.attn")
    _set(block.layer[1].layer_norm.weight, _tensor(p["ffn_norm"]), f"encoder.{i}.ffn_norm")
    _ffn(block.layer[1].DenseReluDense, p["ffn"], f"encoder.{i}.ffn")
  for i, block in enumerate(dec.block):
    p = params["decoder"][i]
    _set(block.layer[0].layer_norm.weight, _tensor(p["self_norm"]), f"decoder.{i}.self_norm")
    _attention(block.layer[0].SelfAttention, p["self_attn"], f"decoder.{i}.self_attn")
    _set(block.layer[1].layer_norm.weight, _tensor(p["cross_norm"]), f"decoder.{i}.cross_norm")
    _attention(block.layer[1].EncDecAttention, p["cross_attn"], f"decoder.{i}.cross_attn")
    _set(block.layer[2].layer_norm.weight, _tensor(p["ffn_norm"]), f"decoder.{i}.ffn_norm")
    _ffn(block.layer[2].DenseReluDense, p["ffn"], f"decoder.{i}.ffn")
  _set(enc.final_layer_norm.weight, _tensor(params["enc_norm"]), "enc_norm")
  _set(dec.final_layer_norm.weight, _tensor(params["dec_norm"]), "dec_norm")
  return _tensor(params["item_position"])


def t5_inputs_embeds(model: nn.Module, input_ids: torch.Tensor, item_position: torch.Tensor
                     ) -> torch.Tensor:
  """Our encoder input in T5 terms: `shared(ids) + item_position[s % (L+1)]`. `[B, S, d]`."""
  s = input_ids.shape[1]
  pos = torch.arange(s, device=input_ids.device) % item_position.shape[0]
  return model.shared(input_ids) + item_position.to(input_ids.device)[pos]
