"""OPQ tokenizer: codes are nearest centroids, the rotation is orthogonal and lowers distortion."""
import numpy as np
import pytest

from r3vae_jax.rpg import opq


def _correlated(n=400, d=16, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d))).astype(np.float32)


def test_codes_are_nearest_centroids_and_rotation_orthogonal():
  x = _correlated()
  q = opq.train(x, m=4, k=8, pca_dim=8, outer_iters=3, final_iters=5)
  codes = opq.encode(q, x)
  assert codes.shape == (400, 4) and codes.min() >= 0 and codes.max() < 8
  np.testing.assert_allclose(q.rotation @ q.rotation.T, np.eye(8), atol=1e-4)
  z = ((x - q.mean) @ q.projection) @ q.rotation
  for j in range(4):
    sub = z[:, 2 * j:2 * j + 2]
    dist = ((sub[:, None, :] - q.codebooks[j][None]) ** 2).sum(-1)
    np.testing.assert_array_equal(codes[:, j], dist.argmin(1))


def test_whitening_gives_unit_variance():
  x = _correlated()
  mean, proj = opq.pca_whiten(x, 6)
  np.testing.assert_allclose(((x - mean) @ proj).std(0, ddof=1), 1.0, rtol=1e-3)


def test_rotation_lowers_distortion_over_plain_pq():
  x = _correlated(seed=1)
  plain = opq.train(x, m=4, k=8, pca_dim=8, outer_iters=0, final_iters=10)
  rotated = opq.train(x, m=4, k=8, pca_dim=8, outer_iters=10, final_iters=10)
  assert opq.distortion(rotated, x) < opq.distortion(plain, x)


def test_bad_sizes_raise():
  x = _correlated(n=20)
  with pytest.raises(ValueError, match="must divide"):
    opq.train(x, m=3, k=4, pca_dim=8)
  with pytest.raises(ValueError, match="codebook size"):
    opq.train(x, m=4, k=64, pca_dim=8)
