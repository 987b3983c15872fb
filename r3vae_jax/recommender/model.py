"""T5-style encoder-decoder that reads a SID history and generates the next item's SID.

Layout (see `tokens.py`): one embedding table `[vocab, d_model]` holds every SID position's codes
at its own offset, so each position has its own embeddings. The encoder reads the flattened
history `[B, H*(L+1)]` (left-padded with PAD, masked) plus a learned "position within item"
embedding; the decoder reads BOS and the target's first L codes and, at step p, outputs logits
over level p's codes only, tied to level p's rows of the table (scaled by d_model^-0.5).

Logits of a full forward pass are `float32[B, L+1, Kmax]` (Kmax = largest level size), entries
past level p's size set to `NEG` (a large finite negative: a log-softmax over the padded row
gives them ~zero probability and no 0 * inf NaNs). Slice `[:, p, :level_sizes[p]]` for exact
per-level logits; `loss.sid_loss` does.

Relative position bias is bucketed (T5), bidirectional in the encoder and causal in the decoder,
one table per stack shared by its layers. Pre-norm RMSNorm, ReLU or gated-GELU FFN, dropout on
embeddings, attention weights, sublayer outputs and the stack outputs. `d_kv` (per head) is
independent of `d_model`. Parameters are float32; matrix products run in `dtype`. Each stack
of layers is unrolled, or one `lax.scan` over its layers with `config.recommender.scan_layers`
(the same arithmetic; the scan compiles one layer instead of every layer).

The training step has no contended scatter-adds: the position bias is a constant one-hot
product, the item-position and output tables are tiles and slices, and the embedding gradient
is a one-hot product by default (`config.recommender.embed_grad`).

Parameters carry logical axis names (`axes` metadata: "vocab", "embed", "heads", "kv", "mlp");
`sharding.param_shardings` maps them onto the mesh.

DIGER (soft/one-hot SIDs) drives the same model through `embed_onehot`: pass
`enc_embeddings=model.embed_history_onehot(onehots)` to `encode`/`__call__` and float one-hot
targets as `dec_targets`; gradients flow into the one-hots.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from r3vae_jax.recommender import layers
from r3vae_jax.recommender.tokens import BOS, TokenLayout, layout_from_config

NEG = layers.NEG  # logit of a code past its level's size in the padded [B, L+1, Kmax] logits
Cache = tuple[dict[str, jax.Array], ...]
StepFn = Callable[[jax.Array, int, Cache], tuple[jax.Array, Cache]]


def _param(key: jax.Array, shape: tuple[int, ...], stddev: float, axes: tuple) -> nnx.Param:
  return nnx.Param(stddev * jax.random.normal(key, shape, jnp.float32), axes=axes)


def _ones(size: int) -> nnx.Param:
  return nnx.Param(jnp.ones((size,), jnp.float32), axes=("embed",))


class _Attention(nnx.Module):
  """Fused projections, no biases: self-attention `qkv [3, d, h, e]`; cross-attention
  `q [d, h, e]` and `kv [2, d, h, e]` (the memory is projected once); output `o [h, e, d]`."""

  def __init__(self, d_model: int, num_heads: int, d_kv: int, cross: bool, rngs: nnx.Rngs):
    shape, std, axes = (d_model, num_heads, d_kv), d_model ** -0.5, ("embed", "heads", "kv")
    if cross:
      self.q = _param(rngs.params(), shape, std, axes)
      self.kv = _param(rngs.params(), (2,) + shape, std, (None,) + axes)
    else:
      self.qkv = _param(rngs.params(), (3,) + shape, std, (None,) + axes)
    self.o = _param(rngs.params(), (num_heads, d_kv, d_model), (num_heads * d_kv) ** -0.5,
                    ("heads", "kv", "embed"))


class _FeedForward(nnx.Module):
  """`wi [d, f]` (ReLU) or `[2, d, f]` (gated GELU) and `wo [f, d]`."""

  def __init__(self, d_model: int, d_ff: int, kind: str, rngs: nnx.Rngs):
    if kind not in ("relu", "gated-gelu"):
      raise ValueError(f"config.recommender.ffn must be 'relu' or 'gated-gelu', got {kind!r}")
    wi_shape, wi_axes = (d_model, d_ff), ("embed", "mlp")
    if kind == "gated-gelu":
      wi_shape, wi_axes = (2,) + wi_shape, (None,) + wi_axes
    self.wi = _param(rngs.params(), wi_shape, d_model ** -0.5, wi_axes)
    self.wo = _param(rngs.params(), (d_ff, d_model), d_ff ** -0.5, ("mlp", "embed"))


class _EncoderLayer(nnx.Module):

  def __init__(self, c: ml_collections.ConfigDict, rngs: nnx.Rngs):
    self.attn_norm = _ones(c.d_model)
    self.attn = _Attention(c.d_model, c.num_heads, c.d_kv, False, rngs)
    self.ffn_norm = _ones(c.d_model)
    self.ffn = _FeedForward(c.d_model, c.d_ff, c.ffn, rngs)


class _DecoderLayer(nnx.Module):

  def __init__(self, c: ml_collections.ConfigDict, rngs: nnx.Rngs):
    self.self_norm = _ones(c.d_model)
    self.self_attn = _Attention(c.d_model, c.num_heads, c.d_kv, False, rngs)
    self.cross_norm = _ones(c.d_model)
    self.cross_attn = _Attention(c.d_model, c.num_heads, c.d_kv, True, rngs)
    self.ffn_norm = _ones(c.d_model)
    self.ffn = _FeedForward(c.d_model, c.d_ff, c.ffn, rngs)


def _dropout_keys(rng: jax.Array | None, deterministic: bool, stream: int) -> layers.DropoutKeys:
  if not deterministic and rng is None:
    raise ValueError("T5Recommender: deterministic=False needs a dropout `rng` key")
  return layers.DropoutKeys(None if deterministic else jax.random.fold_in(rng, stream))


class T5Recommender(nnx.Module):
  """The generative recommender (module docstring). Build with `from_config`."""

  def __init__(self, c: ml_collections.ConfigDict, layout: TokenLayout, rngs: nnx.Rngs):
    """Args: c = `config.recommender`; layout = the SID token layout; rngs for init."""
    if c.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"config.recommender.dtype must be float32 or bfloat16, got {c.dtype!r}")
    for field in ("num_encoder_layers", "num_decoder_layers", "d_model", "num_heads", "d_kv",
                  "d_ff", "relative_buckets", "relative_max_distance"):
      if not isinstance(c[field], int) or c[field] < 1:
        raise ValueError(f"config.recommender.{field} must be a positive int, got {c[field]!r}")
    if not 0.0 <= c.dropout < 1.0:
      raise ValueError(f"config.recommender.dropout must be in [0, 1), got {c.dropout!r}")
    embed_grad = c.get("embed_grad", "onehot")  # absent from configs saved before the field
    if embed_grad not in ("onehot", "scatter"):
      raise ValueError("config.recommender.embed_grad must be 'onehot' or 'scatter', got "
                       f"{embed_grad!r}")
    self.layout = layout
    self.d_model = c.d_model
    self.dropout_rate = float(c.dropout)
    self.ffn_kind = c.ffn
    self.max_distance = c.relative_max_distance
    self.dtype = jnp.dtype(c.dtype)
    self.embed_grad = embed_grad
    self.scan_layers = bool(c.get("scan_layers", False))  # absent from older saved configs
    self.embed = _param(rngs.params(), (layout.vocab_size, c.d_model), 1.0, ("vocab", "embed"))
    self.item_position = _param(rngs.params(), (layout.num_levels, c.d_model), 0.1,
                                (None, "embed"))
    self.enc_bias = _param(rngs.params(), (c.relative_buckets, c.num_heads), 0.1,
                           (None, "heads"))
    self.dec_bias = _param(rngs.params(), (c.relative_buckets, c.num_heads), 0.1,
                           (None, "heads"))
    self.encoder = nnx.List([_EncoderLayer(c, rngs) for _ in range(c.num_encoder_layers)])
    self.enc_norm = _ones(c.d_model)
    self.decoder = nnx.List([_DecoderLayer(c, rngs) for _ in range(c.num_decoder_layers)])
    self.dec_norm = _ones(c.d_model)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, seed: int = 0) -> "T5Recommender":
    """The model for `config.recommender` and `config.sid`, initialised from `seed`.

    The initialisation draws from `config.train.rng_impl` ("rbg": XLA's RngBitGenerator, about
    3x cheaper to compile than "threefry2x32"; the values do not depend on the mesh).
    """
    key = jax.random.key(seed, impl=config.train.rng_impl)
    return cls(config.recommender, layout_from_config(config), nnx.Rngs(params=key))

  # ---- embeddings --------------------------------------------------------------------------

  def level_table(self, level: int) -> jax.Array:
    """Level `level`'s rows of the embedding table: float32[K_level, d]."""
    start = self.layout.offsets[level]
    return self.embed[start:start + self.layout.level_sizes[level]]

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    """int32[...] vocabulary tokens -> float32[..., d].

    `config.recommender.embed_grad` "onehot": the table's gradient is a one-hot product
    (`layers.embed_lookup_onehot_grad`); "scatter": the gather's own scatter-add. Same values.
    """
    if self.embed_grad == "onehot":
      return layers.embed_lookup_onehot_grad(self.embed[...], tokens)
    return jnp.take(self.embed[...], tokens, axis=0)

  def embed_onehot(self, onehots: jax.Array | Sequence[jax.Array]) -> jax.Array:
    """Soft or one-hot codes -> embeddings (differentiable in the one-hots).

    Args:
      onehots: float[..., L+1, Kmax] (entries past a level's size must be 0), or a sequence of
        L+1 arrays float[..., K_p].

    Returns:
      float32[..., L+1, d]; an all-zero one-hot (padding) embeds to zeros.
    """
    num = self.layout.num_levels
    if not isinstance(onehots, (list, tuple)):
      if onehots.shape[-2] != num:
        raise ValueError(f"embed_onehot: expected [..., {num}, Kmax], got {onehots.shape}")
      onehots = [onehots[..., p, :k] for p, k in enumerate(self.layout.level_sizes)]
    if len(onehots) != num:
      raise ValueError(f"embed_onehot: expected {num} levels, got {len(onehots)}")
    return jnp.stack([layers.matmul("...k,kd->...d", o, self.level_table(p), jnp.float32)
                      for p, o in enumerate(onehots)], axis=-2)

  def embed_history_onehot(self, onehots: jax.Array | Sequence[jax.Array]) -> jax.Array:
    """One-hot history `[B, H, L+1, Kmax]` (or per-level `[B, H, K_p]`) -> `[B, H*(L+1), d]`,
    the encoder input for `encode(enc_embeddings=...)`."""
    e = self.embed_onehot(onehots)
    return e.reshape(e.shape[0], -1, e.shape[-1])

  def decoder_inputs(self, dec_targets: jax.Array) -> jax.Array:
    """BOS + the target's first L codes, embedded: float32[B, L+1, d].

    Args:
      dec_targets: int codes [B, L+1] (the SID rows), or float one-hots [B, L+1, Kmax].
    """
    batch = dec_targets.shape[0]
    bos = jnp.broadcast_to(self.embed[BOS], (batch, 1, self.d_model))
    if jnp.issubdtype(dec_targets.dtype, jnp.integer):
      offsets = jnp.asarray(self.layout.offsets[:-1], jnp.int32)
      codes = self.embed_tokens(dec_targets[:, :-1] + offsets)
    else:
      codes = self.embed_onehot(dec_targets)[:, :-1]
    return jnp.concatenate([bos, codes], axis=1)

  # ---- encoder -----------------------------------------------------------------------------

  def encode(self, enc_tokens: jax.Array | None, enc_mask: jax.Array, *,
             enc_embeddings: jax.Array | None = None, deterministic: bool = True,
             rng: jax.Array | None = None) -> jax.Array:
    """Encodes a flattened SID history.

    Args:
      enc_tokens: int32[B, S] vocabulary tokens, S = H*(L+1), item-aligned (pad whole items on
        the left with PAD); or None when `enc_embeddings` is given.
      enc_mask: bool[B, S], False on padding.
      enc_embeddings: float[B, S, d] instead of tokens (e.g. `embed_history_onehot`).
      deterministic: no dropout when True; otherwise `rng` keys it.

    Returns:
      float32[B, S, d].
    """
    keys = _dropout_keys(rng, deterministic, 0)
    x = self.embed_tokens(enc_tokens) if enc_embeddings is None else enc_embeddings
    seq = x.shape[1]
    # Position within item `s % (L+1)` as a tiled table (its gradient is a sum, no scatter-add).
    reps = -(-seq // self.layout.num_levels)
    x = x.astype(jnp.float32) + jnp.tile(self.item_position[...], (reps, 1))[:seq]
    x = layers.dropout(x, self.dropout_rate, keys())
    bias = layers.relative_bias(self.enc_bias[...], seq, seq, True, self.max_distance)
    mask = enc_mask[:, None, None, :]
    params = [{"attn_norm": layer.attn_norm[...], "qkv": layer.attn.qkv[...],
               "o": layer.attn.o[...], "ffn_norm": layer.ffn_norm[...],
               "wi": layer.ffn.wi[...], "wo": layer.ffn.wo[...]} for layer in self.encoder]

    def layer_fn(x: jax.Array, p: dict, key: jax.Array | None) -> jax.Array:
      keys = layers.DropoutKeys(key)
      h = layers.rms_norm(x, p["attn_norm"])
      x = x + layers.dropout(self._self_attend(p["qkv"], p["o"], h, bias, mask, keys),
                             self.dropout_rate, keys())
      h = layers.rms_norm(x, p["ffn_norm"])
      return x + layers.dropout(self._ffn(p["wi"], p["wo"], h, keys), self.dropout_rate,
                                keys())

    x = self._stack(layer_fn, params, x, keys())
    return layers.dropout(layers.rms_norm(x, self.enc_norm[...]), self.dropout_rate, keys())

  # ---- decoder (teacher forced) ------------------------------------------------------------

  def decode(self, enc_out: jax.Array, enc_mask: jax.Array, dec_inputs: jax.Array, *,
             deterministic: bool = True, rng: jax.Array | None = None) -> jax.Array:
    """Teacher-forced decoder.

    Args:
      enc_out: float[B, S, d]; enc_mask: bool[B, S].
      dec_inputs: float[B, T, d] (`decoder_inputs`), T <= L+1.

    Returns:
      float32[B, T, Kmax] logits, step p over level p (padded with NEG).
    """
    keys = _dropout_keys(rng, deterministic, 1)
    steps = dec_inputs.shape[1]
    x = layers.dropout(dec_inputs.astype(jnp.float32), self.dropout_rate, keys())
    bias = layers.relative_bias(self.dec_bias[...], steps, steps, False, self.max_distance)
    causal = jnp.tril(jnp.ones((steps, steps), bool))[None, None]
    cross_mask = enc_mask[:, None, None, :]
    params = [{"self_norm": layer.self_norm[...], "self_qkv": layer.self_attn.qkv[...],
               "self_o": layer.self_attn.o[...], "cross_norm": layer.cross_norm[...],
               "cross_q": layer.cross_attn.q[...], "cross_kv": layer.cross_attn.kv[...],
               "cross_o": layer.cross_attn.o[...], "ffn_norm": layer.ffn_norm[...],
               "wi": layer.ffn.wi[...], "wo": layer.ffn.wo[...]} for layer in self.decoder]

    def layer_fn(x: jax.Array, p: dict, key: jax.Array | None) -> jax.Array:
      keys = layers.DropoutKeys(key)
      h = layers.rms_norm(x, p["self_norm"])
      x = x + layers.dropout(self._self_attend(p["self_qkv"], p["self_o"], h, bias, causal,
                                               keys), self.dropout_rate, keys())
      h = layers.rms_norm(x, p["cross_norm"])
      x = x + layers.dropout(self._cross_attend(p["cross_q"], p["cross_kv"], p["cross_o"], h,
                                                enc_out, cross_mask, keys),
                             self.dropout_rate, keys())
      h = layers.rms_norm(x, p["ffn_norm"])
      return x + layers.dropout(self._ffn(p["wi"], p["wo"], h, keys), self.dropout_rate,
                                keys())

    x = self._stack(layer_fn, params, x, keys())
    h = layers.dropout(layers.rms_norm(x, self.dec_norm[...]), self.dropout_rate, keys())
    _, valid = self.layout.padded_rows()
    kmax = self.layout.max_level_size
    # [T, Kmax, d]: step p's level table as a slice, zero rows past its size (masked below).
    tables = jnp.stack([jnp.pad(self.level_table(p), ((0, kmax - k), (0, 0)))
                        for p, k in enumerate(self.layout.level_sizes[:steps])])
    logits = layers.matmul("btd,tkd->btk", h * self.d_model ** -0.5, tables, self.dtype)
    return jnp.where(valid[:steps], logits, NEG)

  def __call__(self, enc_tokens: jax.Array | None, enc_mask: jax.Array, dec_targets: jax.Array,
               deterministic: bool = True, rng: jax.Array | None = None, *,
               enc_embeddings: jax.Array | None = None) -> jax.Array:
    """Teacher-forced logits of the target SID.

    Args:
      enc_tokens: int32[B, S] (or None with `enc_embeddings` float[B, S, d]).
      enc_mask: bool[B, S].
      dec_targets: int codes [B, L+1] or float one-hots [B, L+1, Kmax].
      deterministic: dropout off; else keyed by `rng`.

    Returns:
      float32[B, L+1, Kmax] (module docstring).
    """
    enc_rng, dec_rng = (None, None) if rng is None else jax.random.split(rng)
    enc_out = self.encode(enc_tokens, enc_mask, enc_embeddings=enc_embeddings,
                          deterministic=deterministic, rng=enc_rng)
    return self.decode(enc_out, enc_mask, self.decoder_inputs(dec_targets),
                       deterministic=deterministic, rng=dec_rng)

  def level_logits(self, h: jax.Array, level: int) -> jax.Array:
    """Output head of step `level`, tied to that level's embeddings: [N, d] -> float32[N, K]."""
    return layers.matmul("nd,kd->nk", h * self.d_model ** -0.5, self.level_table(level),
                         self.dtype)

  # ---- incremental decoding ----------------------------------------------------------------

  def init_cache(self, batch: int, max_len: int | None = None) -> Cache:
    """Empty self-attention KV cache: per decoder layer {"k", "v": [batch, h, max_len, e]}."""
    max_len = self.layout.num_levels if max_len is None else max_len
    _, _, heads, d_kv = self.decoder[0].self_attn.qkv.shape
    shape = (batch, heads, max_len, d_kv)
    return tuple({"k": jnp.zeros(shape, self.dtype), "v": jnp.zeros(shape, self.dtype)}
                 for _ in self.decoder)

  def cross_kv(self, enc_out: jax.Array) -> tuple[jax.Array, ...]:
    """Cross-attention keys/values of every decoder layer, computed once: [2, B, h, S, e]."""
    return tuple(layers.matmul("bsd,cdhe->cbhse", enc_out, layer.cross_attn.kv[...], self.dtype)
                 for layer in self.decoder)

  def decode_step(self, tokens: jax.Array, level: int, cache: Cache,
                  cross: tuple[jax.Array, ...], enc_mask: jax.Array
                  ) -> tuple[jax.Array, Cache]:
    """One decoder step (no dropout) at position `level`, writing its keys/values to `cache`.

    Rows are grouped by user: with `cross` computed for G users, rows g*R .. g*R+R-1 (R = N/G,
    e.g. the beams of user g) attend to user g's encoder output, which is never repeated.

    Args:
      tokens: int32[N] vocabulary tokens fed at this step (BOS at level 0).
      level: static step index, < the cache's max_len.
      cache: from `init_cache(N, max_len)` or the previous step.
      cross: `cross_kv(enc_out)` for G users (G divides N); enc_mask: bool[G, S].

    Returns:
      (float32[N, K_level] logits over level `level`'s codes, updated cache).
    """
    max_len = cache[0]["k"].shape[2]
    x = self.embed_tokens(tokens)[:, None, :]
    bias = layers.relative_bias(self.dec_bias[...], max_len, max_len, False,
                                self.max_distance)[:, level:level + 1]
    self_mask = (jnp.arange(max_len) <= level)[None, None, None, :]
    cross_mask = enc_mask[:, None, None, :]
    rows, users = tokens.shape[0], enc_mask.shape[0]
    if rows % users:
      raise ValueError(f"decode_step: {rows} rows do not group into {users} users")
    new_cache = []
    for layer, layer_cache, kv in zip(self.decoder, cache, cross):
      h = layers.rms_norm(x, layer.self_norm[...])
      q, k, v = layers.matmul("bsd,cdhe->cbhse", h, layer.self_attn.qkv[...], self.dtype)
      k = layer_cache["k"].at[:, :, level].set(k[:, :, 0].astype(self.dtype))
      v = layer_cache["v"].at[:, :, level].set(v[:, :, 0].astype(self.dtype))
      new_cache.append({"k": k, "v": v})
      ctx = layers.attention(q, k, v, bias, self_mask, self.dtype)
      x = x + layers.matmul("bhqe,hed->bqd", ctx, layer.self_attn.o[...], self.dtype)
      h = layers.rms_norm(x, layer.cross_norm[...])
      q = layers.matmul("nd,dhe->nhe", h[:, 0], layer.cross_attn.q[...], self.dtype)
      # A user's rows act as that user's queries: [G*R, h, e] -> [G, h, R, e].
      q = jnp.swapaxes(q.reshape(users, rows // users, *q.shape[1:]), 1, 2)
      ctx = layers.attention(q, kv[0], kv[1], None, cross_mask, self.dtype)
      x = x + layers.matmul("ghre,hed->grd", ctx, layer.cross_attn.o[...],
                            self.dtype).reshape(rows, 1, -1)
      h = layers.rms_norm(x, layer.ffn_norm[...])
      x = x + self._ffn(layer.ffn.wi[...], layer.ffn.wo[...], h, layers.DropoutKeys(None))
    h = layers.rms_norm(x[:, 0], self.dec_norm[...])
    return self.level_logits(h, level), tuple(new_cache)

  # ---- sublayers ---------------------------------------------------------------------------

  def _stack(self, layer_fn: Callable[[jax.Array, dict, jax.Array | None], jax.Array],
             params: list[dict], x: jax.Array, key: jax.Array | None) -> jax.Array:
    """Runs a stack of layers: layer i is `layer_fn(x, params[i], fold_in(key, i))`.

    With `config.recommender.scan_layers` the layers' parameters are stacked `[n, ...]` and
    the stack is one `lax.scan` (one layer's program, compiled once); otherwise the layers are
    unrolled. Same arithmetic and dropout keys either way.
    """
    def layer_key(i):
      return None if key is None else jax.random.fold_in(key, i)

    if not self.scan_layers or len(params) < 2:
      for i, p in enumerate(params):
        x = layer_fn(x, p, layer_key(i))
      return x
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)

    def body(x, p_i):
      p, i = p_i
      return layer_fn(x, p, layer_key(i)), None

    x, _ = jax.lax.scan(body, x, (stacked, jnp.arange(len(params))))
    return x

  def _self_attend(self, qkv: jax.Array, o: jax.Array, x: jax.Array, bias: jax.Array,
                   mask: jax.Array, keys: layers.DropoutKeys) -> jax.Array:
    q, k, v = layers.matmul("bsd,cdhe->cbhse", x, qkv, self.dtype)
    ctx = layers.attention(q, k, v, bias, mask, self.dtype, self.dropout_rate, keys())
    return layers.matmul("bhqe,hed->bqd", ctx, o, self.dtype)

  def _cross_attend(self, wq: jax.Array, wkv: jax.Array, o: jax.Array, x: jax.Array,
                    memory: jax.Array, mask: jax.Array, keys: layers.DropoutKeys) -> jax.Array:
    q = layers.matmul("bqd,dhe->bhqe", x, wq, self.dtype)
    k, v = layers.matmul("bkd,cdhe->cbhke", memory, wkv, self.dtype)
    ctx = layers.attention(q, k, v, None, mask, self.dtype, self.dropout_rate, keys())
    return layers.matmul("bhqe,hed->bqd", ctx, o, self.dtype)

  def _ffn(self, wi: jax.Array, wo: jax.Array, x: jax.Array, keys: layers.DropoutKeys
           ) -> jax.Array:
    return layers.feed_forward(x, wi, wo, self.ffn_kind, self.dtype, self.dropout_rate, keys())


def make_step_fn(model: T5Recommender, enc_out: jax.Array, enc_mask: jax.Array,
                 beam_size: int) -> tuple[StepFn, Cache]:
  """The decoding step for `r3vae_jax.decode.beam_search` (contract in contracts.md).

  Cross-attention keys/values are computed once per user and kept in the closure, not in the
  cache: they are identical for every beam of a user (batch-major rows: b*beam + j is beam j of
  user b), so the beams of user b attend to user b's encoder output as if it were repeated per
  beam, without the memory of repeating it, and the beam search never reorders them.

  Args:
    model: the recommender (call under `jax.jit`).
    enc_out: float[batch, S, d] from `model.encode`; enc_mask: bool[batch, S].
    beam_size: beams per user.

  Returns:
    (step_fn(prev_codes int32[batch*beam], level, cache) -> (logits float32[batch*beam, K_level],
    cache), the empty cache with leaves [batch*beam, h, L+1, e]).
  """
  rows = enc_out.shape[0] * beam_size
  cross = model.cross_kv(enc_out)
  offsets = model.layout.offsets

  def step_fn(prev_codes: jax.Array, level: int, cache: Cache) -> tuple[jax.Array, Cache]:
    if level == 0:
      tokens = jnp.full((rows,), BOS, jnp.int32)
    else:
      tokens = prev_codes.astype(jnp.int32) + offsets[level - 1]
    return model.decode_step(tokens, level, cache, cross, enc_mask)

  return step_fn, model.init_cache(rows)


def count_params(model: nnx.Module) -> int:
  """Number of parameter scalars."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
