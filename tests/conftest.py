"""Test setup: 8 fake CPU devices (for sharding tests) and the path of the real data."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import getpass  # pylint: disable=g-import-not-at-top,wrong-import-position
import importlib.util  # pylint: disable=g-import-not-at-top,wrong-import-position
import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
from types import ModuleType  # pylint: disable=g-import-not-at-top,wrong-import-position

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

# One persistent compilation cache for the whole session, both xdist workers and every process
# they start (keyed by the program, so a stale entry is never used): tests that build the same
# tiny models compile once. Every program is kept, however quick to compile: the tests run
# thousands of small ones (eager ops, checkpoint checksums), each ~30 ms to compile and ~1 ms
# to read back. Set in the environment too, so that subprocesses and `compile_cache.enable()`
# (main) use the same settings.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"r3vae_jax_test_cache_{getpass.getuser()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def load_results_script(name: str) -> ModuleType:
  """results/<name>.py or experiments/<name>.py as a module (the folders hold scripts, not
  packages)."""
  path = REPO / "results" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(
      name, path if path.exists() else REPO / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """../shared/data beside the repo; fails (not skips) when it is absent."""
  if not SHARED_DATA.is_dir():
    pytest.fail(f"real datasets expected at {SHARED_DATA} (../shared/data beside the repo)")
  return SHARED_DATA


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long tests, run on the GPU machine, not in CI")


# pytest-xdist (--dist loadgroup) hands out the xdist_group modules first (the groups with the
# most tests first), then the other tests one at a time in collection order. The files of the
# longest single tests (10-45 s each on a 2-core CPU) come first in that order, so that the end
# of the run is short tests on both workers rather than one long test while the other idles.
LONGEST_FIRST = ("test_multiprocess.py", "test_colab.py", "test_api.py",
                 "test_recommender_train.py", "test_diger_train.py", "test_multi_device.py",
                 "test_tokenizer_train.py", "test_recommender_valid_test.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


@pytest.fixture(scope="session")
def beauty_prefix(shared_data):
  """make(num_items, dim) -> (leave-one-out splits, float32[num_items, dim] PPMI-SVD vectors of
  their training part): Beauty restricted to its first `num_items` items, users keeping >= 3."""
  # pylint: disable=g-import-not-at-top  # after the XLA_FLAGS above
  from r3vae_jax.data import slices

  def make(num_items: int, dim: int):
    return slices.beauty_prefix(num_items, dim, str(shared_data))
  return make


@pytest.fixture(scope="session")
def beauty_users(shared_data):
  """make(users, levels, k, seed=0) -> (leave-one-out splits, int32[N, levels+1] SID table):
  the first `users` users of Beauty.txt with item ids made dense (N items), and random codes
  (`levels` x `k`) plus each item's rank among the items with the same codes (collision level)."""
  # pylint: disable=g-import-not-at-top  # after the XLA_FLAGS above
  import numpy as np
  from r3vae_jax.data.splits import leave_one_out

  def make(users: int, levels: int, k: int, seed: int = 0):
    lines = (shared_data / "amazon_beauty" / "Beauty.txt").read_text().splitlines()[:users]
    seqs = [np.array([int(x) for x in line.split()[1:]]) for line in lines]
    _, dense = np.unique(np.concatenate(seqs), return_inverse=True)
    dense_seqs = np.split(dense.astype(np.int32), np.cumsum([len(q) for q in seqs])[:-1])
    codes = np.random.default_rng(seed).integers(0, k, (int(dense.max()) + 1, levels))
    _, group = np.unique(codes, axis=0, return_inverse=True)
    rank = np.zeros(len(codes), np.int64)
    for g in np.unique(group):
      members = np.flatnonzero(group.ravel() == g)
      rank[members] = np.arange(members.size)
    table = np.concatenate([codes, rank[:, None]], 1).astype(np.int32)
    return leave_one_out(dense_seqs), table
  return make
