"""The path layer (`r3vae_jax.io`) on a local folder and on a fake Google Cloud Storage bucket
through the same code path; and `install_fake_gcs`, the fake that other tests (and the processes
of tests/test_multiprocess.py) run whole pipelines on."""
import hashlib
import importlib
import os
from typing import Callable

from etils.epath import backend as epath_backend
import fsspec
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
import numpy as np
from orbax.checkpoint._src.path import gcs_utils
import pytest

from r3vae_jax import checkpoint, io

BUCKET_URI = "gs://bucket"
_FSSPEC_REGISTRY = importlib.import_module("fsspec.registry")._registry  # pylint: disable=protected-access


def install_fake_gcs(root: str) -> Callable[[], None]:
  """Serves gs://BUCKET/KEY from the local folder ROOT/BUCKET/KEY; returns the undo.

  Both clients of the bucket are redirected: epath (our path layer and orbax's metadata; fsspec's
  `gs` protocol) and TensorStore (orbax's array data: a `file` kvstore in place of `gcs`). The
  code above them takes its cloud paths (`gs://` URIs, orbax's GCS commit protocol). A folder of
  the fake is a real folder, and a rename is atomic, where GCS has neither.
  """
  os.makedirs(root, exist_ok=True)

  class FakeGCS(DirFileSystem):
    protocol = ("gs", "gcs")

    def __init__(self, *args, **kwargs):
      del args, kwargs  # gcsfs options (finalize_on_close, ...)
      super().__init__(path=root, fs=LocalFileSystem(auto_mkdir=True))

  def file_kvstore(path):
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    return {"driver": "file", "path": os.path.join(root, bucket, key)}

  saved = {name: _FSSPEC_REGISTRY.get(name) for name in FakeGCS.protocol}
  saved_orbax = gcs_utils.get_kvstore_for_gcs, gcs_utils.is_hierarchical_namespace_enabled
  for name in FakeGCS.protocol:
    fsspec.register_implementation(name, FakeGCS, clobber=True)
  gcs_utils.get_kvstore_for_gcs = file_kvstore
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access

  def undo():
    for name, cls in saved.items():
      _FSSPEC_REGISTRY.pop(name, None)
      if cls is not None:
        fsspec.register_implementation(name, cls, clobber=True)
    gcs_utils.get_kvstore_for_gcs, gcs_utils.is_hierarchical_namespace_enabled = saved_orbax
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  return undo


@pytest.fixture
def fake_gcs(tmp_path):
  """The local folder that holds gs://bucket/..., while the test runs."""
  root = tmp_path / "gcs"
  undo = install_fake_gcs(str(root))
  yield root / "bucket"
  undo()


@pytest.fixture(params=["local", "gcs"])
def place(request, tmp_path):
  """(a folder of that kind, the local folder where its files end up)."""
  if request.param == "local":
    yield str(tmp_path / "run"), tmp_path / "run"
    return
  root = tmp_path / "gcs"
  undo = install_fake_gcs(str(root))
  yield f"{BUCKET_URI}/run", root / "bucket" / "run"
  undo()


def test_files_round_trip_and_land_where_expected(place):
  folder, local = place
  io.write_json(io.join(folder, "a", "m.json"), {"x": [1, 2]})
  io.write_npy(io.join(folder, "t.npy"), np.arange(6, dtype=np.int32).reshape(2, 3))
  io.write_text(io.join(folder, "n.txt"), "héllo\n")
  assert io.read_json(io.join(folder, "a", "m.json")) == {"x": [1, 2]}
  np.testing.assert_array_equal(io.read_npy(io.join(folder, "t.npy")), [[0, 1, 2], [3, 4, 5]])
  assert io.read_text(io.join(folder, "n.txt")) == "héllo\n"
  assert io.listdir(folder) == ["a", "n.txt", "t.npy"]
  assert io.glob(folder, "*.npy") == [io.join(folder, "t.npy")]
  assert io.isdir(io.join(folder, "a")) and io.isfile(io.join(folder, "n.txt"))
  assert not io.exists(io.join(folder, "missing.json"))
  assert (local / "a" / "m.json").is_file() and (local / "n.txt").read_text() == "héllo\n"
  io.rename(io.join(folder, "a"), io.join(folder, "b"))
  assert io.read_json(io.join(folder, "b", "m.json")) == {"x": [1, 2]}
  with pytest.raises(FileExistsError):
    io.rename(io.join(folder, "n.txt"), io.join(folder, "t.npy"))
  io.remove(io.join(folder, "b"))
  io.remove(io.join(folder, "never_there"))
  assert io.listdir(folder) == ["n.txt", "t.npy"]
  with pytest.raises(io.ArtifactError, match="missing.json: file not found"):
    io.read_json(io.join(folder, "missing.json"))


def test_a_failed_write_leaves_the_old_file_and_nothing_else(place):
  folder, local = place
  path = io.join(folder, "r.json")
  io.write_json(path, {"v": 1})
  with pytest.raises(RuntimeError):
    with io.atomic_open(path, "w") as f:
      f.write('{"v": 2, "trunc')
      raise RuntimeError("killed mid-write")
  assert io.read_json(path) == {"v": 1}
  assert sorted(p.name for p in local.iterdir()) == ["r.json"]  # no temp file left
  with pytest.raises(ValueError, match="atomic_open"):
    with io.atomic_open(path, "a"):
      pass


def test_uris_keep_their_scheme_and_local_paths_their_meaning(tmp_path, monkeypatch):
  assert io.join("gs://b/run", "tokenizer", "t.npy") == "gs://b/run/tokenizer/t.npy"
  assert io.abspath("gs://b/run") == "gs://b/run" and not io.is_local("gs://b/run")
  monkeypatch.chdir(tmp_path)
  assert io.abspath("run") == str(tmp_path / "run") and io.is_local("run")
  assert io.join("run", "x") == os.path.join("run", "x")


def test_only_process_zero_writes(tmp_path, monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  io.write_json(str(tmp_path / "a.json"), {"x": 1})
  io.makedirs(str(tmp_path / "d"))
  with io.open_file(str(tmp_path / "log.jsonl"), "a") as f:
    f.write("{}\n")
  assert not list(tmp_path.iterdir())
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  io.write_json(str(tmp_path / "a.json"), {"x": 1})
  assert io.read_json(str(tmp_path / "a.json")) == {"x": 1}


def test_checkpoints_on_the_bucket_restore(fake_gcs, tmp_path, monkeypatch):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(7)}
  manager = checkpoint.make_manager(f"{BUCKET_URI}/run/ckpt", async_save=False)
  checkpoint.save(manager, 3, state, {"position": 3})
  manager.wait_until_finished()
  assert (fake_gcs / "run" / "ckpt" / "3").is_dir()
  assert not (tmp_path / "gs:").exists()  # not a local folder named after the scheme
  step, restored, meta = checkpoint.restore(
      checkpoint.make_manager(f"{BUCKET_URI}/run/ckpt"), checkpoint.abstract_like(state))
  assert step == 3 and meta == {"position": 3}
  np.testing.assert_array_equal(restored["w"], state["w"])


def test_fingerprint_array_hashes_dtype_shape_and_bytes():
  """The digest is sha256(dtype, shape, C-order bytes), whatever the array's memory layout."""
  for a in (np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(12).reshape(3, 4).T,
            np.array([True, False]), np.zeros((0, 5), np.int8), np.float16(2.5) * np.ones(3),
            np.array(7, np.int64)):
    c = np.ascontiguousarray(a)  # at least 1-D
    expected = hashlib.sha256(f"{c.dtype}{c.shape}".encode())
    expected.update(c.tobytes())
    assert io.fingerprint_array(a) == expected.hexdigest()[:16]
  flat = np.arange(12, dtype=np.int32)
  assert io.fingerprint_array(flat) != io.fingerprint_array(flat.reshape(3, 4))
