"""Preemption: SIGTERM (one host) or JAX's preemption sync point (multi-host) -> save and exit."""
from __future__ import annotations

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
  """Context manager; `requested(step)` turns True once the job is asked to stop.

  Single process: a SIGTERM handler (installed from the main thread, the previous handler put
  back on exit) sets a flag that the train loop polls between steps. Several processes: every
  host must stop at the same step, so JAX's coordination service decides
  (`multihost_utils.reached_preemption_sync_point`), which receives the SIGTERM itself.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    self._installed = False
    self._multihost = jax.process_count() > 1

  def __enter__(self) -> "PreemptionWatch":
    if not self._multihost and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint and stopping after this step.")
    self._flag.set()

  def requested(self, step: int) -> bool:
    if self._flag.is_set():
      return True
    if self._multihost:
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError as e:  # No preemption service (cluster launched without one).
        logging.log_first_n(logging.WARNING, "No preemption sync point: %s", 1, e)
    return False
