"""RQ-VAE and R3-VAE models: shapes, codes, gradient paths, reference split, ablation flags."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r3vae_jax import quantize
from r3vae_jax.tokenizer import models
from r3vae_jax.tokenizer import quantizers
from r3vae_jax.tokenizer import programs

D_IN, LATENT, LEVELS, K = 12, 6, 2, 5


def _x(n=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(n, D_IN)), jnp.float32)


# The first version's variant (MLP encoder, softmax ratings, soft SC/PD over the batch).
SOFT = dict(encoder="mlp", normalize=False, reference_vector=True, rating="soft",
            temperature=0.5, beta=0.25, recon_loss="mse", sc_form="soft_pairs",
            pd_form="soft_centres", sc_weight=0.1, pd_weight=0.1, use_sc=True, use_pd=True,
            pd_t=2.0)
# The default recipe (RecBoard's): identity encoder, top-1 cosine rating, cosine losses.
RECBOARD = dict(SOFT, encoder="identity", normalize=True, rating="cosine_top1",
                recon_loss="cosine", sc_form="prefix_cosine", pd_form="codebook", sc_weight=0.1,
                pd_weight=0.05)


def _r3vae(**kw):
  return models.R3VAE(D_IN, (8,), LATENT, LEVELS, K, rngs=nnx.Rngs(0), **{**SOFT, **kw})


def _loss_and_grads(model, x):
  """(forward output, gradient of the loss w.r.t. every parameter) from one jitted call."""
  graphdef, params = nnx.split(model)
  fn = lambda p: (lambda out: (out.loss, out))(nnx.merge(graphdef, p)(x))
  (_, out), grads = jax.jit(jax.value_and_grad(fn, has_aux=True))(nnx.to_pure_dict(params))
  return out, grads, nnx.to_pure_dict(params)


def _np_mlp(layers, x):
  """The MLP in numpy (float64): ReLU between layers."""
  for i in range(len(layers)):
    x = x @ np.asarray(layers[i]["kernel"], np.float64) + np.asarray(layers[i]["bias"])
    if i < len(layers) - 1:
      x = np.maximum(x, 0.0)
  return x


def _nonzero(tree):
  return all(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree.leaves(tree))


def test_rqvae_codes_are_the_hard_residual_codes_and_gradients_flow():
  model = models.RQVAE(D_IN, (8,), LATENT, LEVELS, K, beta=0.25, rngs=nnx.Rngs(0))
  x = _x()
  out, grads, p = _loss_and_grads(model, x)
  assert out.x_hat.shape == (16, D_IN) and out.codes.shape == (16, LEVELS)
  residual = _np_mlp(p["encoder"]["layers"], np.asarray(x, np.float64))
  books = np.asarray(p["codebooks"], np.float64)
  total = np.zeros_like(residual)
  for level in range(LEVELS):
    code = np.argmin(((residual[:, None] - books[level][None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(out.codes[:, level], code)
    total += books[level][code]
    residual -= books[level][code]
  np.testing.assert_allclose(out.x_hat, _np_mlp(p["decoder"]["layers"], total), atol=1e-4)
  assert float(out.loss) == pytest.approx(float(out.terms["recon"] + out.terms["vq"]), rel=1e-6)
  assert _nonzero(grads["encoder"]) and _nonzero(grads["decoder"])
  # The codebook learns only from the codebook term, and only at chosen codes.
  used = np.zeros((LEVELS, K), bool)
  used[np.arange(LEVELS)[None, :], np.asarray(out.codes)] = True
  g = np.abs(np.asarray(grads["codebooks"])).sum(-1)
  assert np.all(g[used] > 0) and np.all(g[~used] == 0)


def test_straight_through_passes_the_decoder_gradient_to_the_latent_once():
  z = jnp.asarray(np.random.default_rng(1).normal(size=(4, LATENT)), jnp.float32)
  books = jnp.asarray(np.random.default_rng(2).normal(size=(LEVELS, K, LATENT)), jnp.float32)
  g = jax.jit(jax.grad(lambda z: jnp.sum(quantizers.residual_vq(z, books, 0.0)[0] * 3.0)))(z)
  np.testing.assert_allclose(g, 3.0 * jnp.ones_like(z))


def test_reference_split_removes_the_reference_direction():
  z = _x(8)[:, :LATENT]
  r = jnp.arange(1.0, LATENT + 1.0)
  alpha, e0 = jax.jit(quantizers.reference_split)(z, r)
  np.testing.assert_allclose(e0 @ r, 0.0, atol=1e-4)
  np.testing.assert_allclose(e0 + alpha[:, None] * r, z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rating", ["soft", "hard"])
def test_r3vae_forward_codes_and_gradients(rating):
  model = _r3vae(rating=rating)
  x = _x()
  out, grads, p = _loss_and_grads(model, x)
  assert out.codes.shape == (16, LEVELS) and out.codes.dtype == jnp.int32
  z = _np_mlp(p["encoder"]["layers"], np.asarray(x, np.float64))
  r = np.asarray(p["reference"], np.float64)
  alpha = z @ r / (r @ r)
  residual, total = z - alpha[:, None] * r, alpha[:, None] * r
  unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)
  for level in range(LEVELS):
    book = np.asarray(p["codebooks"][level], np.float64)
    ratings = unit(residual) @ unit(book).T / 0.5
    w = np.exp(ratings - ratings.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    code = np.argmax(w, axis=1)
    np.testing.assert_array_equal(out.codes[:, level], code)
    q = w @ book if rating == "soft" else w[np.arange(16), code][:, None] * book[code]
    total, residual = total + q, residual - q
  np.testing.assert_allclose(out.x_hat, _np_mlp(p["decoder"]["layers"], total), atol=1e-4)
  expected = (out.terms["recon"] - 0.1 * out.terms["soft_sc"] + 0.1 * out.terms["soft_pd"])
  assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
  assert _nonzero(grads["reference"]) and _nonzero(grads["encoder"])
  assert float(jnp.abs(grads["codebooks"]).sum()) > 0


def _unit(a):
  return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _np_pd(book, t=2.0):
  cos = _unit(book) @ _unit(book).T
  off = ~np.eye(len(book), dtype=bool)
  return np.log(np.mean(np.exp(-t * (1.0 - cos[off]))))


def test_recboard_recipe_matches_a_numpy_reference_and_trains_every_parameter():
  """Identity encoder on unit vectors, top-1 cosine x unit code, 1 - cos losses, PD over
  codewords (tokenizer/README.md)."""
  model = models.R3VAE(D_IN, (8,), LATENT, LEVELS, K, rngs=nnx.Rngs(0), **RECBOARD)
  assert model.encoder is None and model.codebooks.shape == (LEVELS, K, D_IN)
  x = _x()
  out, grads, p = _loss_and_grads(model, x)
  z = _unit(np.asarray(x, np.float64))
  r = np.asarray(p["reference"], np.float64)
  anchor = (z @ r / (r @ r))[:, None] * r
  e0 = residual = z - anchor
  estimate, sc = anchor.copy(), 0.0
  for level in range(LEVELS):
    book = _unit(np.asarray(p["codebooks"][level], np.float64))
    cos = _unit(residual) @ book.T
    code = cos.argmax(1)
    np.testing.assert_array_equal(out.codes[:, level], code)
    q = cos[np.arange(16), code][:, None] * book[code]
    estimate, residual = estimate + q, residual - q
    sc += 1.0 - np.mean(np.sum(_unit(e0) * _unit(estimate), -1))
  x_hat = _np_mlp(p["decoder"]["layers"], estimate)
  np.testing.assert_allclose(out.x_hat, x_hat, atol=1e-4)
  recon = 1.0 - np.mean(np.sum(_unit(x_hat) * _unit(np.asarray(x, np.float64)), -1))
  pd = np.mean([_np_pd(np.asarray(b, np.float64)) for b in p["codebooks"]])
  for term, value in (("recon", recon), ("sc_loss", sc / LEVELS), ("pd", pd)):
    assert float(out.terms[term]) == pytest.approx(value, rel=1e-4, abs=1e-6), term
  assert float(out.loss) == pytest.approx(recon + 0.1 * sc / LEVELS + 0.05 * pd, rel=1e-4)
  assert _nonzero(grads["reference"]) and _nonzero(grads["decoder"])
  assert np.all(np.abs(np.asarray(grads["codebooks"])).sum((1, 2)) > 0)  # every level learns


def test_r3vae_ablation_flags():
  x = _x()
  plain = _r3vae(reference_vector=False, use_sc=False, use_pd=False)
  assert plain.reference is None and "reference" not in nnx.to_pure_dict(nnx.state(plain))
  for kw, terms in ((dict(reference_vector=False, use_sc=False, use_pd=False), {"recon"}),
                    (dict(use_pd=False), {"recon", "soft_sc"}),
                    (dict(use_sc=False), {"recon", "soft_pd"}),
                    (dict(RECBOARD), {"recon", "sc_loss", "pd"}),
                    (dict(RECBOARD, use_sc=False), {"recon", "pd"}),
                    (dict(RECBOARD, rating="straight_through"), {"recon", "vq", "sc_loss", "pd"})):
    assert set(jax.eval_shape(_r3vae(**kw), x).terms) == terms
  for field in ("rating", "encoder", "recon_loss", "sc_form", "pd_form"):
    with pytest.raises(ValueError, match=f"r3vae.{field}"):
      _r3vae(**{field: "median"})
  with pytest.raises(ValueError, match="soft_pairs"):
    _r3vae(rating="straight_through")


def test_straight_through_ablation_codes_are_nearest_codes_of_e0():
  model = _r3vae(**dict(RECBOARD, rating="straight_through"))
  x = _x()
  out, grads, p = _loss_and_grads(model, x)
  z = _unit(np.asarray(x, np.float64))
  r = np.asarray(p["reference"], np.float64)
  residual = z - (z @ r / (r @ r))[:, None] * r
  for level in range(LEVELS):
    book = np.asarray(p["codebooks"][level], np.float64)
    code = np.argmin(((residual[:, None] - book[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(out.codes[:, level], code)
    residual = residual - book[code]
  assert _nonzero(grads["reference"]) and float(out.terms["vq"]) > 0


def test_kmeans_init_fits_the_codebooks_on_e0():
  model = _r3vae()
  x = _x(40)
  programs.kmeans_init(model, x, jax.random.PRNGKey(0), iters=5, max_items=1000)
  p = nnx.to_pure_dict(nnx.state(model))
  np.testing.assert_allclose(model.reference[...], _np_mlp(p["encoder"]["layers"], x).mean(0),
                             rtol=1e-4, atol=1e-5)
  codes, _, _ = quantize.residual_quantize(jax.jit(model.init_latents)(x), model.codebooks[...])
  assert len(np.unique(np.asarray(codes[:, 0]))) == K  # every first-level code is used
  with pytest.raises(ValueError, match="at least codebook_size=5 items"):
    programs.kmeans_init(_r3vae(), x[:3], jax.random.PRNGKey(0), iters=5, max_items=1000)


def test_rqvae_balanced_training_assignment_and_nearest_sid_pass():
  """balance_epsilon > 0 trains on the batch's balanced codes; SIDs stay nearest codes."""
  plain = models.RQVAE(D_IN, (8,), LATENT, LEVELS, K, beta=0.25, rngs=nnx.Rngs(0))
  balanced = models.RQVAE(D_IN, (8,), LATENT, LEVELS, K, beta=0.25, balance_epsilon=0.003,
                          rngs=nnx.Rngs(0))
  x = jnp.asarray(np.random.default_rng(4).normal(size=(64, D_IN)) + 3.0, jnp.float32)
  nearest = plain(x).codes
  np.testing.assert_array_equal(models.sid_pass(balanced, x).codes, nearest)
  trained = balanced(x).codes
  z = balanced.encoder(x)
  want = quantize.balanced_codes(quantize.nearest_code(z, balanced.codebooks[0])[1], 0.003, 50)
  np.testing.assert_array_equal(trained[:, 0], want)
  used = lambda codes: len(np.unique(np.asarray(codes[:, 0])))
  assert used(trained) > used(nearest)


def test_rqvae_rotation_estimator_same_forward_other_gradient():
  """The rotation trick changes only the backward pass: same codes, output and loss; the
  encoder gets a different, finite gradient (down the residual chain)."""
  x = _x()
  straight = models.RQVAE(D_IN, (8,), LATENT, LEVELS, K, beta=0.25, rngs=nnx.Rngs(0))
  rotation = models.RQVAE(D_IN, (8,), LATENT, LEVELS, K, beta=0.25, estimator="rotation",
                          rngs=nnx.Rngs(0))
  out_s, grads_s, _ = _loss_and_grads(straight, x)
  out_r, grads_r, _ = _loss_and_grads(rotation, x)
  np.testing.assert_array_equal(out_r.codes, out_s.codes)
  np.testing.assert_allclose(out_r.x_hat, out_s.x_hat, atol=1e-6)
  assert float(out_r.loss) == pytest.approx(float(out_s.loss), rel=1e-6)
  enc_s = jax.tree.leaves(grads_s["encoder"])
  enc_r = jax.tree.leaves(grads_r["encoder"])
  assert all(np.isfinite(np.asarray(g)).all() for g in enc_r)
  assert any(not np.allclose(a, b) for a, b in zip(enc_s, enc_r))
  np.testing.assert_allclose(grads_r["codebooks"], grads_s["codebooks"], atol=1e-6)
  with pytest.raises(ValueError, match="estimator must be one of"):
    quantizers.residual_vq(jnp.ones((2, LATENT)), jnp.ones((1, K, LATENT)), 0.25,
                           estimator="gumbel")


def test_rqvae_centred_inputs_are_shift_invariant():
  """center_inputs: moving every item vector by one constant moves the reconstruction by it and
  changes neither the codes nor the loss (the stored mean moves with the data)."""
  x = _x()
  shift = jnp.asarray(np.random.default_rng(5).normal(size=(D_IN,)) * 3.0, jnp.float32)
  model = models.RQVAE(D_IN, (8,), LATENT, LEVELS, K, beta=0.25, center_inputs=True,
                       rngs=nnx.Rngs(0))
  model.input_mean[...] = jnp.mean(x, axis=0)
  base = model(x)
  model.input_mean[...] = jnp.mean(x + shift, axis=0)
  moved = model(x + shift)
  np.testing.assert_array_equal(moved.codes, base.codes)
  np.testing.assert_allclose(moved.x_hat, base.x_hat + shift, atol=1e-4)
  assert float(moved.loss) == pytest.approx(float(base.loss), rel=1e-4)
  # The mean is a data statistic: no gradient, no weight decay.
  _, grads, params = _loss_and_grads(model, x)
  np.testing.assert_array_equal(grads["input_mean"], 0.0)
  mask = models.weight_decay_mask(params)
  assert mask["input_mean"] is False and all(jax.tree.leaves(mask["encoder"]))
