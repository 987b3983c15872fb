"""T5 recommender model: token layout, position buckets, cached decoding, one-hot inputs, loss."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from r3vae_jax.configs import default
from r3vae_jax.io import ArtifactError
from r3vae_jax.recommender import layers, loss, model as model_lib, tokens

LEVELS = (8, 8, 8, 4)  # 3 code levels of 8 codes + a collision level of 4


def _config(**overrides):
  c = default.base_config()
  c.sid.levels, c.sid.codebook_size, c.sid.max_collisions = 3, 8, 4
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=2, d_model=32, num_heads=2,
                            d_kv=8, d_ff=64, dropout=0.1, relative_buckets=8,
                            relative_max_distance=16))
  c.recommender.update(overrides)
  return c


def _inputs(batch=3, history=5, seed=0):
  """Random SID histories (the first row left-padded by 2 items) and targets."""
  rng = np.random.default_rng(seed)
  codes = np.stack([rng.integers(0, k, (batch, history)) for k in LEVELS], -1)
  offsets = np.asarray(tokens.TokenLayout(LEVELS).offsets)
  enc = (codes + offsets).reshape(batch, -1).astype(np.int32)
  mask = np.ones_like(enc, bool)
  enc[0, :8], mask[0, :8] = tokens.PAD, False
  targets = np.stack([rng.integers(0, k, batch) for k in LEVELS], -1).astype(np.int32)
  return codes, enc, mask, targets


@pytest.fixture(scope="module")
def model():
  return model_lib.T5Recommender.from_config(_config(), seed=0)


@functools.partial(nnx.jit, static_argnames="deterministic")
def _forward(model, enc, mask, targets, deterministic=True, rng=None):
  return model(enc, mask, targets, deterministic, rng)


def test_token_layout_offsets_and_item_tokens():
  layout = tokens.TokenLayout(LEVELS)
  assert layout.offsets == (2, 10, 18, 26)
  assert layout.vocab_size == 30 and layout.max_level_size == 8
  table = np.array([[0, 0, 0, 0], [7, 1, 2, 3]])
  out = layout.item_tokens(table)
  np.testing.assert_array_equal(out, [[2, 10, 18, 26], [9, 11, 20, 29], [0, 0, 0, 0]])


@pytest.mark.parametrize("table, message", [
    (np.array([[0, 0, 0]]), "shape"),
    (np.array([[0, 0, 0, 4]]), "max_collisions"),
    (np.array([[0, 9, 0, 0]]), "codebook_size"),
    (np.array([[0, 1, 0, 0], [0, 1, 0, 0]]), "unique"),
    (np.array([[0.5, 1, 0, 0]]), "integer"),
])
def test_check_sid_table_rejects_bad_tables(table, message):
  with pytest.raises(ArtifactError, match=message):
    tokens.check_sid_table(table, tokens.TokenLayout(LEVELS))


def test_relative_position_buckets():
  rel = np.arange(-40, 41)
  enc = layers.relative_position_bucket(rel, True, 8, 16)
  dec = layers.relative_position_bucket(rel, False, 8, 16)
  assert enc.min() >= 0 and enc.max() < 8 and dec.max() < 8
  # Bidirectional: keys before and after the query fall in disjoint bucket ranges.
  assert set(enc[rel < 0]).isdisjoint(set(enc[rel > 0]))
  # Causal: every future key shares bucket 0 with the query itself; the past is monotone.
  assert (dec[rel >= 0] == 0).all()
  assert (np.diff(dec[rel <= 0][::-1]) >= 0).all()
  # Exact buckets near the query, a shared last bucket far away.
  assert len(set(dec[37:40])) == 3 and dec[0] == dec[5] == 7  # rel -3..-1; -40, -35


@functools.partial(nnx.jit, static_argnames="beam")
def _cached_logits(model, enc, mask, per_row, beam):
  """Feeds row r the prefix per_row[r] step by step through the KV cache."""
  step_fn, cache = model_lib.make_step_fn(model, model.encode(enc, mask), mask, beam)
  prev, out = jnp.full((per_row.shape[0],), -1, jnp.int32), []
  for level in range(per_row.shape[1]):
    logits, cache = step_fn(prev, level, cache)
    out.append(logits)
    prev = per_row[:, level]
  return out


def test_cached_decoding_equals_full_decoding(model):
  _, enc, mask, targets = _inputs()
  beam = 2
  # Two different target prefixes per user, fed as that user's two beams.
  other = (targets + 1) % np.asarray(LEVELS)
  per_row = np.stack([targets, other], 1).reshape(-1, len(LEVELS))
  full = _forward(model, np.repeat(enc, beam, 0), np.repeat(mask, beam, 0), per_row)
  cached = _cached_logits(model, enc, mask, per_row, beam)
  for level, size in enumerate(LEVELS):
    assert cached[level].shape == (per_row.shape[0], size)
    np.testing.assert_allclose(cached[level], full[:, level, :size], atol=2e-5, rtol=1e-5)
  # The two beams of a user differ after step 0 (they really saw different prefixes).
  assert float(jnp.abs(cached[1][0] - cached[1][1]).max()) > 1e-4
  # Padding past a level's size is a large negative logit.
  assert float(full[:, 3, 4:].max()) == model_lib.NEG


@nnx.jit
def _onehot_vs_tokens(model, codes, enc, mask, targets):
  kmax = max(LEVELS)
  hist = jax.nn.one_hot(codes, kmax) * mask[:, ::len(LEVELS), None, None]
  tgt = jax.nn.one_hot(targets, kmax)

  def objective(h, t):
    logits = model(None, mask, t, enc_embeddings=model.embed_history_onehot(h))
    return loss.sid_loss(logits, t, LEVELS)[0], logits

  (soft, by_onehot), grads = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
      hist, tgt)
  by_tokens = model(enc, mask, targets)
  hard = loss.sid_loss(by_tokens, targets, LEVELS)[0]
  return by_tokens, by_onehot, hard, soft, grads


def test_onehot_inputs_match_tokens_and_carry_gradient(model):
  codes, enc, mask, targets = _inputs()
  by_tokens, by_onehot, hard, soft, (g_hist, g_tgt) = _onehot_vs_tokens(
      model, codes, enc, mask, targets)
  np.testing.assert_allclose(by_onehot, by_tokens, atol=1e-5)
  np.testing.assert_allclose(soft, hard, rtol=1e-6)
  assert float(jnp.abs(g_hist[1:]).sum()) > 0  # recommendation loss reaches the history
  assert float(jnp.abs(g_tgt[:, :3]).sum()) > 0  # ... and the target codes fed to the decoder
  assert float(jnp.abs(g_hist[0, :2]).sum()) == 0  # masked (padding) items get none
  assert bool(jnp.all(jnp.isfinite(g_tgt)))


def test_dropout_is_keyed_scaled_and_needs_a_key(model):
  x = jnp.ones((64, 64))
  a = layers.dropout(x, 0.25, jax.random.key(3))
  np.testing.assert_array_equal(a, layers.dropout(x, 0.25, jax.random.key(3)))
  assert not np.array_equal(a, layers.dropout(x, 0.25, jax.random.key(4)))
  np.testing.assert_allclose(np.unique(a), [0.0, 1 / 0.75], rtol=1e-6)
  assert abs(float((a == 0).mean()) - 0.25) < 0.05
  np.testing.assert_array_equal(layers.dropout(x, 0.25, None), x)
  _, enc, mask, targets = _inputs()
  with pytest.raises(ValueError, match="rng"):
    model(enc, mask, targets, deterministic=False)


def test_gated_gelu_and_bfloat16_compute():
  _, enc, mask, targets = _inputs()
  f32 = model_lib.T5Recommender.from_config(_config(ffn="gated-gelu"), seed=1)
  bf16 = model_lib.T5Recommender.from_config(_config(ffn="gated-gelu", dtype="bfloat16"), seed=1)
  both = nnx.jit(lambda m1, m2: (m1(enc, mask, targets), m2(enc, mask, targets)))
  a, b = both(f32, bf16)
  assert a.dtype == b.dtype == jnp.float32
  assert float(jnp.abs(a - b)[:, :, :4].max()) < 0.1
  assert float(jnp.abs(a - b).max()) > 0  # bf16 really computes in lower precision


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="config.recommender.ffn"):
    model_lib.T5Recommender.from_config(_config(ffn="swish"))
  with pytest.raises(ValueError, match="config.recommender.dtype"):
    model_lib.T5Recommender.from_config(_config(dtype="float16"))


def test_sid_cross_entropy_uses_each_levels_codes_only():
  logits = jnp.zeros((1, 4, 8)).at[0, 3, 4:].set(model_lib.NEG)
  ce = loss.sid_cross_entropy(logits, jnp.zeros((1, 4), jnp.int32), LEVELS)
  np.testing.assert_allclose(ce[0], np.log([8, 8, 8, 4]), rtol=1e-6)
  weighted, aux = loss.sid_loss(jnp.concatenate([logits, logits]),
                                jnp.zeros((2, 4), jnp.int32).at[1].set(1), LEVELS,
                                weights=jnp.array([1.0, 0.0]))
  assert float(aux["weight"]) == 1.0 and np.isfinite(float(weighted))



def test_bucket_padding_leaves_outputs_unchanged(model):
  """A history padded to its length bucket gives the same logits as the same history padded to
  the full length (whole items padded on the left and masked; position bias is relative)."""
  _, enc, mask, targets = _inputs(batch=3, history=5)
  per_item = len(LEVELS)
  # Row 0 holds 3 items: pad it to 8 items, and to 3 (its bucket).
  full_enc = np.pad(enc[:1], ((0, 0), (3 * per_item, 0)), constant_values=tokens.PAD)
  full_mask = np.pad(mask[:1], ((0, 0), (3 * per_item, 0)))
  both = nnx.jit(lambda m: (m(full_enc, full_mask, targets[:1]),
                            m(enc[:1, 2 * per_item:], mask[:1, 2 * per_item:], targets[:1])))
  full, short = both(model)
  assert full_enc.shape[1] == 8 * per_item and short.shape == full.shape
  np.testing.assert_allclose(short, full, atol=2e-5, rtol=1e-5)


def test_embedding_and_position_bias_gradients_match_their_gathers():
  """The one-hot-product gradients (no scatter-add) equal the gathers' own."""
  rng = np.random.default_rng(0)
  table = jnp.asarray(rng.normal(size=(12, 3)), jnp.float32)
  ids = jnp.asarray(np.where(rng.random((4, 9)) < 0.6, tokens.PAD, rng.integers(0, 12, (4, 9))))
  weights = jnp.asarray(rng.normal(size=(4, 9, 3)), jnp.float32)
  grad = lambda f: jax.jit(jax.grad(lambda t: jnp.sum(f(t) * weights)))(table)
  np.testing.assert_array_equal(layers.embed_lookup_onehot_grad(table, ids), table[ids])
  np.testing.assert_allclose(grad(lambda t: layers.embed_lookup_onehot_grad(t, ids)),
                             grad(lambda t: t[ids]), atol=1e-6, rtol=1e-6)
  buckets = layers.relative_position_bucket(np.arange(9)[None] - np.arange(4)[:, None], True,
                                            12, 16)
  by_gather = lambda t: jnp.transpose(t[buckets], (2, 0, 1))
  by_product = lambda t: jnp.transpose(layers.relative_bias(t, 4, 9, True, 16), (1, 2, 0))
  np.testing.assert_array_equal(by_product(table), jnp.transpose(by_gather(table), (1, 2, 0)))
  np.testing.assert_allclose(grad(by_product), grad(lambda t: t[buckets]), rtol=1e-6,
                             atol=1e-6)
  with pytest.raises(ValueError, match="config.recommender.embed_grad"):
    model_lib.T5Recommender.from_config(_config(embed_grad="dense"))


def test_scanned_layer_stacks_equal_unrolled_ones():
  """`scan_layers` compiles one layer per stack; logits, dropout masks and gradients are those
  of the unrolled stacks."""
  _, enc, mask, targets = _inputs()
  small = dict(num_encoder_layers=2, d_model=16, d_kv=4, d_ff=16)
  unrolled = model_lib.T5Recommender.from_config(_config(**small), seed=2)
  scanned = model_lib.T5Recommender.from_config(_config(**small, scan_layers=True), seed=2)
  assert scanned.scan_layers and not unrolled.scan_layers
  key = jax.random.key(5)

  def loss_and_grad(m):
    def objective(m):
      logits = m(enc, mask, targets, deterministic=False, rng=key)
      return loss.sid_loss(logits, targets, LEVELS)[0]
    return nnx.value_and_grad(objective)(m)

  (a, ga), (b, gb) = nnx.jit(lambda m1, m2: (loss_and_grad(m1), loss_and_grad(m2)))(
      unrolled, scanned)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
