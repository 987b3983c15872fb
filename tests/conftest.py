"""Test setup: 8 fake CPU devices (for sharding tests) and the path of the real data."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """../shared/data beside the repo; fails (not skips) when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.fail(f"real datasets expected at {SHARED_DATA} (../shared/data beside the repo)")
  return SHARED_DATA


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long tests, run on the GPU machine, not in CI")


@pytest.fixture(scope="session")
def beauty_prefix(shared_data):
  """make(num_items, dim) -> (leave-one-out splits, float32[num_items, dim] PPMI-SVD vectors of
  their training part): Beauty restricted to its first `num_items` items, users keeping >= 3."""
  # pylint: disable=g-import-not-at-top  # after the XLA_FLAGS above
  from r3vae_jax.data import slices

  def make(num_items: int, dim: int):
    return slices.beauty_prefix(num_items, dim, str(shared_data))
  return make
