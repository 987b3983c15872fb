"""The recommendation loss reaches the tokenizer encoder and every codeword (not if detached)."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r3vae_jax import quantize
from r3vae_jax.configs import default
from r3vae_jax.diger import assign
from r3vae_jax.diger import joint
from r3vae_jax.diger import noise
from r3vae_jax.recommender.model import T5Recommender
from r3vae_jax.tokenizer import models

N, D, L, K, C = 40, 12, 2, 8, 4


def _setup():
  c = default.get_config("diger")
  c.sid.update(dict(levels=L, codebook_size=K, max_collisions=C))
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=16, num_heads=2,
                            d_kv=8, d_ff=32, dropout=0.0))
  tokenizer = models.RQVAE(D, (16,), 6, L, K, 0.25, rngs=nnx.Rngs(params=0))
  recommender = T5Recommender.from_config(c, 0)
  rng = np.random.default_rng(0)
  data = dict(
      vectors=jnp.asarray(rng.normal(size=(N, D)), jnp.float32),
      table=jnp.asarray(np.c_[rng.integers(0, K, (N, L)), rng.integers(0, C, N)], jnp.int32),
      histories=jnp.asarray(rng.integers(-1, N, (6, 5)), jnp.int32).at[:, -1].set(3),
      targets=jnp.asarray(rng.integers(0, N, 6), jnp.int32))
  return tokenizer, recommender, data


def _rec_grads(decay: str, detach: bool, reader_codes: str = "noisy"):
  """Gradient of the recommendation loss alone w.r.t. the tokenizer parameters (half of the
  codes hot, so both noisy and greedy items are in the batch)."""
  tokenizer, recommender, d = _setup()
  cfg = joint.JointConfig(decay=decay, tau=2.0, noise_scale=1.0, hot_factor=1.5,
                          sigma_lambda=1.0, beta=0.25, recon_weight=0.0, vq_weight=0.0,
                          detach=detach, reader_codes=reader_codes)
  tok_graph, tok_params = nnx.split(tokenizer)
  usage = jnp.tile(jnp.where(jnp.arange(K) % 2 == 0, 1.8, 0.2) / K, (L, 1))

  def rec_loss(params):
    _, aux = joint.joint_loss(nnx.merge(tok_graph, params), recommender, jnp.ones(L),
                              d["histories"], d["targets"], jnp.ones(6), d["vectors"],
                              d["table"], usage,
                              jax.random.key(1, impl="unsafe_rbg"), cfg)
    return aux["rec"]

  return nnx.to_pure_dict(jax.jit(jax.grad(rec_loss))(tok_params))


def _aux(tokenizer, recommender, d, usage, cfg, vectors=None):
  """The joint loss's aux terms, as one compiled program (eager, every op compiles alone)."""
  run = jax.jit(lambda v: joint.joint_loss(
      tokenizer, recommender, jnp.ones(L), d["histories"], d["targets"], jnp.ones(6), v,
      d["table"], usage, jax.random.key(1, impl="unsafe_rbg"), cfg)[1])
  return run(d["vectors"] if vectors is None else vectors)


def test_recommendation_loss_reaches_encoder_and_every_codeword():
  grads = _rec_grads("frequency", detach=False)
  books = np.asarray(grads["codebooks"])
  assert books.shape == (L, K, 6)
  # Every codeword of every level gets gradient (through y @ C and the softmax over all codes).
  assert np.all(np.linalg.norm(books, axis=-1) > 0), np.linalg.norm(books, axis=-1)
  for layer in grads["encoder"]["layers"].values():
    assert np.abs(np.asarray(layer["kernel"])).sum() > 0
  # The decoder only sees the reconstruction loss, which is off here.
  for layer in grads["decoder"]["layers"].values():
    assert np.abs(np.asarray(layer["kernel"])).sum() == 0


def test_detached_indicators_cut_the_path():
  """The released code's detached SID table: the tokenizer gets no recommendation gradient."""
  grads = _rec_grads("frequency", detach=True)
  assert all(float(jnp.abs(g).sum()) == 0.0 for g in jax.tree.leaves(grads))


def test_forward_is_exact_residual_quantisation_without_noise():
  rng = np.random.default_rng(2)
  z = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
  books = jnp.asarray(rng.normal(size=(3, K, 6)), jnp.float32)
  a = jax.jit(assign.gumbel_residual)(z, books, jax.random.key(0), 2.0, jnp.zeros((32, 3)))
  codes, _, per_level = quantize.residual_quantize(z, books)
  np.testing.assert_array_equal(a.codes, codes)
  np.testing.assert_array_equal(a.greedy, codes)
  np.testing.assert_array_equal(a.indicators, jax.nn.one_hot(codes, K))
  np.testing.assert_allclose(a.quantized, per_level, rtol=1e-6)


def test_noise_only_moves_items_with_a_noise_scale():
  rng = np.random.default_rng(3)
  z = jnp.asarray(rng.normal(size=(400, 6)), jnp.float32)
  books = jnp.asarray(rng.normal(size=(2, K, 6)) * 0.1, jnp.float32)
  noisy = jnp.asarray(np.arange(400) % 2 == 0)
  scales = jnp.where(noisy[:, None], 5.0, 0.0) * jnp.ones((400, 2))
  a = jax.jit(assign.gumbel_residual)(z, books, jax.random.key(0), 1.0, scales)
  moved = np.asarray(a.codes[:, 0] != a.greedy[:, 0])
  assert not moved[~np.asarray(noisy)].any()
  assert moved[np.asarray(noisy)].mean() > 0.5


def test_normalized_logits_keep_greedy_codes_and_make_noise_relative():
  """range_normalize is monotone (greedy codes unchanged) and bounds the logits to [-1, 1]. On a
  small latent (RQ-VAE scale) raw logits + Gumbel noise move almost every item to another code at
  any scale; normalized, the scale matters (0.1: far fewer moves)."""
  rng = np.random.default_rng(4)
  z = jnp.asarray(rng.normal(size=(512, 6)) * 0.02, jnp.float32)
  books = jnp.asarray(rng.normal(size=(2, K, 6)) * 0.02, jnp.float32)
  logits = quantize.pairwise_scores(z, books[0], "l2")
  normed = assign.range_normalize(logits)
  np.testing.assert_allclose([normed.min(), normed.max()], [-1.0, 1.0], atol=1e-3)
  np.testing.assert_array_equal(jnp.argmax(normed, -1), jnp.argmax(logits, -1))
  greedy = assign.gumbel_residual(z, books, jax.random.key(0), 2.0, jnp.zeros((512, 2)),
                                  normalize=True)
  np.testing.assert_array_equal(greedy.codes, quantize.residual_quantize(z, books)[0])
  moved = {}
  for normalize in (False, True):
    a = assign.gumbel_residual(z, books, jax.random.key(1), 2.0, jnp.full((512, 2), 0.1),
                               normalize=normalize)
    moved[normalize] = float(jnp.mean(a.codes[:, 0] != a.greedy[:, 0]))
  assert moved[False] > 0.8 and moved[True] < moved[False] - 0.2, moved


def test_greedy_targets_keep_the_noise_on_the_history():
  tokenizer, recommender, d = _setup()
  usage = jnp.full((L, K), 1.0 / K)
  fractions = {}
  for noisy_targets in (True, False):
    cfg = joint.JointConfig(decay="gumbel", tau=2.0, noise_scale=1.0, hot_factor=1.5,
                            sigma_lambda=1.0, beta=0.25, recon_weight=0.0, vq_weight=0.0,
                            noisy_targets=noisy_targets)
    fractions[noisy_targets] = float(_aux(tokenizer, recommender, d, usage, cfg)["noisy_fraction"])
  history_items = int((np.asarray(d["histories"]) >= 0).sum())
  assert fractions[True] == 1.0
  assert fractions[False] == pytest.approx(history_items / (history_items + 6), rel=1e-6)


def test_annealed_noise_factor_zero_is_the_noiseless_loss():
  """`noise_factor` (the annealing schedule's value) scales every item's noise: at 0 the
  plain-Gumbel loss equals the no-noise one, at 1 the noise moves codes."""
  tokenizer, recommender, d = _setup()
  usage = jnp.full((L, K), 1.0 / K)

  @jax.jit
  def loss(decay_id, factor):
    cfg = joint.JointConfig(decay="gumbel", tau=2.0, noise_scale=1.0, hot_factor=1.5,
                            sigma_lambda=1.0, beta=0.25, recon_weight=1.0, vq_weight=1.0)
    return joint.joint_loss(tokenizer, recommender, jnp.ones(L), d["histories"], d["targets"],
                            jnp.ones(6), d["vectors"], d["table"], usage,
                            jax.random.key(1, impl="unsafe_rbg"), cfg, decay_id, factor)

  gumbel, none = noise.decay_index("gumbel"), noise.decay_index("none")
  off, off_aux = loss(gumbel, jnp.float32(0.0))
  plain, _ = loss(none, jnp.float32(1.0))
  on, on_aux = loss(gumbel, jnp.float32(1.0))
  np.testing.assert_allclose(off, plain, rtol=1e-6)
  assert float(off_aux["noisy_fraction"]) == 0.0 and float(on_aux["noisy_fraction"]) == 1.0
  assert float(off_aux["noise_factor"]) == 0.0
  assert abs(float(on) - float(plain)) > 1e-4


def test_greedy_reader_sees_noiseless_codes_and_the_noise_moves_only_the_tokenizer_losses():
  """reader_codes="greedy": under full Gumbel noise the recommendation term (forward and its
  gradient) is the noiseless one, the VQ term is computed on noisy codes, and the recommendation
  loss still reaches every codeword."""
  tokenizer, recommender, d = _setup()
  usage = jnp.full((L, K), 1.0 / K)

  def terms(decay, reader_codes):
    cfg = joint.JointConfig(decay=decay, tau=2.0, noise_scale=5.0, hot_factor=1.5,
                            sigma_lambda=1.0, beta=0.25, recon_weight=1.0, vq_weight=1.0,
                            reader_codes=reader_codes)
    return _aux(tokenizer, recommender, d, usage, cfg)

  greedy_reader, noiseless = terms("gumbel", "greedy"), terms("none", "noisy")
  noisy_reader = terms("gumbel", "noisy")
  np.testing.assert_allclose(greedy_reader["rec"], noiseless["rec"], rtol=1e-6)
  assert float(greedy_reader["noisy_fraction"]) == 1.0
  assert abs(float(greedy_reader["vq"]) - float(noiseless["vq"])) > 1e-6
  np.testing.assert_allclose(greedy_reader["vq"], noisy_reader["vq"], rtol=1e-6)
  assert abs(float(noisy_reader["rec"]) - float(noiseless["rec"])) > 1e-4

  grads = _rec_grads("gumbel", detach=False, reader_codes="greedy")
  reference = _rec_grads("none", detach=False)
  books = np.asarray(grads["codebooks"])
  assert np.all(np.linalg.norm(books, axis=-1) > 0)
  np.testing.assert_allclose(books, np.asarray(reference["codebooks"]), rtol=1e-4, atol=1e-7)


def test_joint_loss_with_a_centred_tokenizer_is_shift_invariant():
  """A centred RQ-VAE (`rqvae.center_inputs`) in the joint loss: shifting every item vector
  and the stored mean by one constant changes no term."""
  _, recommender, d = _setup()
  cfg = joint.JointConfig(decay="none", tau=2.0, noise_scale=0.0, hot_factor=1.5,
                          sigma_lambda=1.0, beta=0.25, recon_weight=1.0, vq_weight=1.0,
                          detach=True, reader_codes="greedy")
  usage = jnp.full((L, K), 1.0 / K)
  shift = jnp.asarray(np.random.default_rng(2).normal(size=(D,)) * 5.0, jnp.float32)
  terms = []
  for vectors in (d["vectors"], d["vectors"] + shift):
    tokenizer = models.RQVAE(D, (16,), 6, L, K, 0.25, center_inputs=True,
                             rngs=nnx.Rngs(params=0))
    tokenizer.input_mean[...] = jnp.mean(vectors, axis=0)
    aux = _aux(tokenizer, recommender, d, usage, cfg, vectors)
    terms.append({k: float(aux[k]) for k in ("rec", "recon", "vq")})
  for k in ("rec", "recon", "vq"):
    assert terms[1][k] == pytest.approx(terms[0][k], rel=1e-4, abs=1e-6), k


def test_left_padding_changes_neither_the_joint_loss_nor_its_gradients():
  """A length bucket cuts histories to fewer slots (`rec_data.bucket_history`): histories of
  at most 3 items padded to 5 or to 3 give the same loss and the same gradients of every
  tokenizer and recommender parameter (noise off, dropout 0)."""
  tokenizer, recommender, d = _setup()
  rng = np.random.default_rng(4)
  lengths = np.array([1, 3, 2, 3, 1, 2])
  histories = np.full((6, 5), -1, np.int32)
  for row, n in enumerate(lengths):
    histories[row, 5 - n:] = rng.integers(0, N, n)
  cfg = joint.JointConfig(decay="none", tau=2.0, noise_scale=1.0, hot_factor=1.5,
                          sigma_lambda=1.0, beta=0.25, recon_weight=1.0, vq_weight=1.0)
  tok_graph, tok_params = nnx.split(tokenizer)
  rec_graph, rec_params = nnx.split(recommender)
  usage = jnp.full((L, K), 1.0 / K)

  @jax.jit
  def loss(params, history):
    total, _ = joint.joint_loss(nnx.merge(tok_graph, params[0]), nnx.merge(rec_graph, params[1]),
                                jnp.ones(L), history, d["targets"], jnp.ones(6), d["vectors"],
                                d["table"], usage, jax.random.key(1, impl="unsafe_rbg"), cfg)
    return total

  params = (tok_params, rec_params)
  full, full_grads = jax.value_and_grad(loss)(params, jnp.asarray(histories))
  cut, cut_grads = jax.value_and_grad(loss)(params, jnp.asarray(histories[:, -3:]))
  np.testing.assert_allclose(cut, full, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(cut_grads), jax.tree.leaves(full_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(full_grads[1])) > 0
