"""Throughput and time left, from the work done between two calls."""
from __future__ import annotations

import time


class Eta:
  """`tick(done)` -> (units per second since the previous tick, seconds left at that rate).

  Args:
    total: units (steps, epochs) the run needs in all.
    done: units already done when the clock starts (a resumed run).
  """

  def __init__(self, total: int, done: int = 0):
    self.total, self._done, self._time = total, done, time.time()

  def tick(self, done: int) -> tuple[float, float]:
    now = time.time()
    elapsed = max(now - self._time, 1e-9)
    rate = (done - self._done) / elapsed
    self._done, self._time = done, now
    return rate, (self.total - done) / rate if rate > 0 else float("inf")
