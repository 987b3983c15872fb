"""RPG model: loss against its definition, causality, padding, a training step, the windows."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
import optax

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


def test_training_steps_lower_the_loss():
  sids, mask, labels = _inputs()
  params = PARAMS
  tx = optax.adam(1e-2)
  step = train.make_step(GRAPHDEF, tx)
  opt_state = tx.init(params)
  batch = {"sids": sids, "mask": mask, "labels": labels}
  first = None
  for i in range(20):
    params, opt_state, value = step(params, opt_state, batch, jax.random.PRNGKey(i))
    first = float(value) if first is None else first
  after = _loss(params, sids, mask, labels)
  assert float(after) < 0.7 * first


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
