"""Sharded (8 fake CPU devices, `data` axis) quantisation and metrics equal single-device."""
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from r3vae_jax import parallel
from r3vae_jax import quantize


def test_sharded_residual_quantize_and_metrics_match_single_device():
  assert len(jax.devices()) == 8, "tests/conftest.py sets 8 fake CPU devices"
  mesh = parallel.make_mesh()
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 8)).astype(np.float32)
  codebooks = rng.normal(size=(3, 6, 8)).astype(np.float32)

  single = quantize.residual_quantize(x, codebooks)
  x_sharded = jax.device_put(x, NamedSharding(mesh, P(parallel.DATA)))
  books = jax.device_put(codebooks, parallel.replicated(mesh))
  sharded = quantize.residual_quantize(x_sharded, books)
  assert sharded[0].sharding.num_devices == 8
  for a, b in zip(single, sharded):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  codes = single[0][:, :2]
  codes_sharded = jax.device_put(np.asarray(codes), NamedSharding(mesh, P(parallel.DATA)))
  np.testing.assert_allclose(float(quantize.semantic_cohesion(x_sharded, codes_sharded)),
                             float(quantize.semantic_cohesion(x, codes)), rtol=1e-6)
  assert float(quantize.collision_rate(codes_sharded)) == float(quantize.collision_rate(codes))
