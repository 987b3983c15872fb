"""Timing, the time budget, and the facts about the machine that every benchmark JSON carries.

* `measure`: warm-up calls, then `repeats` timed blocks of `iters` calls, each block closed by
  a device synchronisation (`jax.block_until_ready` / `torch.cuda.synchronize`); per-call
  seconds, median reported (host clock read only after the sync).
* `Runner.variant`: runs one variant of a workload inside the wall-clock budget; an exception
  is recorded in the JSON (`{"error": ...}`) instead of ending the run; heavy variants
  (`torch.compile`) run last, while enough budget is left.
* `environment`, `ceilings`: device, versions, commit; a measured matmul rate and copy
  bandwidth (the two ceilings of METHOD.md) next to the datasheet peaks.
"""
from __future__ import annotations

import dataclasses
import platform
import statistics
import time
import traceback
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax import io

# Datasheet peaks (dense, no sparsity) by device-name fragment: FLOP/s per dtype, HBM bytes/s.
PEAKS = {
    "H100": {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12, "hbm": 3.35e12},
    "H200": {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12, "hbm": 4.8e12},
}


@dataclasses.dataclass(frozen=True)
class Options:
  """What every workload shares: timing repeats, torch setup, peaks."""
  warmup: int
  repeats: int
  torch_steps: int              # steps per timed torch block
  torch_compile: bool
  torch_device: Any             # torch.device
  peaks: dict[str, float] | None
  compute_peak: str             # "tf32" (float32 matmuls) or "bf16"


def torch_sync(device: Any) -> Callable[[Any], None]:
  """The `sync` of `harness.measure` for torch work on `device`."""
  import torch  # pylint: disable=import-outside-toplevel

  def sync(_):
    if device.type == "cuda":
      torch.cuda.synchronize(device)
  return sync


def measure(call: Callable[[], Any], sync: Callable[[Any], Any], *, warmup: int, repeats: int,
            iters: int = 1) -> dict[str, Any]:
  """Median seconds per `call()`.

  Args:
    call: one unit of work; returns something `sync` waits for.
    sync: blocks until the device finished (e.g. `jax.block_until_ready`).
    warmup: untimed calls first (compilation, autotuning, allocator growth).
    repeats: timed blocks.
    iters: calls per block (the sync closes the block, so launches overlap inside it).

  Returns:
    {"seconds": median per call, "min_s", "max_s", "all_s": every block's per-call time,
     "repeats", "iters"}.
  """
  for _ in range(warmup):
    sync(call())
  times = []
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    out = None
    for _ in range(iters):
      out = call()
    sync(out)
    times.append((time.perf_counter() - start) / iters)
  return {"seconds": statistics.median(times), "min_s": min(times), "max_s": max(times),
          "all_s": times, "repeats": len(times), "iters": iters}


def timed_first_call(call: Callable[[], Any], sync: Callable[[Any], Any]) -> float:
  """Seconds of one synchronised call (used for compile + first run)."""
  start = time.perf_counter()
  sync(call())
  return time.perf_counter() - start


class StepLoop:
  """A compiled training step called again and again, its donated state carried between calls.

  `step(state, batch) -> (state, measurements)`; `next_batch()` gives each call's batch. Calling
  the loop runs one step and returns its loss, the value `measure` waits on; `state` holds the
  latest state (hand it to the next loop: the first one's buffers were donated).
  """

  def __init__(self, step: Callable[[Any, Any], tuple[Any, dict]], state: Any,
               next_batch: Callable[[], Any]):
    self.step, self.state, self.next_batch = step, state, next_batch

  def __call__(self) -> Any:
    self.state, measurements = self.step(self.state, self.next_batch())
    return measurements["loss"]


class Runner:
  """The wall-clock budget of the whole run and the error policy of each variant.

  Light variants run at once. Heavy ones (torch.compile) are queued by `variant` and run by
  `run_heavy` after every light one, lowest `priority` first, each only while at least
  `heavy_reserve_s` of the budget is left. `on_update()` is called after every variant (the
  runner writes the JSON there, so a run killed from outside keeps what it measured).
  """

  def __init__(self, deadline: float, heavy_reserve_s: float,
               on_update: Callable[[], None] = lambda: None):
    self.deadline, self.heavy_reserve_s, self.on_update = deadline, heavy_reserve_s, on_update
    self._heavy: list[tuple[int, int, dict, str, Callable[[], dict]]] = []

  def left(self) -> float:
    return self.deadline - time.perf_counter()

  def variant(self, entry: dict, name: str, fn: Callable[[], dict], heavy: bool = False,
              priority: int = 0) -> None:
    """Runs `fn` (or queues it when heavy); its result or error goes to `entry[name]`."""
    if heavy:
      entry[name] = {"skipped": "queued behind the light variants"}
      self._heavy.append((priority, len(self._heavy), entry, name, fn))
      return
    self._run(entry, name, fn, 0.0)

  def run_heavy(self) -> None:
    for _, _, entry, name, fn in sorted(self._heavy, key=lambda t: t[:2]):
      self._run(entry, name, fn, self.heavy_reserve_s)
    self._heavy.clear()

  def _run(self, entry: dict, name: str, fn: Callable[[], dict], need: float) -> None:
    if self.left() <= need:
      entry[name] = {"skipped": f"time budget ({self.left():.0f}s left, needs {need:.0f}s)"}
      logging.warning("%s: skipped (time budget)", name)
      return
    start = time.perf_counter()
    try:
      result = fn()
      result["wall_s"] = time.perf_counter() - start
      entry[name] = result
      logging.info("%s: %s", name, {k: v for k, v in result.items()
                                    if isinstance(v, (int, float, str))})
    except Exception as e:  # pylint: disable=broad-except  # recorded, the run goes on.
      logging.error("%s failed:\n%s", name, traceback.format_exc())
      entry[name] = {"error": f"{type(e).__name__}: {str(e)[:800]}"}
    self.on_update()


def peaks_for(device_name: str) -> dict[str, float] | None:
  """Datasheet peaks of a known device (by name fragment), else None."""
  for fragment, peaks in PEAKS.items():
    if fragment in device_name:
      return dict(peaks)
  return None


def environment(commit: str = "") -> dict[str, Any]:
  """Device, versions and commit (`commit` overrides `io.source_commit()`)."""
  import flax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  versions = {"python": platform.python_version(), "jax": jax.__version__,
              "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__}
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    versions.update(torch=torch.__version__, torch_cuda=str(torch.version.cuda),
                    transformers=transformers.__version__)
  except ImportError as e:
    versions["torch"] = f"missing ({e})"
  device = jax.devices()[0]
  return {"device": getattr(device, "device_kind", str(device)), "platform": device.platform,
          "num_devices": jax.device_count(), "commit": commit or io.source_commit(),
          "versions": versions}


def ceilings(matmul_n: int, copy_bytes: int, repeats: int) -> dict[str, float]:
  """Measured ceilings: float32 (JAX's default precision: TF32 on recent GPUs) and bfloat16
  matmul FLOP/s of `[n, n] @ [n, n]`, and copy bytes/s.

  Copy bandwidth counts bytes read plus bytes written of `x + 1` on a float32 array.
  """
  key = jax.random.PRNGKey(0)
  out = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    a = jax.random.normal(key, (matmul_n, matmul_n), dtype)
    b = jax.random.normal(jax.random.fold_in(key, 1), (matmul_n, matmul_n), dtype)
    mm = jax.jit(jnp.matmul)
    t = measure(lambda a=a, b=b, mm=mm: mm(a, b), jax.block_until_ready, warmup=2,
                repeats=repeats)["seconds"]
    name = "float32_default_precision" if dtype == jnp.float32 else jnp.dtype(dtype).name
    out[f"matmul_{name}_flops"] = 2.0 * matmul_n ** 3 / t
  x = jax.random.normal(key, (copy_bytes // 4,), jnp.float32)
  add = jax.jit(lambda v: v + 1.0)
  t = measure(lambda: add(x), jax.block_until_ready, warmup=2, repeats=repeats)["seconds"]
  out["copy_bytes_per_s"] = 2.0 * x.nbytes / t
  return out
