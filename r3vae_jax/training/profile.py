"""A jax.profiler trace of training steps A..B-1, on request (`--profile_steps=A,B`).

  with StepTrace(logdir, start, stop) as trace:   # main.py, around the stage
    train(..., step_hook=hook())                   # a trainer calls hook(n) with n steps done

`hook()` is the active trace's `step` or None, so trainers need no profiler code of their own.
The trace (`plugins/profile/<run>/*.xplane.pb`, `*.trace.json.gz`) opens in TensorBoard's
profile plugin or, unpacked, in Perfetto.
"""
from __future__ import annotations

from typing import Callable

from absl import logging
import jax

_ACTIVE: list["StepTrace"] = []


class StepTrace:
  """Starts `jax.profiler` when `start` steps are done and stops it when `stop` are."""

  def __init__(self, logdir: str, start: int, stop: int):
    self.logdir, self.start, self.stop = logdir, start, stop
    self.running = False

  def step(self, done: int) -> None:
    """Called by a trainer with the number of steps done so far."""
    if done == self.start and not self.running:
      jax.profiler.start_trace(self.logdir)
      self.running = True
    elif done >= self.stop and self.running:
      self._finish()

  def _finish(self) -> None:
    jax.effects_barrier()
    jax.profiler.stop_trace()
    self.running = False
    logging.info("profile: steps %d..%d traced in %s", self.start, self.stop - 1, self.logdir)

  def __enter__(self) -> "StepTrace":
    _ACTIVE.append(self)
    return self

  def __exit__(self, *exc) -> None:
    _ACTIVE.remove(self)
    if self.running:
      self._finish()


def hook() -> Callable[[int], None] | None:
  """The step hook of the active trace, or None."""
  return _ACTIVE[-1].step if _ACTIVE else None
