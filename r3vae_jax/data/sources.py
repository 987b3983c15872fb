"""Opening source files: plain or gzip, with errors that name the file and line."""
from __future__ import annotations

import gzip
import os
from typing import Iterator

from r3vae_jax import io


def require_file(path: str, what: str) -> str:
  """Returns `path` if it is a file; raises ArtifactError saying which input was expected."""
  if not path:
    raise io.ArtifactError(f"no path given for {what}")
  if not os.path.isfile(path):
    raise io.ArtifactError(f"{path}: file not found ({what})")
  return path


def undecodable_line(path: str, encoding: str = "utf-8") -> int:
  """The 1-based number of the first line of `path` that is not `encoding` text (0: none)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        raw.decode(encoding)
      except UnicodeDecodeError:
        return lineno
  return 0


def numbered_lines(path: str, what: str, encoding: str = "utf-8",
                   errors: str = "strict") -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, line without its newline) of a text or .gz file.

  Raises:
    ArtifactError: the file is missing, not decodable, or a gzip stream ends early.
  """
  require_file(path, what)
  opener = gzip.open if path.endswith(".gz") else open
  lineno = 0
  try:
    with opener(path, "rt", encoding=encoding, errors=errors, newline="") as f:
      for lineno, line in enumerate(f, 1):
        yield lineno, line.rstrip("\r\n")
  except (EOFError, gzip.BadGzipFile, OSError) as e:
    raise io.ArtifactError(
        f"{path}: after line {lineno}: truncated or corrupt file ({e})") from None
  except UnicodeDecodeError as e:
    raise io.ArtifactError(f"{path}: line {lineno + 1}: not {encoding} text ({e.reason})") from None
