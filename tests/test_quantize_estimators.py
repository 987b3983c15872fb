"""Custom VJPs of quantize/estimators.py checked against their definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from r3vae_jax import quantize


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def test_straight_through_forward_and_identity_backward():
  x = jnp.arange(6.0).reshape(2, 3)
  q = -jnp.ones((2, 3))
  ct = jnp.array([[1.0, -2.0, 3.0], [0.5, 0.0, 4.0]])
  out, vjp = jax.vjp(quantize.straight_through, x, q)
  np.testing.assert_array_equal(out, q)
  dx, dq = vjp(ct)
  np.testing.assert_array_equal(dx, ct)
  np.testing.assert_array_equal(dq, np.zeros((2, 3)))


@pytest.mark.parametrize("codebook_grad", [False, True])
def test_straight_through_codebook_path(codebook_grad):
  """Through a gather `q = codebook[codes]`, the codebook gets the scattered cotangent or 0."""
  x = jnp.array([[0.1, 0.2], [0.3, -0.1], [2.0, 2.0]])
  codebook = jnp.array([[0.0, 0.0], [2.0, 2.0]])
  codes = jnp.array([0, 0, 1])
  weights = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])

  def loss(x, codebook):
    q = quantize.straight_through(x, codebook[codes], codebook_grad)
    return jnp.sum(weights * q)

  dx, dcb = jax.grad(loss, argnums=(0, 1))(x, codebook)
  np.testing.assert_array_equal(dx, weights)
  expected = np.array([[4.0, 6.0], [5.0, 6.0]]) if codebook_grad else np.zeros((2, 2))
  np.testing.assert_array_equal(dcb, expected)


def test_straight_through_jit_vmap():
  x = jnp.ones((4, 3))
  q = jnp.zeros((4, 3))
  f = lambda x, q: jnp.sum(quantize.straight_through(x, q) ** 2 + x)
  g_eager = jax.grad(f)(x, q + 1.0)
  g_jit = jax.jit(jax.grad(f))(x, q + 1.0)
  g_vmap = jax.vmap(jax.grad(f))(x[:, None], q[:, None] + 1.0)[:, 0]
  np.testing.assert_array_equal(g_eager, g_jit)
  np.testing.assert_array_equal(g_eager, g_vmap)
  np.testing.assert_array_equal(g_eager, 3.0 * np.ones((4, 3)))


def _soft_reference(logits, key, tau, scale):
  noise = jax.random.gumbel(key, logits.shape, dtype=logits.dtype)
  return jax.nn.softmax((logits + scale * noise) / tau, axis=-1)


@pytest.mark.parametrize("scale_shape", [(), (5, 1), (7,)])
def test_gumbel_hard_forward_is_one_hot_of_noisy_argmax(scale_shape):
  key = jax.random.key(3)
  logits = jax.random.normal(jax.random.key(1), (5, 7))
  scale = jnp.full(scale_shape, 0.8)
  y = quantize.gumbel_softmax(logits, key, 2.0, scale, hard=True)
  soft = _soft_reference(logits, key, 2.0, scale)
  np.testing.assert_array_equal(y, jax.nn.one_hot(jnp.argmax(soft, -1), 7))
  y_soft = quantize.gumbel_softmax(logits, key, 2.0, scale, hard=False)
  np.testing.assert_allclose(y_soft, soft, rtol=1e-6)


@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("scale_shape", [(), (5, 1), (7,)])
def test_gumbel_backward_is_gradient_of_soft_sample(hard, scale_shape):
  """The VJP w.r.t. logits, tau and noise scale equals autodiff of softmax((l + s g) / tau)."""
  key = jax.random.key(0)
  logits = jax.random.normal(jax.random.key(1), (5, 7))
  scale = 0.5 + jax.random.uniform(jax.random.key(2), scale_shape)
  ct = jax.random.normal(jax.random.key(4), (5, 7))
  tau = jnp.float32(1.7)
  _, vjp = jax.vjp(lambda l, t, s: quantize.gumbel_softmax(l, key, t, s, hard), logits, tau,
                   scale)
  _, ref_vjp = jax.vjp(lambda l, t, s: _soft_reference(l, key, t, s), logits, tau, scale)
  for got, want in zip(vjp(ct), ref_vjp(ct)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  d_scale = vjp(ct)[2]
  assert np.all(np.abs(np.asarray(d_scale)) > 0), "noise scale must receive gradient"


def test_gumbel_soft_mode_check_grads(x64):
  key = jax.random.key(5)
  logits = jax.random.normal(jax.random.key(6), (3, 4), dtype=jnp.float64)
  f = lambda l, t, s: quantize.gumbel_softmax(l, key, t, s, hard=False)
  check_grads(f, (logits, jnp.float64(1.3), jnp.float64(0.7)), order=1, modes=("rev",))


def test_gumbel_jit_vmap_and_keys():
  logits = jax.random.normal(jax.random.key(1), (6, 9))
  keys = jax.random.split(jax.random.key(2), 6)
  eager = jnp.stack([quantize.gumbel_softmax(logits[i], keys[i], 1.0, 1.0) for i in range(6)])
  vmapped = jax.vmap(lambda l, k: quantize.gumbel_softmax(l, k, 1.0, 1.0))(logits, keys)
  jitted = jax.jit(jax.vmap(lambda l, k: quantize.gumbel_softmax(l, k, 1.0, 1.0)))(logits, keys)
  np.testing.assert_array_equal(eager, vmapped)
  np.testing.assert_array_equal(eager, jitted)
  raw = quantize.gumbel_softmax(logits, jax.random.PRNGKey(0), 1.0, 1.0)
  assert raw.shape == (6, 9) and np.all(np.asarray(raw).sum(-1) == 1.0)
  # Zero noise: the hard sample is the plain argmax.
  zero = quantize.gumbel_softmax(logits, keys[0], 1.0, 0.0)
  np.testing.assert_array_equal(jnp.argmax(zero, -1), jnp.argmax(logits, -1))
