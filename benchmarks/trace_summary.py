"""A compact summary of a `jax.profiler` trace: the top kernels and the device's idle gaps.

Reads the Perfetto JSON (`perfetto_trace.json.gz`) that `jax.profiler.trace(dir,
create_perfetto_trace=True)` writes. Kernels are the complete events ("ph": "X") of the GPU
streams (threads named "Stream ..." of a "/device:..." process); on a CPU backend, where there
is no device timeline, the XLA thunks of the host (events naming an `hlo_op`) stand in.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
from typing import Any


def find_trace(trace_dir: str) -> str:
  """The newest perfetto_trace.json.gz under `trace_dir`."""
  paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
  if not paths:
    raise ValueError(f"error: no perfetto_trace.json.gz under {trace_dir!r}; expected the "
                     f"output of jax.profiler.trace(..., create_perfetto_trace=True)")
  return max(paths, key=os.path.getmtime)


def kernel_events(events: list[dict]) -> tuple[list[dict], str]:
  """The kernel events and where they came from ("device streams" or "host thunks")."""
  process = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
  thread = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name"}
  complete = [e for e in events if e.get("ph") == "X" and e.get("dur", 0) > 0]
  device = [e for e in complete
            if process.get(e["pid"], "").startswith("/device:")
            and thread.get((e["pid"], e.get("tid")), "").startswith("Stream")]
  if device:
    return device, "device streams"
  host = [e for e in complete if "hlo_op" in (e.get("args") or {})
          and not e["name"].startswith("end: ")]
  return host, "host thunks"


def _union_gaps(intervals: list[tuple[float, float]]) -> tuple[float, list[float]]:
  """Busy time of the union of [start, end) intervals and the idle gaps between them."""
  busy, gaps, end = 0.0, [], None
  for start, stop in sorted(intervals):
    if end is None or start > end:
      if end is not None:
        gaps.append(start - end)
      busy += stop - start
      end = stop
    elif stop > end:
      busy += stop - end
      end = stop
  return busy, gaps


def summarise(events: list[dict], steps: int, top: int = 25) -> dict[str, Any]:
  """Per-step kernel statistics of a trace of `steps` update steps.

  Returns:
    {"source", "steps", "kernels_per_step", "window_us_per_step", "busy_us_per_step",
     "idle_us_per_step", "idle_share", "gaps": {count per step of gaps over 1/5/20 us, the
     largest gaps}, "top": [{"name", "us_per_step", "calls_per_step", "share_of_busy"}],
     "by_kind": {kind: us_per_step}} (times in microseconds; kinds from kernel names).
  """
  kernels, source = kernel_events(events)
  if not kernels:
    raise ValueError("error: the trace holds no kernel events; expected device streams or "
                     "host thunks of an XLA program")
  steps = max(int(steps), 1)
  intervals = [(e["ts"], e["ts"] + e["dur"]) for e in kernels]
  window = max(b for _, b in intervals) - min(a for a, _ in intervals)
  busy, gaps = _union_gaps(intervals)
  total = collections.defaultdict(float)
  calls = collections.Counter()
  for e in kernels:
    total[e["name"]] += e["dur"]
    calls[e["name"]] += 1
  kernel_sum = sum(total.values())
  ranked = sorted(total, key=total.get, reverse=True)[:top]
  by_kind = collections.defaultdict(float)
  for name, us in total.items():
    by_kind[_kind(name)] += us / steps
  return {
      "source": source, "steps": steps, "kernels_per_step": len(kernels) / steps,
      "window_us_per_step": window / steps, "busy_us_per_step": busy / steps,
      "idle_us_per_step": (window - busy) / steps,
      "idle_share": (window - busy) / window if window else 0.0,
      "gaps": {"over_1us_per_step": sum(g > 1 for g in gaps) / steps,
               "over_5us_per_step": sum(g > 5 for g in gaps) / steps,
               "over_20us_per_step": sum(g > 20 for g in gaps) / steps,
               "largest_us": sorted(gaps, reverse=True)[:5]},
      "top": [{"name": n[:120], "us_per_step": total[n] / steps,
               "calls_per_step": calls[n] / steps,
               "share_of_busy": total[n] / kernel_sum} for n in ranked],
      "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
  }


def _kind(name: str) -> str:
  """A coarse class of a kernel by its name."""
  low = name.lower()
  for kind, marks in (("matmul", ("gemm", "cublas", "cutlass", "matmul", "dot", "xmma",
                                  "sm90", "nvjet")),
                      ("attention", ("fmha", "flash", "cudnn")),
                      ("reduction", ("reduce", "reduction")),
                      ("rng", ("rng", "random", "philox", "threefry")),
                      ("copy", ("copy", "memcpy", "memset", "transpose")),
                      ("fusion", ("fusion", "loop_", "input_", "triton"))):
    if any(m in low for m in marks):
      return kind
  return "other"


def summarise_dir(trace_dir: str, steps: int, top: int = 25) -> dict[str, Any]:
  """`summarise` of the newest trace under `trace_dir`, with the trace's path."""
  path = find_trace(trace_dir)
  with gzip.open(path, "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  return {"trace": path, **summarise(events, steps, top)}
