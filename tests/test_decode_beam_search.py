"""Constrained beam search against brute-force scoring of every valid SID."""
import itertools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r3vae_jax import parallel
from r3vae_jax.decode import beam_search, build_trie, ensemble_step_fn, gather_beams
from r3vae_jax.decode.beam_search import top_continuations

HASH_MOD = 997


def _hash(user, prefix):
  """Hash of (user, SID prefix); prefix int[..., L'] with -1 for unset positions."""
  h = (user * 7919) % HASH_MOD
  for i in range(prefix.shape[-1]):
    h = (h * 31 + prefix[..., i] + 2) % HASH_MOD
  return h


def make_toy_model(seed, level_sizes):
  """A 'model' whose logits depend on the user and the whole prefix, carried in its cache."""
  rng = np.random.default_rng(seed)
  tables = [rng.normal(size=(HASH_MOD, k)).astype(np.float32) * 3 for k in level_sizes]
  depth = len(level_sizes)

  def step_fn(prev, level, cache):
    prefix = cache["prefix"]
    if level > 0:
      prefix = prefix.at[:, level - 1].set(prev)
      h = _hash(cache["user"], prefix)
    else:  # BOS must be -1: any other value changes the logits and breaks the brute force.
      h = (_hash(cache["user"], prefix) + prev + 1) % HASH_MOD
    logits = jnp.asarray(tables[level])[h]
    return logits, {"prefix": prefix, "user": cache["user"], "step": cache["step"] + 1}

  def init_cache(users, beam):
    rows = len(users) * beam
    return {"prefix": jnp.full((rows, depth), -1, jnp.int32),
            "user": jnp.repeat(jnp.asarray(users, jnp.int32), beam),
            "step": jnp.zeros((), jnp.int32)}

  return tables, step_fn, init_cache


def brute_force(tables, table, level_sizes, user):
  """Scores of every item: sum over levels of the log-softmax over the valid children."""
  depth = table.shape[1]
  children = {}
  for row in table:
    for l in range(depth):
      children.setdefault(tuple(row[:l]), set()).add(int(row[l]))
  scores = np.zeros(len(table))
  for i, row in enumerate(table):
    for l in range(depth):
      prefix = np.full(depth, -1)
      prefix[:l] = row[:l]
      logits = tables[l][_hash(user, prefix)].astype(np.float64)
      valid = sorted(children[tuple(row[:l])])
      lse = np.log(np.exp(logits[valid] - logits[valid].max()).sum()) + logits[valid].max()
      scores[i] += logits[row[l]] - lse
  return scores


def random_table(rng, level_sizes, n):
  space = list(itertools.product(*[range(k) for k in level_sizes]))
  pick = rng.choice(len(space), size=n, replace=False)
  return np.asarray([space[i] for i in pick], np.int32).reshape(n, len(level_sizes))


def decode(table, level_sizes, users, beam, dense_budget, seed=0):
  tables, step_fn, init_cache = make_toy_model(seed, level_sizes)
  trie = build_trie(table, level_sizes, dense_budget=dense_budget)
  fn = jax.jit(lambda trie, cache: beam_search(step_fn, cache, trie, len(users), beam))
  return tables, fn(trie, init_cache(users, beam))


@pytest.mark.parametrize("dense_budget", [0, 40, 2**26])
def test_wide_beam_equals_brute_force(dense_budget):
  level_sizes = [3, 5, 4]
  table = random_table(np.random.default_rng(1), level_sizes, 14)
  users = [0, 5, 11]
  beam = 17
  tables, res = decode(table, level_sizes, users, beam, dense_budget)
  for b, u in enumerate(users):
    expect = brute_force(tables, table, level_sizes, u)
    order = np.argsort(-expect, kind="stable")
    np.testing.assert_array_equal(res.item_ids[b, :14], order)
    np.testing.assert_allclose(res.scores[b, :14], expect[order], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(res.sids[b, :14], table[order])
    np.testing.assert_array_equal(res.item_ids[b, 14:], -1)
    np.testing.assert_array_equal(res.sids[b, 14:], -1)
    assert np.all(np.isneginf(res.scores[b, 14:]))


@pytest.mark.parametrize("dense_budget", [0, 2**26])
def test_ensemble_equals_brute_force_on_the_mean_log_probabilities(dense_budget):
  """Two toy models decoding together rank every valid SID by the sum over levels of the
  masked log-softmax of their mean log-softmax; one model alone through the ensemble step
  ranks as that model."""
  level_sizes = [3, 5, 4]
  table = random_table(np.random.default_rng(2), level_sizes, 14)
  users, beam = [1, 8], 14
  trie = build_trie(table, level_sizes, dense_budget=dense_budget)
  models = [make_toy_model(seed, level_sizes) for seed in (3, 4)]
  step = ensemble_step_fn([m[1] for m in models])
  caches = tuple(m[2](users, beam) for m in models)
  res = jax.jit(lambda trie, caches: beam_search(step, caches, trie, len(users), beam))(
      trie, caches)
  mean_logp = [np.mean([jax.nn.log_softmax(m[0][l], axis=-1) for m in models], axis=0)
               for l in range(len(level_sizes))]
  for b, u in enumerate(users):
    expect = brute_force(mean_logp, table, level_sizes, u)
    order = np.argsort(-expect, kind="stable")
    np.testing.assert_array_equal(res.item_ids[b], order)
    np.testing.assert_allclose(res.scores[b], expect[order], rtol=1e-5, atol=1e-5)

  tables, single = decode(table, level_sizes, users, beam, dense_budget, seed=3)
  alone = jax.jit(lambda trie, caches: beam_search(ensemble_step_fn([models[0][1]]), caches,
                                                   trie, len(users), beam))(
      trie, (models[0][2](users, beam),))
  np.testing.assert_array_equal(alone.item_ids, single.item_ids)
  np.testing.assert_allclose(alone.scores, single.scores, rtol=1e-5, atol=1e-5)


def test_narrow_beam_top1_single_level_is_argmax():
  level_sizes = [9]
  table = np.asarray([[1], [4], [7], [8]], np.int32)
  tables, res = decode(table, level_sizes, [3], 1, 2**26)
  expect = brute_force(tables, table, level_sizes, 3)
  assert int(res.item_ids[0, 0]) == int(np.argmax(expect))


@pytest.mark.parametrize("c", [2, 3, 11])
def test_top_continuations_equals_flat_top_k(c):
  total = jax.random.normal(jax.random.key(c), (4, 3, c))
  total = total.at[1, 1:].set(-jnp.inf)                # a user with one live beam
  scores, flat = top_continuations(total, 3)
  ref_scores, ref_flat = jax.lax.top_k(total.reshape(4, 3 * c), 3)
  np.testing.assert_array_equal(scores, ref_scores)
  np.testing.assert_array_equal(flat[np.isfinite(scores)], ref_flat[np.isfinite(ref_scores)])


def test_gather_beams_reorders_rows_and_rejects_bad_leaves():
  parent = jnp.asarray([[1, 1, 0], [2, 0, 1]])
  tree = {"a": jnp.arange(6) * 10, "b": jnp.arange(12).reshape(6, 2), "t": jnp.asarray(7)}
  out = gather_beams(tree, parent)
  np.testing.assert_array_equal(out["a"], [10, 10, 0, 50, 30, 40])
  np.testing.assert_array_equal(out["b"][:, 0], [2, 2, 0, 10, 6, 8])
  assert int(out["t"]) == 7
  with pytest.raises(ValueError, match="leading dimension"):
    gather_beams({"x": jnp.zeros((5, 2))}, parent)


def test_wrong_logits_width_is_an_error():
  trie = build_trie(np.asarray([[0, 1]]), [2, 3])
  step = lambda prev, level, cache: (jnp.zeros((prev.shape[0], 4)), cache)
  with pytest.raises(ValueError, match="level 0"):
    beam_search(step, {}, trie, 1, 2)


@hypothesis.settings(max_examples=8, deadline=None, derandomize=True)
@hypothesis.given(st.data())
def test_property_valid_distinct_and_layouts_agree(data):
  depth = data.draw(st.integers(1, 3))
  level_sizes = data.draw(st.lists(st.integers(1, 4), min_size=depth, max_size=depth))
  n = data.draw(st.integers(1, min(int(np.prod(level_sizes)), 20)))
  beam = data.draw(st.integers(1, 8))
  seed = data.draw(st.integers(0, 1000))
  table = random_table(np.random.default_rng(seed), level_sizes, n)
  users = [seed, seed + 1]
  _, step_fn, init_cache = make_toy_model(seed, level_sizes)
  tries = (build_trie(table, level_sizes), build_trie(table, level_sizes, dense_budget=0))
  assert tries[0].layouts == ("dense",) * depth and tries[1].layouts == ("csr",) * depth
  search = lambda trie, cache: beam_search(step_fn, cache, trie, len(users), beam)
  dense, csr = jax.jit(lambda ts, c: [search(t, c) for t in ts])(tries, init_cache(users, beam))
  np.testing.assert_array_equal(dense.item_ids, csr.item_ids)
  np.testing.assert_allclose(dense.scores, csr.scores, rtol=1e-5, atol=1e-5)
  for b in range(len(users)):
    items = np.asarray(dense.item_ids[b])
    found = items[items >= 0]
    assert found.size == min(n, beam)                     # -1 only when too few items
    assert len(set(found.tolist())) == found.size         # no duplicates
    assert np.all(found < n)
    np.testing.assert_array_equal(dense.sids[b, :found.size], table[found])  # real SIDs
    assert np.all(items[:found.size] >= 0)                # -1 slots come last
    s = np.asarray(dense.scores[b])
    assert np.all(np.diff(s[np.isfinite(s)]) <= 1e-6)     # best first


def test_sharded_equals_unsharded():
  assert jax.device_count() == 8
  level_sizes = [4, 6, 3]
  table = random_table(np.random.default_rng(3), level_sizes, 40)
  users = np.arange(16) * 13
  beam = 5
  tables, step_fn, init_cache = make_toy_model(0, level_sizes)
  trie = build_trie(table, level_sizes, dense_budget=20)
  assert set(trie.layouts) == {"dense", "csr"}
  fn = jax.jit(lambda trie, cache: beam_search(step_fn, cache, trie, len(users), beam))
  single = fn(trie, init_cache(users, beam))
  mesh = parallel.make_mesh()
  cache = init_cache(users, beam)
  cache = {k: (jax.device_put(v, parallel.batch_sharding(mesh)) if v.ndim else v)
           for k, v in cache.items()}
  assert len(cache["user"].sharding.device_set) == 8
  trie = jax.device_put(trie, parallel.replicated(mesh))
  with jax.set_mesh(mesh):
    compiled = fn.lower(trie, cache).compile()
    sharded = compiled(trie, cache)
  hlo = compiled.as_text()
  for collective in ("all-gather", "all-to-all", "all-reduce", "collective-permute"):
    assert collective not in hlo                          # every user's search stays local
  assert sharded.item_ids.sharding.spec[0] == parallel.DATA
  np.testing.assert_array_equal(sharded.item_ids, single.item_ids)
  np.testing.assert_array_equal(sharded.sids, single.sids)
  np.testing.assert_allclose(sharded.scores, single.scores, rtol=1e-6)
  assert np.all(np.asarray(single.item_ids) >= 0)
