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


@pytest.mark.parametrize("codebook_grad", [False, True])
def test_straight_through_matches_definition(codebook_grad):
  """Forward q; d/dx = identity; through a gather `q = codebook[codes]` the codebook gets the
  scattered cotangent (codebook path on) or zero (off). Eager, jit and vmap agree."""
  x = jnp.array([[0.1, 0.2], [0.3, -0.1], [2.0, 2.0]])
  codebook = jnp.array([[0.0, 0.0], [2.0, 2.0]])
  codes = jnp.array([0, 0, 1])
  ct = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])

  def loss(x, codebook):
    q = quantize.straight_through(x, codebook[codes], codebook_grad)
    return jnp.sum(ct * q)

  grad = jax.grad(loss, argnums=(0, 1))
  with jax.disable_jit():
    dx, dcb = grad(x, codebook)
  np.testing.assert_array_equal(dx, ct)
  expected = np.array([[4.0, 6.0], [5.0, 6.0]]) if codebook_grad else np.zeros((2, 2))
  np.testing.assert_array_equal(dcb, expected)
  jit_dx, jit_dcb = jax.jit(grad)(x, codebook)
  np.testing.assert_array_equal(jit_dx, dx)
  np.testing.assert_array_equal(jit_dcb, dcb)
  out = jax.vmap(lambda a, b: quantize.straight_through(a, b, codebook_grad))(x, codebook[codes])
  np.testing.assert_array_equal(out, codebook[codes])


def _soft_reference(logits, key, tau, scale):
  noise = jax.random.gumbel(key, logits.shape, dtype=logits.dtype)
  return jax.nn.softmax((logits + scale * noise) / tau, axis=-1)


@pytest.mark.parametrize("scale_shape", [(), (5, 1), (7,)])
def test_gumbel_forward_and_backward_match_definition(scale_shape):
  """Hard forward = one-hot of the noisy argmax, soft forward = the soft sample; in both modes
  the VJP w.r.t. logits, tau and the noise scale is autodiff of softmax((l + s g) / tau)."""
  key = jax.random.key(0)
  logits = jax.random.normal(jax.random.key(1), (5, 7))
  scale = 0.5 + jax.random.uniform(jax.random.key(2), scale_shape)
  ct = jax.random.normal(jax.random.key(4), (5, 7))
  tau = jnp.float32(1.7)

  @jax.jit
  def run(logits, tau, scale, ct):
    ref, ref_vjp = jax.vjp(lambda l, t, s: _soft_reference(l, key, t, s), logits, tau, scale)
    out = {"ref": ref, "ref_grads": ref_vjp(ct)}
    for hard in (True, False):
      y, vjp = jax.vjp(lambda l, t, s: quantize.gumbel_softmax(l, key, t, s, hard), logits,
                       tau, scale)
      out["hard" if hard else "soft"] = (y, vjp(ct))
    return out

  out = run(logits, tau, scale, ct)
  np.testing.assert_array_equal(out["hard"][0], jax.nn.one_hot(jnp.argmax(out["ref"], -1), 7))
  np.testing.assert_allclose(out["soft"][0], out["ref"], rtol=1e-6)
  for mode in ("hard", "soft"):
    for got, want in zip(out[mode][1], out["ref_grads"]):
      assert got.shape == want.shape
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(np.asarray(out["hard"][1][2])) > 0), "noise scale must receive gradient"


def test_gumbel_soft_mode_check_grads(x64):
  key = jax.random.key(5)
  logits = jax.random.normal(jax.random.key(6), (3, 4), dtype=jnp.float64)
  f = lambda l, t, s: quantize.gumbel_softmax(l, key, t, s, hard=False)
  check_grads(f, (logits, jnp.float64(1.3), jnp.float64(0.7)), order=1, modes=("rev",))


def test_gumbel_jit_vmap_and_keys():
  logits = jax.random.normal(jax.random.key(1), (3, 9))
  keys = jax.random.split(jax.random.key(2), 3)
  sample = lambda l, k, s: quantize.gumbel_softmax(l, k, 1.0, s)
  one_by_one = jnp.stack([sample(logits[i], keys[i], 1.0) for i in range(3)])
  vmapped = jax.jit(jax.vmap(sample, in_axes=(0, 0, None)))(logits, keys, 1.0)
  np.testing.assert_array_equal(one_by_one, vmapped)
  np.testing.assert_array_equal(np.asarray(vmapped).sum(-1), 1.0)
  # Raw uint32 keys work too; zero noise makes the hard sample the plain argmax.
  zero = quantize.gumbel_softmax(logits, jax.random.PRNGKey(0), 1.0, 0.0)
  np.testing.assert_array_equal(jnp.argmax(zero, -1), jnp.argmax(logits, -1))


def test_rotation_trick_matches_its_definition():
  """Forward q; backward lambda R^T g with R the explicit rotation taking e's direction to q's."""
  rng = np.random.default_rng(0)
  e = rng.normal(size=(5, 4))
  q = rng.normal(size=(5, 4))
  g = rng.normal(size=(5, 4))
  with jax.enable_x64(True):
    out, vjp = jax.vjp(quantize.rotation_trick, jnp.asarray(e), jnp.asarray(q))
    grad_e, grad_q = vjp(jnp.asarray(g))
  np.testing.assert_array_equal(out, q)
  np.testing.assert_array_equal(grad_q, 0.0)
  for i in range(5):
    u, v = e[i] / np.linalg.norm(e[i]), q[i] / np.linalg.norm(q[i])
    r = (u + v) / np.linalg.norm(u + v)
    rot = np.eye(4) - 2 * np.outer(r, r) + 2 * np.outer(v, u)
    lam = np.linalg.norm(q[i]) / np.linalg.norm(e[i])
    np.testing.assert_allclose(rot @ rot.T, np.eye(4), atol=1e-12)  # a rotation
    np.testing.assert_allclose(lam * rot @ e[i], q[i], atol=1e-12)  # carries e onto q
    np.testing.assert_allclose(grad_e[i], lam * rot.T @ g[i], atol=1e-12)
