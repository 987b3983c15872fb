"""Atomic, fingerprinted artifact files: nothing already written is ever half-overwritten.

Every artifact is written to a temporary file in the same directory and renamed into place.
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
import tempfile
from typing import Any, Iterator

import numpy as np


class ArtifactError(ValueError):
  """An input or artifact file is missing, malformed or inconsistent."""


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[Any]:
  """Opens a temp file beside `path`; renames it onto `path` only if the block succeeds."""
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
  if not os.path.exists(path):
    raise ArtifactError(f"{path}: file not found")
  try:
    with open(path, encoding="utf-8") as f:
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
  with open(path, encoding="utf-8") as f:
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
  if not os.path.exists(path):
    raise ArtifactError(f"{path}: file not found")
  try:
    array = np.load(path, allow_pickle=False)
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
  h.update(a.tobytes())
  return h.hexdigest()[:16]


def fingerprint_json(obj: Any) -> str:
  """Short sha256 of a JSON-serialisable object (e.g. a config dict), key-order independent."""
  buf = io.StringIO()
  json.dump(obj, buf, sort_keys=True, default=_json_default)
  return hashlib.sha256(buf.getvalue().encode()).hexdigest()[:16]
