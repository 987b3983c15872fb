"""Collision tokens, SID metrics and schedules against hand-computed and brute-force values."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from r3vae_jax import quantize

# Hand case: groups (0,0): [1,0],[0,1] (cos 0); (1,0): [1,0],[2,0],[1,0] (cos 1); (2,2): [0,-1].
HAND_CODES = np.array([[1, 0], [0, 0], [1, 0], [2, 2], [0, 0], [1, 0]], np.int32)
HAND_VECTORS = np.array([[1, 0], [1, 0], [2, 0], [0, -1], [0, 1], [1, 0]], np.float32)


def _brute(vectors, codes, t=2.0):
  """numpy SC / PD with N x N and G x G matrices."""
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  groups = {}
  for i, c in enumerate(map(tuple, codes)):
    groups.setdefault(c, []).append(i)
  scs = []
  for members in groups.values():
    if len(members) >= 2:
      cos = unit[members] @ unit[members].T
      n = len(members)
      scs.append((cos.sum() - np.trace(cos)) / (n * (n - 1)))
  p = np.stack([vectors[m].mean(0) for m in groups.values()])
  p /= np.linalg.norm(p, axis=1, keepdims=True)
  iu = np.triu_indices(len(p), 1)
  pd = np.log(np.mean(np.exp(-t * (1 - (p @ p.T)[iu]))))
  return np.mean(scs), pd


def test_collision_tokens_hand_case():
  np.testing.assert_array_equal(quantize.collision_tokens(HAND_CODES), [0, 0, 1, 0, 1, 2])
  table = quantize.append_collision_token(HAND_CODES, max_collisions=3)
  assert table.dtype == np.int32 and table.shape == (6, 3)
  assert len({tuple(r) for r in table}) == 6
  np.testing.assert_array_equal(table[:, :2], HAND_CODES)
  with pytest.raises(ValueError, match=r"3 items share the code tuple \(1, 0\)"):
    quantize.append_collision_token(HAND_CODES, max_collisions=2)
  ids, num_groups = jax.jit(quantize.group_ids)(HAND_CODES)
  np.testing.assert_array_equal(ids, [1, 0, 1, 2, 0, 1])
  assert int(num_groups) == 3


def test_hard_metrics_hand_case():
  report = quantize.sid_report(HAND_VECTORS, HAND_CODES, 3)
  assert report["semantic_cohesion"] == pytest.approx(0.5, abs=1e-6)
  assert report["semantic_cohesion_per_prefix"] == pytest.approx([0.5, 0.5], abs=1e-6)
  r = 1 / math.sqrt(2)  # centres: (1,1)/sqrt2, (1,0), (0,-1)
  pd = math.log((math.exp(-2 * (1 - r)) + math.exp(-2 * (1 + r)) + math.exp(-2)) / 3)
  assert report["preference_discrimination"] == pytest.approx(pd, abs=1e-6)
  assert report["collision_rate"] == pytest.approx(5 / 6)
  assert report["gini"] == pytest.approx(4 / 18, abs=1e-6)  # sizes 1, 2, 3
  assert report["max_group_size"] == 3 and report["num_groups"] == 3
  assert report["usage_per_level"] == pytest.approx([1.0, 2 / 3])
  p0, p1 = np.array([2, 3, 1]) / 6, np.array([5, 1]) / 6
  assert report["perplexity_per_level"] == pytest.approx(
      [np.exp(-(p0 * np.log(p0)).sum()), np.exp(-(p1 * np.log(p1)).sum())], rel=1e-6)


def test_hard_metrics_random_case_vs_brute_force_and_tiling():
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(60, 4)).astype(np.float32)
  codes = rng.integers(0, 3, size=(60, 2)).astype(np.int32)
  sc, pd = _brute(vectors, codes)
  np.testing.assert_allclose(quantize.semantic_cohesion(vectors, codes), sc, rtol=1e-5)
  pd_fn = jax.jit(quantize.preference_discrimination, static_argnames="block")
  for block in (4, 2048):  # 9 groups: several tiles with a partial one; a single tile
    np.testing.assert_allclose(pd_fn(vectors, codes, block=block), pd, rtol=1e-5)
  unique = np.stack([np.arange(60), np.zeros(60, np.int64)], axis=1).astype(np.int32)
  assert np.isnan(float(quantize.semantic_cohesion(vectors, unique)))
  assert float(quantize.collision_rate(unique)) == 0.0


def test_gini_with_valid_mask():
  sizes = np.array([5.0, 1.0, 1.0, 1.0])
  n, xs = 4, np.sort(sizes)
  want = np.sum((2 * np.arange(1, n + 1) - n - 1) * xs) / (n * xs.sum())
  assert float(quantize.gini(sizes)) == pytest.approx(want)
  padded = np.concatenate([sizes, np.zeros(3)])
  valid = np.arange(7) < 4
  assert float(quantize.gini(padded, valid)) == pytest.approx(want)
  assert float(quantize.gini(np.full(5, 2.0))) == pytest.approx(0.0, abs=1e-7)


def test_soft_semantic_cohesion_definition_and_one_hot():
  rng = np.random.default_rng(1)
  v = rng.normal(size=(10, 3))
  logits = rng.normal(size=(10, 4))
  w = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  unit = v / np.linalg.norm(v, axis=1, keepdims=True)
  m = (w @ w.T) * (1 - np.eye(10))
  want = np.sum(m * (unit @ unit.T)) / np.sum(m)
  got = quantize.soft_semantic_cohesion(jnp.float32(v), jnp.float32(w))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # One-hot weights: mean cosine over all same-code pairs.
  one_hot = np.eye(3)[HAND_CODES[:, 0]]
  # pairs: group 0 (2 items, cos 0), group 1 (3 items, cos 1) -> (0*2 + 1*6) / 8
  np.testing.assert_allclose(quantize.soft_semantic_cohesion(HAND_VECTORS, one_hot), 6 / 8,
                             rtol=1e-6)


def test_soft_preference_discrimination_definition():
  rng = np.random.default_rng(2)
  p = rng.normal(size=(5, 3))
  u = rng.uniform(size=5)
  unit = p / np.linalg.norm(p, axis=1, keepdims=True)
  kernel = np.exp(-2 * (1 - unit @ unit.T))
  pair_w = np.outer(u, u) * (1 - np.eye(5))
  got = quantize.soft_preference_discrimination(jnp.float32(p), jnp.float32(u), 2.0)
  np.testing.assert_allclose(got, np.log(np.sum(pair_w * kernel) / pair_w.sum()), rtol=1e-5)
  # Unit weights on the hand case's centres equal the hard PD.
  centres, g = quantize.group_centres(HAND_VECTORS, HAND_CODES)
  np.testing.assert_allclose(quantize.soft_preference_discrimination(centres[:int(g)]),
                             quantize.preference_discrimination(HAND_VECTORS, HAND_CODES),
                             rtol=1e-6)


def test_soft_metric_gradients():
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    v = jnp.asarray(rng.normal(size=(6, 3)))
    w = jax.nn.softmax(jnp.asarray(rng.normal(size=(6, 4))))
    check_grads(quantize.soft_semantic_cohesion, (v, w), order=1, modes=("rev",))
    check_grads(lambda p, u: quantize.soft_preference_discrimination(p, u, 2.0),
                (v[:4], w[0]), order=1, modes=("rev",))
    centres, usage = quantize.soft_group_centres(v, w)
    np.testing.assert_allclose(usage.sum(), 1.0)
    np.testing.assert_allclose(centres, (w.T @ v) / w.sum(0)[:, None], rtol=1e-6)


def test_usage_and_perplexity_jit_vmap():
  rng = np.random.default_rng(4)
  codes = rng.integers(0, 5, size=(4, 30, 3)).astype(np.int32)
  vm = jax.vmap(lambda c: quantize.perplexity_per_level(c, 5))(codes)
  for i in range(4):
    np.testing.assert_allclose(vm[i], quantize.perplexity_per_level(codes[i], 5), rtol=1e-6)
    counts = np.stack([np.bincount(codes[i][:, l], minlength=5) for l in range(3)])
    np.testing.assert_allclose(quantize.usage_per_level(codes[i], 5), (counts > 0).mean(1))
  sc_vm = jax.vmap(quantize.semantic_cohesion, in_axes=(None, 0))(
      jnp.ones((30, 2)).at[:, 0].set(jnp.arange(30.0)), codes)
  assert sc_vm.shape == (4,) and np.all(np.asarray(sc_vm) > 0.5)


def test_schedules():
  assert float(quantize.anneal_temperature(0, 2.0, 0.5, 100)) == pytest.approx(2.0)
  assert float(quantize.anneal_temperature(50, 2.0, 0.5, 100)) == pytest.approx(1.0)
  assert float(quantize.anneal_temperature(500, 2.0, 0.5, 100)) == pytest.approx(0.5)
  traced = jax.jit(lambda step: quantize.anneal_temperature(step, 2.0, 0.5, 100))(25)
  assert float(traced) == pytest.approx(2.0 * 0.25 ** 0.25, rel=1e-6)
  with pytest.raises(ValueError, match="anneal_temperature"):
    quantize.anneal_temperature(0, 0.0, 0.5, 100)
  usage = jnp.full((4,), 0.25)
  new = quantize.update_usage_ema(usage, jnp.array([0, 0, 0, 1]), 0.9)
  np.testing.assert_allclose(new, [0.9 * 0.25 + 0.1 * 0.75, 0.9 * 0.25 + 0.1 * 0.25,
                                   0.9 * 0.25, 0.9 * 0.25], rtol=1e-6)
  mask = quantize.hot_code_mask(jnp.array([0.5, 0.3, 0.1, 0.1]), jnp.array([0, 1, 2, 0]), 1.5)
  np.testing.assert_array_equal(mask, [True, False, False, True])  # threshold 0.375
  loss, lam = 3.0, 0.5
  val, grad = jax.value_and_grad(quantize.sigma_weighted_loss, argnums=1)(loss, 0.25, lam)
  s = 0.25 + lam
  assert float(val) == pytest.approx(loss / (2 * s * s) + math.log(s), rel=1e-6)
  assert float(grad) == pytest.approx(-loss / s ** 3 + 1 / s, rel=1e-5)


def test_transition_lift_by_hand():
  # Items 0..3 with codes (0,0) (0,1) (1,0) (1,1). Pairs of distinct consecutive items:
  # (0,1), (1,2), (3,2); the repeat (3,3) is dropped.
  codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
  lift = quantize.transition_lift(codes, [np.array([0, 1, 2]), np.array([3, 3, 2])])
  # Level 1: prefixes a = [0, 0, 1], b = [0, 1, 1]; agreement 2/3; chance (2*1 + 1*2) / 9.
  # Level 2: no pair shares its item; chance 1/9 (item 1 is an `a` once and a `b` once).
  np.testing.assert_allclose(lift, [(2 / 3) / (4 / 9), 0.0])
  assert np.isnan(quantize.transition_lift(codes, [np.array([2]), np.array([1, 1])])).all()


def test_transition_lift_is_one_for_codes_unrelated_to_the_sequences():
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 4, size=(500, 1))
  sequences = [rng.integers(0, 500, size=50) for _ in range(400)]
  assert abs(quantize.transition_lift(codes, sequences)[0] - 1.0) < 0.05
  # Each user stays in one block of 125 items, the items of a block share their code: every
  # pair agrees, and two independent draws agree with chance about 1/4.
  blocks = [125 * rng.integers(0, 4) + rng.integers(0, 125, size=50) for _ in range(400)]
  assert 3.5 < quantize.transition_lift(np.arange(500)[:, None] // 125, blocks)[0] < 4.5


def test_transition_lift_same_for_wide_codes_and_empty_or_short_sequences():
  """Codes too wide to pack into one key (3 x 31 bits) give the lift of the same partition
  relabelled small; empty and one-item sequences (first, last, between) add no pair."""
  rng = np.random.default_rng(3)
  small = rng.integers(0, 3, size=(60, 3))
  wide = small * (2**30) + 7  # same prefix partition, 93 bits a row
  sequences = [np.zeros(0, np.int64), rng.integers(0, 60, 9), np.array([5]),
               rng.integers(0, 60, 4), np.zeros(0, np.int64)]
  np.testing.assert_array_equal(quantize.transition_lift(small, sequences),
                                quantize.transition_lift(wide, sequences))
  pairs_only = [sequences[1], sequences[3]]
  np.testing.assert_array_equal(quantize.transition_lift(small, sequences),
                                quantize.transition_lift(small, pairs_only))


def test_sid_changes_by_hand():
  # Four items, two levels and a collision token. Item 1 changes its level-2 code, item 2 its
  # level-1 code only, item 3 only its collision token.
  before = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 1]])
  after = np.array([[0, 0, 0], [0, 2, 0], [2, 0, 0], [1, 1, 0]])
  changes = quantize.sid_changes(before, after, levels=2)
  assert changes == {"sid_changed": 0.75, "code_changed": [0.25, 0.25],
                     "prefix_changed": [0.25, 0.5]}
  with pytest.raises(ValueError, match="one shape"):
    quantize.sid_changes(before, after[:3], levels=2)
