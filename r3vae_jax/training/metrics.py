"""Where a trainer's measurements go: one `MetricsWriter` per stage, any number of sinks.

A record is a flat JSON-able dict with a "kind" ("train", "valid", "epoch", ...) and the step or
epoch it belongs to. `JsonlWriter` appends it as one line of `metrics.jsonl`; another sink (e.g.
a TensorBoard writer) implements `write`/`close` and joins through `MultiWriter`.
"""
from __future__ import annotations

import json
import os
from typing import Protocol

from r3vae_jax import io


class MetricsWriter(Protocol):
  """What a trainer writes its records to."""

  def write(self, record: dict) -> None:
    ...

  def close(self) -> None:
    ...


class JsonlWriter:
  """Appends each record to `path` as one sorted-key JSON line (process 0 only, `io`); a resumed
  run appends to the same file. On object stores, which cannot append, each record rewrites the
  file whole."""

  def __init__(self, path: str):
    self.path = path
    io.makedirs(os.path.dirname(path) or ".")

  def write(self, record: dict) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    if io.is_local(self.path):
      with io.open_file(self.path, "a") as f:
        f.write(line)
    elif io.writes_files():
      io.write_text(self.path, (io.read_text(self.path) if io.exists(self.path) else "") + line)

  def close(self) -> None:
    pass


class MultiWriter:
  """Writes every record to each of `writers`, in order."""

  def __init__(self, *writers: MetricsWriter):
    self.writers = writers

  def write(self, record: dict) -> None:
    for writer in self.writers:
      writer.write(record)

  def close(self) -> None:
    for writer in self.writers:
      writer.close()
