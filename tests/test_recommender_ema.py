"""The parameters' moving average (train.ema_decay): its update, sharding, and use at evaluation."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r3vae_jax import parallel
from r3vae_jax.configs import default
from r3vae_jax.recommender import ema, state as state_lib, tokens
from r3vae_jax.recommender import train as rec_train


def test_average_follows_its_definition():
  """ema_0 = params_0; ema_t = d ema_{t-1} + (1 - d) params_t after each update."""
  decay, lr = 0.8, 0.1
  tx = optax.chain(optax.sgd(lr), ema.track_ema(decay))
  params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
  opt = tx.init(params)
  expected = jax.tree.map(np.asarray, params)
  for t in range(4):
    grads = jax.tree.map(lambda p: p * (t + 1), params)
    updates, opt = tx.update(grads, opt, params)
    params = optax.apply_updates(params, updates)
    expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * np.asarray(p), expected, params)
  state = {"params": params, "opt": opt}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ema.eval_params(state),
               expected)
  # Updates pass through unchanged: the raw parameters are SGD's.
  assert not np.allclose(params["w"], ema.eval_params(state)["w"])


def test_without_an_average_the_raw_parameters_are_evaluated():
  params = {"w": jnp.ones(3)}
  state = {"params": params, "opt": optax.adam(1e-3).init(params)}
  assert ema.eval_params(state) is params


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_interval_is_refused(decay):
  with pytest.raises(ValueError, match="ema_decay must be in"):
    ema.track_ema(decay)


def _config(ema_decay: float):
  c = default.get_config("rqvae")
  c.sid.update(dict(levels=2, codebook_size=8, max_collisions=8))
  c.train.update(dict(ema_decay=ema_decay, clip_norm=1.0, warmup_steps=0, lr=1e-2))
  c.mesh.update(dict(data=4, model=2))
  return c


def test_average_is_sharded_like_the_parameters_and_moves_with_training():
  """On 8 fake devices (data 4 x model 2): the average's shardings equal the parameters', it
  starts equal to them, and after a step it lies between the old and the new parameters."""
  config = _config(0.5)
  mesh = parallel.config_mesh(config)
  prog = rec_train.train_programs(config, mesh, 10)
  state = prog.init()
  average = ema.eval_params(state)
  assert average is not state["params"]
  jax.tree.map(lambda a, p: (a.sharding == p.sharding) or pytest.fail(f"{a.sharding}"),
               average, state["params"])
  before = jax.device_get(state["params"])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(average), before)

  rng = np.random.default_rng(0)
  layout = state_lib.model_def(config).layout
  batch_size, history = config.train.batch_size, 6
  enc = rng.integers(tokens.NUM_SPECIALS, layout.vocab_size, (batch_size, history * 3))
  targets = np.stack([rng.integers(0, n, batch_size) for n in layout.level_sizes], 1)
  batch = {"enc_tokens": enc.astype(np.int32), "enc_mask": np.ones_like(enc, bool),
           "targets": targets.astype(np.int32), "target_items": np.zeros(batch_size, np.int32),
           "weight": np.ones(batch_size, np.float32)}
  state, measurements = prog.train_step(state, parallel.to_global(batch, mesh))
  assert bool(measurements["finite"])
  after = jax.device_get(state["params"])
  average = jax.device_get(ema.eval_params(state))
  jax.tree.map(lambda a, b0, b1: np.testing.assert_allclose(a, 0.5 * b0 + 0.5 * b1, atol=1e-6),
               average, before, after)
