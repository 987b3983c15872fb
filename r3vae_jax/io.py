"""The path layer: every file of a run is read and written here, through `etils.epath`.

A path is a string: a local path, or a URI of cloud storage (`gs://bucket/run`, `s3://...`) that
epath opens with fsspec (or TensorFlow's gfile where installed), so the same code writes a local
workdir and a bucket. Nothing already written is ever half-overwritten:

- local files are written to a temporary file in the same directory, flushed to disk and renamed
  into place (`os.replace`, atomic on POSIX);
- on object stores (GCS, S3) an object appears whole when its upload completes (a write is atomic
  per object) but renames are copies, so an artifact is built in memory and uploaded in one write
  once the block that produces it succeeds; a failed block uploads nothing.

In a job of several JAX processes (hosts) every process runs the same code, and only process 0
writes: the others' writes, renames and deletions here do nothing (their bytes are the same), so
each file is written once. A process reads what another wrote only after a barrier
(`parallel.sync_processes`, between the stages of `main`).

`fingerprint` hashes the bytes of an artifact (or a config) so that later stages can refuse to
mix a SID table from one tokenizer run with a recommender trained on another.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Iterator

from etils import epath
import numpy as np


class ArtifactError(ValueError):
  """An input or artifact file is missing, malformed or inconsistent."""


def writes_files() -> bool:
  """False in the processes other than process 0 of a multi-process JAX job (module docstring)."""
  jax = sys.modules.get("jax")  # not imported: a single process that has not started JAX
  return jax is None or not jax.distributed.is_initialized() or jax.process_index() == 0


def is_local(path: str) -> bool:
  """True for a path of the local filesystem (no `scheme://` prefix)."""
  return "://" not in os.fspath(path)


def as_path(path: str) -> epath.Path:
  """The epath of `path` (local or a cloud URI)."""
  return epath.Path(path)


def join(*parts: str) -> str:
  """`os.path.join` that keeps a URI's `scheme://` (its parts are joined with `/`)."""
  return os.fspath(epath.Path(*parts)) if not is_local(parts[0]) else os.path.join(*parts)


def abspath(path: str) -> str:
  """A local path made absolute; a URI unchanged."""
  return os.path.abspath(path) if is_local(path) else os.fspath(path)


def exists(path: str) -> bool:
  return as_path(path).exists()


def isdir(path: str) -> bool:
  return as_path(path).is_dir()


def isfile(path: str) -> bool:
  p = as_path(path)
  return p.exists() and not p.is_dir()


def makedirs(path: str) -> None:
  """Creates `path` and its parents (on object stores folders are implicit: nothing to do)."""
  if writes_files():
    as_path(path).mkdir(parents=True, exist_ok=True)


def listdir(path: str) -> list[str]:
  """The names in folder `path`, sorted."""
  return sorted(p.name for p in as_path(path).iterdir())


def glob(directory: str, pattern: str) -> list[str]:
  """The paths in `directory` that match `pattern` (one level, `*`/`?` wildcards), sorted."""
  return sorted(os.fspath(p) for p in as_path(directory).glob(pattern))


def rename(source: str, target: str) -> None:
  """Renames a file or folder; atomic on a local filesystem, a copy and delete on object
  stores. Fails if `target` exists."""
  if not writes_files():
    return
  if exists(target):
    raise FileExistsError(f"{target}: exists, not renaming {source} onto it")
  as_path(source).rename(target)


def remove(path: str) -> None:
  """Deletes a file or a folder with everything in it; nothing when `path` does not exist."""
  p = as_path(path)
  if not writes_files():
    return
  if p.is_dir():
    p.rmtree()
  else:
    p.unlink(missing_ok=True)


def open_file(path: str, mode: str = "r") -> Any:
  """Opens a file for reading (`r`, `rb`) or appending (`a`; local files only, object stores
  have no append) through epath. Use `atomic_open` to write."""
  if "w" in mode:
    raise ValueError(f"open_file({path!r}, {mode!r}): write through atomic_open")
  if "a" in mode and not is_local(path):
    raise ValueError(f"{path}: object stores cannot append to a file")
  if "a" in mode and not writes_files():
    return io.BytesIO() if "b" in mode else io.StringIO()
  return as_path(path).open(mode)


def read_text(path: str) -> str:
  return as_path(path).read_text()


def read_bytes(path: str) -> bytes:
  return as_path(path).read_bytes()


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[Any]:
  """Opens a file to write whose content appears at `path` only if the block succeeds.

  Local: a temp file beside `path`, fsync'ed and renamed onto it. Elsewhere: an in-memory
  buffer uploaded to `path` in one write after the block. In processes that do not write
  (`writes_files`), a buffer that is dropped.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open({path!r}, {mode!r}): mode must be 'w' or 'wb'")
  if not writes_files():
    yield io.BytesIO() if "b" in mode else io.StringIO()
    return
  if not is_local(path):
    buffer = io.BytesIO() if "b" in mode else io.StringIO()
    yield buffer
    as_path(os.path.dirname(path)).mkdir(parents=True, exist_ok=True)
    with as_path(path).open(mode) as f:
      f.write(buffer.getvalue())
    return
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:  # a full disk, a quota, a read-only file system: name the file
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise OSError(f"{path}: cannot write ({e.strerror or e})") from e
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_text(path: str, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def write_bytes(path: str, data: bytes) -> None:
  with atomic_open(path, "wb") as f:
    f.write(data)


def write_json(path: str, obj: Any) -> None:
  with atomic_open(path, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True, default=_json_default)
    f.write("\n")


def _json_default(x):
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if hasattr(x, "to_dict"):
    return x.to_dict()
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_json(path: str) -> Any:
  if not exists(path):
    raise ArtifactError(f"{path}: file not found")
  try:
    with open_file(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ArtifactError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None


def read_jsonl(path: str, convert: Any = None) -> list[Any]:
  """The JSON objects of a JSON-lines file, in order (blank lines skipped).

  Args:
    path: the file.
    convert: optional `record -> value`, applied to each object; its ValueError, KeyError or
      TypeError becomes an ArtifactError naming the line.

  Raises:
    FileNotFoundError: no such file.
    ArtifactError: a line that is not a JSON object, or that `convert` refuses (names the file
      and line).
  """
  records = []
  with open_file(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{number}: not JSON ({e})") from None
      if not isinstance(record, dict):
        raise ArtifactError(f"{path}:{number}: expected a JSON object")
      if convert is not None:
        try:
          record = convert(record)
        except (ValueError, KeyError, TypeError) as e:
          raise ArtifactError(f"{path}:{number}: unexpected record ({e!r})") from None
      records.append(record)
  return records


def source_commit() -> str:
  """The commit of this source tree for result files: $R3VAE_COMMIT (set it where the tree was
  copied without .git, e.g. a GPU machine), else `git rev-parse --short HEAD` with "+dirty"
  when tracked files differ from that commit (the tree that ran is not the commit), else
  "unknown"."""
  if os.environ.get("R3VAE_COMMIT"):
    return os.environ["R3VAE_COMMIT"]
  git = lambda *args: subprocess.run(
      ["git", *args], capture_output=True, text=True, timeout=10, check=True,
      cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  try:
    commit = git("rev-parse", "--short", "HEAD")
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def write_npy(path: str, array: np.ndarray) -> None:
  with atomic_open(path, "wb") as f:
    np.save(f, np.asarray(array), allow_pickle=False)


def read_npy(path: str) -> np.ndarray:
  if not exists(path):
    raise ArtifactError(f"{path}: file not found")
  try:
    array = np.load(path if is_local(path) else io.BytesIO(read_bytes(path)), allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise ArtifactError(f"{path}: not a readable .npy array ({e})") from None
  if not isinstance(array, np.ndarray):  # an .npz archive
    array.close()
    raise ArtifactError(f"{path}: not a readable .npy array (an .npz archive)")
  return array


def fingerprint_array(array: np.ndarray) -> str:
  """Short sha256 of an array's dtype, shape and bytes."""
  a = np.ascontiguousarray(array)
  h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
  h.update(a.reshape(-1).view(np.uint8))  # the array's own buffer: no copy of its bytes
  return h.hexdigest()[:16]


def fingerprint_json(obj: Any) -> str:
  """Short sha256 of a JSON-serialisable object (e.g. a config dict), key-order independent."""
  buf = io.StringIO()
  json.dump(obj, buf, sort_keys=True, default=_json_default)
  return hashlib.sha256(buf.getvalue().encode()).hexdigest()[:16]
