"""Label smoothing of SID targets (recommender/smoothing.py): supports computed by hand, the
distributions, and the train step's loss on them."""
import jax
import numpy as np
import pytest

from r3vae_jax import parallel
from r3vae_jax.configs import default
from r3vae_jax.configs import validate
from r3vae_jax.recommender import data, smoothing, tokens, train
from r3vae_jax.recommender.loss import sid_loss

# 4 items, codes of sizes (3, 3) plus a collision position of size 2.
SIDS = np.array([[0, 0, 0], [0, 1, 0], [0, 1, 1], [2, 0, 0]], np.int32)
SIZES = (3, 3, 2)


def test_sibling_support_by_hand():
  support = smoothing.support_table(SIDS, SIZES, "siblings")
  assert support.shape == (4, 3, 3)
  as_sets = [[set(np.flatnonzero(support[i, p])) for p in range(3)] for i in range(4)]
  assert as_sets == [
      [{0, 2}, {0, 1}, {0}],     # prefix (): first codes in use; (0): 0, 1; (0, 0): one item
      [{0, 2}, {0, 1}, {0, 1}],  # (0, 1) holds two items
      [{0, 2}, {0, 1}, {0, 1}],
      [{0, 2}, {0}, {0}],        # (2): one child
  ]


def test_level_support_is_every_code_of_the_level():
  support = smoothing.support_table(SIDS, SIZES, "level")
  np.testing.assert_array_equal(support.sum(-1), np.tile([3, 3, 2], (4, 1)))
  assert not support[:, 2, 2].any()  # past the collision level's size


def test_bad_support_is_named():
  with pytest.raises(ValueError, match="expected one of \\('level', 'siblings'\\)"):
    smoothing.support_table(SIDS, SIZES, "cousins")


def test_distributions_put_the_smoothed_mass_on_the_support():
  support = smoothing.support_table(SIDS, SIZES, "siblings")[[1, 3]]
  dist = smoothing.target_distributions(SIDS[[1, 3]], support, 0.1)
  np.testing.assert_allclose(dist.sum(-1), 1.0, rtol=1e-6)
  # item 1, position 1: support {0, 1}, target 1
  np.testing.assert_allclose(dist[0, 1], [0.05, 0.95, 0.0], rtol=1e-6)
  # item 3, position 1: one sibling (itself): the target keeps all the mass
  np.testing.assert_allclose(dist[1, 1], [1.0, 0.0, 0.0], rtol=1e-6)
  assert np.all(dist[~support] == 0)
  hard = smoothing.target_distributions(SIDS, smoothing.support_table(SIDS, SIZES, "level"), 0.0)
  np.testing.assert_array_equal(hard.argmax(-1), SIDS)
  np.testing.assert_array_equal(hard.max(-1), 1.0)


def test_diger_refuses_label_smoothing():
  config = default.get_config("diger")
  config.train.label_smoothing = 0.1
  with pytest.raises(ValueError, match="config.train.label_smoothing: the DIGER trainer"):
    validate.validate(config)


def test_train_step_minimises_cross_entropy_to_the_smoothed_targets(beauty_users):
  splits, table = beauty_users(200, levels=2, k=8)
  c = default.base_config()
  c.sid.levels, c.sid.codebook_size, c.sid.max_collisions = 2, 8, int(table[:, -1].max()) + 1
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=16, num_heads=2,
                            d_kv=8, d_ff=32, dropout=0.0))
  c.data.max_history = 4
  c.train.update(dict(batch_size=64, length_buckets=(), example_window=0,
                      label_smoothing=0.2, smoothing_support="siblings"))
  layout = tokens.layout_from_config(c)
  examples = data.train_examples(splits, c.data.max_history, 0)
  support = smoothing.support_table(table, layout.level_sizes, "siblings")
  source = data.BatchSource(examples, data.BatchPlan(len(examples), 64, 0),
                            layout.item_tokens(table), table, support, 0.2)
  batch = source.host_batch(0)
  np.testing.assert_allclose(batch["target_dist"], smoothing.target_distributions(
      batch["targets"], support[batch["target_items"]], 0.2))

  mesh = parallel.make_mesh(1, 1, jax.devices()[:1])
  prog = train.train_programs(c, mesh, total_steps=10)
  model = train.model_programs(c, mesh).mdef
  state = prog.init()
  logits = model.bind(state["params"])(batch["enc_tokens"], batch["enc_mask"], batch["targets"],
                                       deterministic=True)
  expected = sid_loss(logits, batch["target_dist"], layout.level_sizes, batch["weight"])[0]
  hard = sid_loss(logits, batch["targets"], layout.level_sizes, batch["weight"])[0]
  _, measured = prog.train_step(state, parallel.to_global(batch, mesh))
  np.testing.assert_allclose(float(measured["loss"]), float(expected), rtol=1e-5)
  assert abs(float(expected) - float(hard)) > 1e-3  # the smoothing is in the loss
