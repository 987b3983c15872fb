"""Where a trainer's measurements go: one `MetricsWriter` per stage, any number of sinks.

A record is a flat JSON-able dict with a "kind" ("train", "valid", "epoch", ...) and the step or
epoch it belongs to. `JsonlWriter` appends it as one line of `metrics.jsonl`; another sink (e.g.
a TensorBoard writer) implements `write`/`close` and joins through `MultiWriter`.
"""
from __future__ import annotations

import json
import os
from typing import Protocol

import jax


class MetricsWriter(Protocol):
  """What a trainer writes its records to."""

  def write(self, record: dict) -> None:
    ...

  def close(self) -> None:
    ...


class JsonlWriter:
  """Appends each record to `path` as one sorted-key JSON line (process 0 only); a resumed run
  appends to the same file."""

  def __init__(self, path: str):
    self.path = path
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

  def write(self, record: dict) -> None:
    if jax.process_index() == 0:
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")

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
