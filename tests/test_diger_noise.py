"""DIGER's uncertainty decays as pure functions: who gets noise, and how sigma follows the loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r3vae_jax import quantize
from r3vae_jax.diger import noise

K, L = 16, 3


def _noisy_fraction(usage, greedy_level1):
  scales = noise.noise_scales("frequency", greedy_level1, usage[0], jnp.ones(L), 1.0, 1.5)
  return float(jnp.mean(scales[:, 0] > 0))


@jax.jit
def _ema_over(usage, codes):
  """`noise.update_usage` over a stack of batches codes int32[T, B, L]."""
  return jax.lax.scan(lambda u, c: (noise.update_usage(u, c, 0.99), None), usage, codes)[0]


def test_frequency_decay_fades_as_usage_balances():
  """Skewed usage: the items on the hot code are noisy; as the greedy codes spread evenly over
  the codebook the usage EMA balances and the noisy fraction falls to zero."""
  rng = np.random.default_rng(0)
  usage = jnp.full((L, K), 1.0 / K, jnp.float32)
  fractions = []
  for stage in range(6):
    skew = 1.0 - stage / 5  # 1 = 80% of the items on code 0; 0 = uniform
    probs = np.full(K, (1 - 0.8 * skew) / K)
    probs[0] += 0.8 * skew
    # momentum 0.99: ~300 batches bring the EMA to the new usage.
    codes = rng.choice(K, size=(300, 256, L), p=probs / probs.sum()).astype(np.int32)
    usage = _ema_over(usage, jnp.asarray(codes))
    fractions.append(_noisy_fraction(usage, jnp.asarray(codes[-1, :, 0])))
  assert fractions[0] > 0.7, fractions
  assert all(b <= a + 0.02 for a, b in zip(fractions, fractions[1:])), fractions
  assert fractions[-1] == 0.0, fractions
  np.testing.assert_allclose(np.asarray(usage).sum(1), 1.0, rtol=1e-5)


def test_frequency_noise_only_on_hot_items():
  usage = jnp.asarray(np.r_[0.5, np.full(K - 1, 0.5 / (K - 1))], jnp.float32)[None].repeat(L, 0)
  greedy = jnp.asarray([0, 1, 0, 5], jnp.int32)
  scales = noise.noise_scales("frequency", greedy, usage[0], jnp.ones(L), 0.7, 1.5)
  np.testing.assert_allclose(np.asarray(scales), [[0.7] * L, [0.0] * L, [0.7] * L, [0.0] * L])


def test_update_usage_matches_quantize_per_level():
  rng = np.random.default_rng(1)
  usage = jnp.asarray(rng.dirichlet(np.ones(K), size=L), jnp.float32)
  codes = jnp.asarray(rng.integers(0, K, (64, L)), jnp.int32)
  got = noise.update_usage(usage, codes, 0.9)
  for l in range(L):
    np.testing.assert_allclose(got[l], quantize.update_usage_ema(usage[l], codes[:, l], 0.9),
                               rtol=1e-6)


def test_plain_gumbel_none_and_learned_sigma_scales():
  greedy = jnp.zeros((5,), jnp.int32)
  usage = jnp.full((K,), 1.0 / K)
  sigma = jnp.asarray([-0.5, 0.2, 1.5])
  np.testing.assert_allclose(noise.noise_scales("gumbel", greedy, usage, sigma, 0.8, 1.5),
                             np.full((5, L), 0.8))
  np.testing.assert_allclose(noise.noise_scales("none", greedy, usage, sigma, 0.8, 1.5),
                             np.zeros((5, L)))
  np.testing.assert_allclose(noise.noise_scales("learned_sigma", greedy, usage, sigma, 0.8, 1.5),
                             np.tile([0.5, 0.2, 1.5], (5, 1)), rtol=1e-6)
  with pytest.raises(ValueError, match="config.diger.decay"):
    noise.noise_scales("annealed", greedy, usage, sigma, 0.8, 1.5)


def _descend_sigma(loss_value: float, sigma: float, lam: float, steps: int = 400) -> float:
  """Plain gradient descent (lr 0.1) on the SDUD loss over sigma alone."""
  grad = jax.grad(lambda s: quantize.sigma_weighted_loss(loss_value, s, lam))
  step = lambda _, s: s - 0.1 * grad(s)
  return float(jax.jit(lambda s: jax.lax.fori_loop(0, steps, step, s))(jnp.float32(sigma)))


@pytest.mark.parametrize("lam", [0.5, 1.0])
def test_sigma_settles_at_sqrt_loss_minus_lambda(lam):
  """d/ds [L/(2(s+lam)^2) + log(s+lam)] = 0 at s = sqrt(L) - lam: sigma tracks the loss."""
  for loss_value in (4.0, 2.25):
    np.testing.assert_allclose(abs(_descend_sigma(loss_value, 1.0, lam)),
                               np.sqrt(loss_value) - lam, atol=1e-2)


def test_sigma_shrinks_as_the_loss_falls():
  """With a falling recommendation loss the learned scale falls with it, to ~0 below lam^2."""
  sigma, trace = 1.5, []
  for loss_value in (6.0, 4.0, 2.5, 1.5, 0.8):
    sigma = _descend_sigma(loss_value, sigma, 1.0, steps=150)
    trace.append(abs(sigma))
  assert all(b < a for a, b in zip(trace, trace[1:])), trace
  assert trace[-1] < 0.05, trace


def test_rec_loss_with_sigma_reweights_code_levels_only():
  per_level = jnp.asarray([4.0, 2.0, 1.0])
  rest = jnp.asarray(0.5)
  sigma = jnp.asarray([1.0, 0.5, 0.0])
  plain = noise.rec_loss_with_sigma(per_level, rest, "frequency", sigma, 1.0)
  np.testing.assert_allclose(plain, (4.0 + 2.0 + 1.0 + 0.5) / 4, rtol=1e-6)
  weighted = noise.rec_loss_with_sigma(per_level, rest, "learned_sigma", sigma, 1.0)
  expect = sum(v / (2 * (s + 1.0) ** 2) + np.log(s + 1.0)
               for v, s in zip([4.0, 2.0, 1.0], [1.0, 0.5, 0.0])) + 0.5
  np.testing.assert_allclose(weighted, expect / 4, rtol=1e-6)


def test_traced_decay_index_matches_the_named_decay():
  """The trainer passes the decay as an int32 argument (one program for all four decays)."""
  rng = np.random.default_rng(4)
  greedy = jnp.asarray(rng.integers(0, K, 32), jnp.int32)
  usage = jnp.asarray(rng.dirichlet(np.ones(K) * 0.3), jnp.float32)
  sigma = jnp.asarray([-0.5, 0.2, 1.5])
  per_level, rest = jnp.asarray([4.0, 2.0, 1.0]), jnp.asarray(0.5)

  @jax.jit
  def both(index):
    return (noise.noise_scales(index, greedy, usage, sigma, 0.8, 1.5),
            noise.rec_loss_with_sigma(per_level, rest, index, sigma, 1.0))

  for i, name in enumerate(noise.DECAYS):
    scales, loss = both(jnp.int32(i))
    np.testing.assert_allclose(scales, noise.noise_scales(name, greedy, usage, sigma, 0.8, 1.5))
    np.testing.assert_allclose(loss, noise.rec_loss_with_sigma(per_level, rest, name, sigma, 1.0),
                               rtol=1e-6)
  assert int(noise.decay_index("gumbel")) == noise.DECAYS.index("gumbel")


@pytest.mark.parametrize("schedule", noise.ANNEAL_SCHEDULES)
def test_anneal_factor_is_one_at_start_half_midway_and_zero_at_the_end(schedule):
  factor = jax.jit(lambda step, n: noise.anneal_factor(step, n, schedule))
  values = [float(factor(jnp.int32(s), jnp.int32(100))) for s in (0, 25, 50, 100, 250)]
  np.testing.assert_allclose(values[0], 1.0)
  np.testing.assert_allclose(values[2], 0.5, atol=1e-6)
  assert values[3] == values[4] == 0.0
  quarter = 0.75 if schedule == "linear" else 0.5 * (1 + np.cos(np.pi / 4))
  np.testing.assert_allclose(values[1], quarter, rtol=1e-6)


def test_zero_anneal_steps_disables_annealing():
  for schedule in noise.ANNEAL_SCHEDULES:
    for step in (0, 7, 10**6):
      assert float(noise.anneal_factor(step, 0, schedule)) == 1.0
  assert noise.anneal_steps(0.0, 1000) == 0
  assert noise.anneal_steps(0.5, 1000) == 500
  assert noise.anneal_steps(1e-6, 1000) == 1  # a positive fraction anneals over >= 1 step
