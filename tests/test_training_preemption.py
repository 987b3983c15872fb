"""PreemptionWatch's decisions: the deadline on one process and, faked, on several.

The suite has no multi-process run, so the multi-host path is driven by replacing
`jax.process_count` and the two `multihost_utils` calls the watch makes: the test checks that the
broadcast value (process 0's clock), not the local clock, decides, and that JAX's preemption sync
point is asked only while no deadline has stopped the run.
"""
import time

import jax
from jax.experimental import multihost_utils
import numpy as np
import pytest

from r3vae_jax.training.preemption import PreemptionWatch


def test_one_process_stops_once_the_deadline_passes():
  assert not PreemptionWatch(stop_at=time.time() + 3600).requested(0)
  assert not PreemptionWatch(stop_at=0.0).requested(0)   # 0 = no deadline
  watch = PreemptionWatch(stop_at=time.time() - 1.0)
  assert watch.requested(0)
  assert watch.requested(1)  # stays requested


@pytest.fixture
def two_processes(monkeypatch):
  """A fake second process: process 0's deadline verdict is `verdict["process0"]`."""
  calls = {"broadcast": [], "sync_point": []}
  verdict = {"process0": False, "sync_point": False}

  def broadcast_one_to_all(local):
    calls["broadcast"].append(bool(local))
    return np.bool_(verdict["process0"])

  def reached_preemption_sync_point(step):
    calls["sync_point"].append(step)
    return verdict["sync_point"]

  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", broadcast_one_to_all)
  monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point",
                      reached_preemption_sync_point)
  return calls, verdict


def test_several_processes_follow_process_zeros_clock(two_processes):
  calls, verdict = two_processes
  # This host's deadline has passed, process 0's has not: no stop, and the sync point is asked.
  watch = PreemptionWatch(stop_at=time.time() - 1.0)
  with watch:
    assert not watch.requested(5)
  assert calls["broadcast"] == [True] and calls["sync_point"] == [5]
  # This host's deadline is an hour away, process 0's has passed: stop at this step.
  verdict["process0"] = True
  watch = PreemptionWatch(stop_at=time.time() + 3600)
  with watch:
    assert watch.requested(6)
    assert watch.requested(7)   # once stopped, no further collective call
  assert calls["broadcast"] == [True, False] and calls["sync_point"] == [5]


def test_several_processes_stop_at_the_sync_point_without_a_deadline(two_processes):
  calls, verdict = two_processes
  watch = PreemptionWatch(stop_at=0.0)
  assert not watch.requested(3)
  verdict["sync_point"] = True
  assert watch.requested(4)
  assert calls["broadcast"] == [] and calls["sync_point"] == [3, 4]
