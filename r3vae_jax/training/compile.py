"""Compile once: programs reused across runs in one process, bucket shapes compiled together."""
from __future__ import annotations

from concurrent import futures
import time
from typing import Any, Callable, Sequence

from absl import logging

_PROGRAMS: dict[tuple, Any] = {}


def cached_program(key: tuple, build: Callable[[], Any]) -> Any:
  """`build()` the first time `key` is asked for in this process, the same object after.

  `jax.jit` caches executables per function object, so reusing the objects means that a second
  run of the same config on the same mesh in one process (evaluation after training, a resume
  after an in-process interruption, tests) compiles nothing again.
  """
  if key not in _PROGRAMS:
    _PROGRAMS[key] = build()
  return _PROGRAMS[key]


def precompile(compile_batch: Callable[[Any], Any], batches: Sequence[Any], what: str) -> None:
  """Compiles a step for every batch shape at once, before training.

  Each shape (e.g. each history-length bucket) is its own program; compiled lazily they would
  run one after another inside the first epoch. Compiling ahead of time on threads (XLA releases
  the GIL) overlaps them; `jax.jit` then finds each executable in its cache.

  Args:
    compile_batch: compiles the step for one global batch (e.g.
      `lambda b: step.lower(state, b).compile()`).
    batches: one global batch per shape; fewer than two: nothing to overlap, nothing done.
    what: names the shapes in the log line.
  """
  if len(batches) < 2:
    return
  start = time.time()
  with futures.ThreadPoolExecutor(len(batches)) as pool:
    list(pool.map(compile_batch, batches))
  logging.info("compiled the train step for %s in %.1fs", what, time.time() - start)
