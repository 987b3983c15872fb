"""Nearest-code assignment, R3 rating, residual quantisation (quantize/assign.py, residual.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from r3vae_jax import quantize


def _brute_scores(x, c, metric):
  """numpy reference with the [B, K, D] difference tensor (fine at test sizes)."""
  x, c = np.asarray(x, np.float64), np.asarray(c, np.float64)
  if metric == "l2":
    return -np.sum((x[:, None, :] - c[None, :, :]) ** 2, axis=-1)
  if metric == "dot":
    return x @ c.T
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  cn = c / np.linalg.norm(c, axis=1, keepdims=True)
  return xn @ cn.T


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
def test_nearest_code_matches_brute_force(metric):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(33, 5)).astype(np.float32)
  c = rng.normal(size=(9, 5)).astype(np.float32)
  codes, scores = quantize.nearest_code(x, c, metric)
  want = _brute_scores(x, c, metric)
  np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(codes, want.argmax(1))
  assert codes.dtype == jnp.int32
  chunked, best = quantize.nearest_code_chunked(x, c, metric, chunk_size=8)  # 33 = 4 * 8 + 1
  np.testing.assert_array_equal(chunked, codes)
  np.testing.assert_allclose(best, want.max(1), rtol=1e-5, atol=1e-5)


def test_bad_metric_and_mode_raise():
  with pytest.raises(ValueError, match="metric"):
    quantize.nearest_code(jnp.ones((2, 3)), jnp.ones((4, 3)), "manhattan")
  with pytest.raises(ValueError, match="rating mode"):
    quantize.rating_quantize(jnp.ones((2, 3)), jnp.ones((4, 3)), mode="top2")


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_rating_quantize_matches_definition(mode):
  rng = np.random.default_rng(1)
  e = rng.normal(size=(6, 4))
  c = rng.normal(size=(5, 4))
  q, codes, w = quantize.rating_quantize(jnp.float32(e), jnp.float32(c), 0.5, mode)
  s = _brute_scores(e, c, "cosine") / 0.5
  w_ref = np.exp(s - s.max(1, keepdims=True))
  w_ref /= w_ref.sum(1, keepdims=True)
  np.testing.assert_allclose(w, w_ref, rtol=1e-5)
  np.testing.assert_array_equal(codes, w_ref.argmax(1))
  if mode == "soft":
    q_ref = w_ref @ c
  else:
    k = w_ref.argmax(1)
    q_ref = w_ref[np.arange(6), k][:, None] * c[k]
  np.testing.assert_allclose(q, q_ref, rtol=1e-5, atol=1e-6)


def test_rating_quantize_cosine_top1_is_the_unit_code_times_its_cosine():
  rng = np.random.default_rng(4)
  e, c = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
  q, codes, w = quantize.rating_quantize(jnp.float32(e), jnp.float32(c), 0.5, "cosine_top1")
  s = _brute_scores(e, c, "cosine")
  k = s.argmax(1)
  np.testing.assert_array_equal(codes, k)
  unit = c / np.linalg.norm(c, axis=1, keepdims=True)
  np.testing.assert_allclose(q, s[np.arange(6), k][:, None] * unit[k], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.sum(w, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("mode", ["soft", "hard", "cosine_top1"])
def test_rating_quantize_gradients(mode):
  """Finite differences (away from argmax ties) agree with autodiff; the soft and hard modes'
  codebook gradient touches every code through the softmax weight, cosine_top1's only the
  chosen codes."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    e = jnp.asarray(rng.normal(size=(4, 3)))
    c = jnp.asarray(rng.normal(size=(5, 3)))
    f = lambda e, c: quantize.rating_quantize(e, c, 0.7, mode)[0]
    check_grads(f, (e, c), order=1, modes=("rev",))
    dc = np.abs(np.asarray(jax.grad(lambda c: jnp.sum(f(e, c) ** 2))(c))).sum(1)
    chosen = np.unique(np.asarray(quantize.rating_quantize(e, c, 0.7, mode)[1]))
    assert np.all(dc[chosen] > 0)
    if mode == "cosine_top1":
      assert np.all(np.delete(dc, chosen) == 0)
    else:
      assert np.all(dc > 0)


def test_residual_quantize_codebook_itself_reconstructs_exactly():
  rng = np.random.default_rng(3)
  levels, k, d = 3, 8, 4
  codebooks = rng.normal(size=(levels, k, d)).astype(np.float32)
  codebooks[1:, 5] = 0.0  # later levels hold a zero vector
  x = codebooks[0]
  codes, quantized, per_level = quantize.residual_quantize(x, codebooks)
  np.testing.assert_array_equal(codes[:, 0], np.arange(k))
  np.testing.assert_array_equal(codes[:, 1:], 5)
  np.testing.assert_array_equal(quantized, x)
  np.testing.assert_array_equal(per_level[:, 0], x)
  np.testing.assert_array_equal(per_level[:, 1:], 0.0)


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
def test_residual_quantize_matches_level_by_level_reference(metric):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(20, 6)).astype(np.float32)
  codebooks = rng.normal(size=(3, 7, 6)).astype(np.float32) * np.array([1.0, 0.5, 0.25],
                                                                        np.float32)[:, None, None]
  codes, quantized, per_level = quantize.residual_quantize(x, codebooks, metric)
  residual = x.astype(np.float64)
  for l in range(3):
    want = _brute_scores(residual, codebooks[l], metric).argmax(1)
    np.testing.assert_array_equal(codes[:, l], want)
    residual = residual - codebooks[l][want]
  np.testing.assert_allclose(quantized, x - residual, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(per_level.sum(1), quantized, rtol=1e-6, atol=1e-6)


def test_residual_quantize_planted_sum_recovers_codes():
  """x = C0[a] + C1[b] with a coarse C0 and a fine C1: both codes come back."""
  rng = np.random.default_rng(5)
  codebooks = rng.normal(size=(2, 6, 5)).astype(np.float32) * np.array([10.0, 1.0],
                                                                        np.float32)[:, None, None]
  a, b = rng.integers(0, 6, 50), rng.integers(0, 6, 50)
  codes, _, _ = quantize.residual_quantize(codebooks[0][a] + codebooks[1][b], codebooks)
  np.testing.assert_array_equal(codes[:, 0], a)
  np.testing.assert_array_equal(codes[:, 1], b)


def test_residual_quantize_eager_jit_vmap_chunked_agree():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(3, 16, 4)).astype(np.float32)
  codebooks = rng.normal(size=(2, 5, 4)).astype(np.float32)
  jitted = quantize.residual_quantize(x[0], codebooks)
  with jax.disable_jit():
    eager = quantize.residual_quantize(x[0], codebooks)
  chunked = quantize.residual_quantize(x[0], codebooks, chunk_size=5)
  vmapped = jax.vmap(quantize.residual_quantize, in_axes=(0, None))(x, codebooks)
  for a, b, c, v in zip(jitted, eager, chunked, vmapped):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a, v[0])
  with pytest.raises(ValueError, match="codebooks must be"):
    quantize.residual_quantize(x[0], codebooks[0])


def test_balanced_codes_with_one_row_per_code_is_the_best_permutation():
  """B = K and a small epsilon: the exact optimal assignment, found by enumerating all 6!."""
  import itertools
  rng = np.random.default_rng(3)
  for _ in range(5):
    scores = rng.normal(size=(6, 6)).astype(np.float32)
    best = max(itertools.permutations(range(6)),
               key=lambda p: sum(scores[i, k] for i, k in enumerate(p)))
    codes = quantize.balanced_codes(jnp.asarray(scores), 0.01, 300)
    np.testing.assert_array_equal(codes, best)
    assert codes.dtype == jnp.int32


def test_balanced_codes_spread_a_piled_batch_over_every_code():
  """A batch whose nearest code is one of two codes gets every code about B / K rows."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(512, 4)).astype(np.float32) + 5.0
  book = rng.normal(size=(16, 4)).astype(np.float32)
  nearest, scores = quantize.nearest_code(x, book)
  assert np.count_nonzero(np.bincount(nearest, minlength=16)) <= 3
  counts = np.bincount(quantize.balanced_codes(scores, 0.003, 50), minlength=16)
  assert counts.min() >= 24 and counts.max() <= 40  # B / K = 32
  # Scores already balanced (each row nearest to its own code, well separated): unchanged.
  centres = rng.normal(size=(16, 4)).astype(np.float32) * 10
  rows = np.repeat(centres, 4, axis=0) + 0.01 * rng.normal(size=(64, 4)).astype(np.float32)
  near, sc = quantize.nearest_code(rows, centres)
  np.testing.assert_array_equal(quantize.balanced_codes(sc, 0.003, 50), near)
