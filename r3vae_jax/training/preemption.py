"""Preemption: SIGTERM or SIGINT (Ctrl-C; one host), JAX's preemption sync point (multi-host)
or the deadline `config.train.stop_at` -> save and exit.

After a SIGINT, `interrupted()` is True for the rest of the process: the command line then exits
with code 130 instead of going on to the next stage. A second SIGINT while the checkpoint is
saved interrupts at once (KeyboardInterrupt)."""
from __future__ import annotations

import signal
import threading
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np


_INTERRUPTED = threading.Event()


def interrupted() -> bool:
  """Whether a SIGINT asked a `PreemptionWatch` of this process to stop."""
  return _INTERRUPTED.is_set()


class PreemptionWatch:
  """Context manager; `requested(step)` turns True once the job is asked to stop.

  Single process: a SIGTERM and SIGINT handler (installed from the main thread, the previous
  handlers put back on exit) sets a flag that the train loop polls between steps. Several processes: every
  host must stop at the same step, so JAX's coordination service decides
  (`multihost_utils.reached_preemption_sync_point`), which receives the SIGTERM itself.

  `stop_at` (Unix time in seconds; 0 = none) asks for the same stop once the clock passes it, so
  that a time-boxed run (`launch/paper_rows.sh`'s ROW_TIMEOUT) stops training but still goes on
  to evaluate, where a SIGTERM would also cut the evaluation. With several processes the clock of
  process 0 decides (broadcast at every poll), so that all stop at the same step.
  """

  def __init__(self, stop_at: float = 0.0):
    self._flag = threading.Event()
    self._previous = {}
    self._installed = False
    self._multihost = jax.process_count() > 1
    self._stop_at = float(stop_at)

  def __enter__(self) -> "PreemptionWatch":
    if not self._multihost and threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      for sig, previous in self._previous.items():
        signal.signal(sig, previous)
      self._installed = False

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    name = signal.Signals(signum).name
    logging.warning("%s received: the training stops after this step.", name)
    if signum == signal.SIGINT:
      _INTERRUPTED.set()
      signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once
    self._flag.set()

  def requested(self, step: int) -> bool:
    if self._flag.is_set():
      return True
    if self._stop_at and self._deadline_passed():
      logging.warning("config.train.stop_at (%s) passed: the training stops.",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._stop_at)))
      self._flag.set()
      return True
    if self._multihost:
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError as e:  # No preemption service (cluster launched without one).
        logging.log_first_n(logging.WARNING, "No preemption sync point: %s", 1, e)
    return False

  def _deadline_passed(self) -> bool:
    passed = np.bool_(time.time() >= self._stop_at)
    if self._multihost:
      passed = multihost_utils.broadcast_one_to_all(passed)
    return bool(passed)
