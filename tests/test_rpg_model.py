"""RPG model: loss against its definition, causality, padding, a training step, the windows."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
import optax

from r3vae_jax import parallel
from r3vae_jax.rpg import data, model as model_lib, train

CFG = model_lib.RPGConfig(num_digits=3, codebook_size=5, d_model=8, num_layers=1, num_heads=2,
                          d_ff=16, max_len=6, temperature=0.1)


def _model():
  m = model_lib.RPG(CFG, nnx.Rngs(params=0))
  m.head_w[...] = 0.3 * jax.random.normal(jax.random.PRNGKey(1), m.head_w.shape)
  return m


@jax.jit
def _states(params, sids, mask):
  return nnx.merge(GRAPHDEF, params).states(sids, mask)


@jax.jit
def _last(params, sids, mask):
  return model_lib.last_states(nnx.merge(GRAPHDEF, params), sids, mask)


@jax.jit
def _loss(params, sids, mask, labels):
  return model_lib.loss(nnx.merge(GRAPHDEF, params), sids, mask, labels, None)


GRAPHDEF, PARAMS = nnx.split(_model(), nnx.Param)


def _inputs():
  rng = np.random.default_rng(0)
  sids = rng.integers(0, 5, size=(2, 4, 3)).astype(np.int32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  labels = rng.integers(0, 5, size=(2, 4, 3)).astype(np.int32)
  labels[0, 3] = -1
  labels[1, 0] = -1
  return jnp.asarray(sids), jnp.asarray(mask), jnp.asarray(labels)


def test_loss_matches_definition():
  sids, mask, labels = _inputs()
  states = np.asarray(_states(PARAMS, sids, mask), np.float64)              # [B, T, m, d]
  table = np.asarray(PARAMS["tokens"][...], np.float64).reshape(3, 5, 8)
  total, count = 0.0, 0
  for b in range(2):
    for t in range(4):
      if labels[b, t, 0] < 0:
        continue
      count += 1
      for j in range(3):
        s = states[b, t, j] / np.linalg.norm(states[b, t, j])
        e = table[j] / np.linalg.norm(table[j], axis=1, keepdims=True)
        logits = e @ s / 0.1
        total += -(logits[labels[b, t, j]] - np.log(np.exp(logits).sum())) / 3
  np.testing.assert_allclose(_loss(PARAMS, sids, mask, labels), total / count, rtol=1e-5)


def test_causal_and_right_padding_invariant():
  sids, mask, _ = _inputs()
  base = _states(PARAMS, sids, mask)
  changed = _states(PARAMS, sids.at[1, 3].set((sids[1, 3] + 1) % 5), mask)
  np.testing.assert_allclose(base[1, :3], changed[1, :3], atol=1e-6)
  assert not np.allclose(base[1, 3], changed[1, 3])
  short = _states(PARAMS, sids[:, :3], mask[:, :3])
  np.testing.assert_allclose(_last(PARAMS, sids, mask)[0], _last(PARAMS, sids[:, :3], mask[:, :3])[0],
                             atol=1e-6)
  np.testing.assert_allclose(base[0, :3], short[0], atol=1e-6)


def _train(mesh, steps, tx):
  """`steps` steps on one batch of 8 rows from a fresh model; (params, losses)."""
  rng = np.random.default_rng(0)
  batch = {"sids": rng.integers(0, 5, (8, 4, 3)).astype(np.int32),
           "mask": np.arange(4)[None] < rng.integers(1, 5, (8, 1)),
           "labels": rng.integers(0, 5, (8, 4, 3)).astype(np.int32)}
  run = train.init_training(CFG, 0, tx, mesh, fsdp_min_size=16)
  params, opt_state, losses = run.params, run.opt_state, []
  for i in range(steps):
    params, opt_state, value = run.step(params, opt_state, parallel.to_global(batch, mesh),
                                        jax.random.PRNGKey(i))
    losses.append(float(value))
  return params, losses


def test_training_steps_lower_the_loss():
  _, losses = _train(parallel.make_mesh(data=1, model=1, devices=jax.devices()[:1]), 20,
                     optax.adam(1e-2))
  assert losses[-1] < 0.7 * losses[0]


def test_sharded_training_matches_one_device():
  """8 fake CPU devices (data 4 x model 2: heads and MLP split, large tables over data) against
  one device: the same losses and parameters after 3 steps with dropout on."""
  tx = optax.sgd(0.5)  # Adam's normalised updates would amplify rounding of near-zero gradients
  one, losses_one = _train(parallel.make_mesh(data=1, model=1, devices=jax.devices()[:1]), 3, tx)
  sharded, losses = _train(parallel.make_mesh(data=4, model=2), 3, tx)
  assert sharded["blocks"][0]["qkv"].sharding.spec[2] == parallel.MODEL
  assert parallel.DATA in sharded["tokens"].sharding.spec
  np.testing.assert_allclose(losses, losses_one, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), sharded, one)


def test_train_windows_label_every_next_item_once():
  w = data.train_windows([np.arange(7), np.array([9, 8]), np.array([5])], max_len=3)
  np.testing.assert_array_equal(w.inputs, [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [9, -1, -1]])
  np.testing.assert_array_equal(w.labels, [[1, 2, 3], [-1, -1, 4], [-1, -1, 5], [-1, -1, 6],
                                           [8, -1, -1]])
  batches = data.epoch_batches(w, (1, 2), 2, np.random.default_rng(0))
  rows = np.sort(np.concatenate([r for r, _ in batches]))
  np.testing.assert_array_equal(rows, np.arange(5))
  assert {length for _, length in batches} == {1, 3}


def test_presets_follow_the_released_settings():
  import pytest  # pylint: disable=g-import-not-at-top
  from r3vae_jax.configs import rpg  # pylint: disable=g-import-not-at-top
  got = {d: (rpg.get_config(d).rpg.num_digits, rpg.get_config(d).rpg.num_beams)
         for d in ("beauty", "sports", "toys")}
  assert got == {"beauty": (32, 20), "sports": (16, 100), "toys": (16, 200)}
  assert rpg.get_config("beauty").vectors.source == "minilm-text"
  assert rpg.get_config("toys").vectors.source == "interactions-svd"
  with pytest.raises(ValueError, match="dataset"):
    rpg.get_config("lastfm")
