"""k-means, empty-cluster repair and residual k-means (quantize/kmeans.py)."""
import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax import quantize


def _planted(seed=0, clusters=6, per=40, d=5, spread=0.05):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, d)) * 5
  labels = np.repeat(np.arange(clusters), per)
  x = centres[labels] + spread * rng.normal(size=(clusters * per, d))
  return x.astype(np.float32), labels, centres


def test_kmeans_recovers_planted_clusters():
  x, labels, centres = _planted()
  found, assignments = quantize.kmeans(jax.random.key(0), x, 6, iters=10)
  assignments = np.asarray(assignments)
  # A bijection between planted and found clusters, centroids on the planted centres.
  mapping = {p: set(assignments[labels == p]) for p in range(6)}
  assert all(len(m) == 1 for m in mapping.values())
  assert len({next(iter(m)) for m in mapping.values()}) == 6
  for p, m in mapping.items():
    np.testing.assert_allclose(found[next(iter(m))], centres[p], atol=0.05)


def test_kmeans_plus_plus_picks_distinct_data_points():
  x, _, _ = _planted(seed=1)
  init = np.asarray(jax.jit(quantize.kmeans_plus_plus, static_argnums=2)(jax.random.key(1), x, 6))
  rows = {tuple(r) for r in init}
  assert len(rows) == 6
  assert rows <= {tuple(r) for r in x}


def test_lloyd_repairs_empty_clusters():
  """Two centroids start far from all data: without repair they would stay empty."""
  x, _, centres = _planted(seed=2, clusters=3)
  init = np.concatenate([centres, np.full((2, 5), 1e3)]).astype(np.float32)
  lloyd = jax.jit(quantize.lloyd, static_argnames="iters")
  found, assignments = lloyd(x, init, iters=1)
  counts = np.bincount(np.asarray(assignments), minlength=5)
  assert np.all(counts > 0), counts
  # The re-seeded centroids sit on data points (the farthest from their old centroids).
  data = {tuple(r) for r in x}
  assert tuple(np.asarray(found[3])) in data and tuple(np.asarray(found[4])) in data


def test_residual_kmeans_consistent_with_residual_quantize():
  x, _, _ = _planted(seed=3, clusters=4, per=30, spread=0.5)
  codebooks, codes = quantize.residual_kmeans(jax.random.key(2), x, 3, 8, iters=8)
  assert codebooks.shape == (3, 8, 5) and codes.shape == (120, 3) and codes.dtype == jnp.int32
  rq_codes, quantized, _ = quantize.residual_quantize(x, codebooks)
  np.testing.assert_array_equal(rq_codes, codes)
  codebooks, codes = np.asarray(codebooks), np.asarray(codes)
  partial = np.cumsum(np.stack([codebooks[l][codes[:, l]] for l in range(3)]), axis=0)
  errors = [float(np.mean(np.sum((x - partial[l]) ** 2, -1))) for l in range(3)]
  assert errors[0] > errors[1] > errors[2]
  np.testing.assert_allclose(np.mean(np.sum((x - quantized) ** 2, -1)), errors[2], rtol=1e-4)
