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
