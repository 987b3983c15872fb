"""Orbax checkpointing: async saves, keep-latest-N plus the best by a metric, safe resume.

A checkpoint holds `state` (any pytree of arrays, restored into an already-sharded abstract
tree so orbax reshards N devices -> M devices) and `meta` (JSON: data-iterator position, RNG
seed, config fingerprint). `save` refuses non-finite state and stores a checksum of every
leaf in the meta (orbax itself reads flipped bytes back without complaint); `restore` verifies
them. A latest checkpoint that fails to restore (truncated, half written, garbled) is
reported, renamed to `<step>.unreadable` (so the step can be written again) and the previous
good one is used; when none reads back, restore raises instead of starting over.
"""
from __future__ import annotations

import contextlib
import functools
import logging as std_logging
import weakref
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from r3vae_jax import io
from r3vae_jax.io import ArtifactError

# Orbax writes a replicated array "replica-parallel": one device slice per replica, each its own
# op. For these models' small arrays (a few hundred leaves of KiBs) the slicing costs more than
# the write (a 40-leaf state on 8 devices: 0.75 -> 0.45 s per save); arrays whose slice per
# replica reaches MIN_REPLICA_SLICE_BYTES still are.
MIN_REPLICA_SLICE_BYTES = 2**20


def _register_array_handler() -> None:
  absl_logger = std_logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(std_logging.ERROR)  # orbax warns on every override of a handler
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES), override=True)
  finally:
    absl_logger.setLevel(level)


_register_array_handler()


def make_manager(directory: str, keep: int = 2, best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True) -> ocp.CheckpointManager:
  """A manager that keeps the `keep` latest steps and, if `best_metric`, the best one too.

  `directory` is local or a cloud URI (`gs://...`); with several processes every one makes the
  same manager and orbax has each write its shards while process 0 writes the metadata.

  Raises:
    ArtifactError: `directory` exists but is not a folder (read as "no checkpoint", it would
      start the run over).
  """
  if io.exists(directory) and not io.isdir(directory):
    raise ArtifactError(f"{directory}: not a folder (checkpoints go there); move it away or use "
                        "another --workdir")
  policies = [ocp.checkpoint_managers.LatestN(keep)]
  if best_metric is not None:
    policies.append(ocp.checkpoint_managers.BestN(
        get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      enable_async_checkpointing=async_save,
      best_fn=(lambda m: m[best_metric]) if best_metric else None,
      best_mode=best_mode,
      cleanup_tmp_directories=True,
  )
  manager = ocp.CheckpointManager(io.as_path(io.abspath(directory)), options=options)
  _MANAGERS.add(manager)
  return manager


_MANAGERS: "weakref.WeakSet[ocp.CheckpointManager]" = weakref.WeakSet()


def close_all() -> None:
  """Closes every manager `make_manager` made that is still alive, so that their background
  threads end before the interpreter does (a process that exits on an error)."""
  for manager in list(_MANAGERS):
    with contextlib.suppress(Exception):
      manager.close()


CHECKSUMS_KEY = "state_checksums"   # added to meta by `save`, checked and removed by `restore`


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict,
         metrics: dict | None = None, force: bool = False) -> None:
  """Saves `state` (arrays) and `meta` (JSON) at `step`; refuses non-finite state."""
  names, finite, checksums = _summaries(state)
  if not finite.all():
    paths = [name for name, ok in zip(names, finite) if not ok]
    raise FloatingPointError(f"refusing to checkpoint step {step}: non-finite values in {paths}")
  meta = {**meta, CHECKSUMS_KEY: [int(c) for c in checksums]}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)),
               metrics=metrics, force=force)


def _words(x: jax.Array) -> jax.Array:
  """The raw bits of `x` as uint32 (one word per element; 8-byte types: [..., 2])."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _checksum(x: jax.Array) -> jax.Array:
  """uint32 sum of word * (odd weight of its position): any single changed word changes it.

  Exact modular arithmetic, so the value is the same however the array is sharded; the
  position weights are built elementwise (no reshape), so no resharding either.
  """
  w = _words(x)
  index, stride = jnp.zeros(w.shape, jnp.uint32), 1
  for axis in reversed(range(w.ndim)):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, w.shape, axis) * jnp.uint32(stride)
    stride = stride * w.shape[axis] % 2**32
  weight = index * jnp.uint32(0x9E3779B1) | jnp.uint32(1)
  return jnp.sum(w * weight, dtype=jnp.uint32)


@functools.partial(jax.jit, static_argnums=1)
def _summarize(leaves: list, is_float: tuple) -> tuple[Any, Any]:
  """One compiled program for a whole tree (eager per-leaf checks compile once per shape)."""
  finite = [jnp.all(jnp.isfinite(x)) if f else jnp.bool_(True) for x, f in zip(leaves, is_float)]
  return jnp.stack(finite), jnp.stack([_checksum(x) for x in leaves])


def _summaries(state: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(leaf paths, finite flags bool[n], checksums uint32[n]) of the array leaves of `state`."""
  named = [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_leaves_with_path(state)
           if hasattr(x, "dtype")]
  if not named:
    return [], np.ones(0, bool), np.zeros(0, np.uint32)
  leaves = [x for _, x in named]
  is_float = tuple(bool(jnp.issubdtype(x.dtype, jnp.inexact)) for x in leaves)
  finite, checksums = jax.device_get(_summarize(leaves, is_float))
  return [n for n, _ in named], np.asarray(finite), np.asarray(checksums)


def _verify(state: Any, meta: dict) -> dict:
  """Checks restored `state` against the checksums in `meta`; returns meta without them."""
  meta = dict(meta)
  expected = meta.pop(CHECKSUMS_KEY, None)
  if expected is None:  # written before checksums existed
    return meta
  names, _, checksums = _summaries(state)
  if len(expected) != len(checksums):
    raise ArtifactError(f"{len(checksums)} arrays, the meta lists {len(expected)} checksums")
  bad = [n for n, a, b in zip(names, checksums, expected) if int(a) != int(b)]
  if bad:
    raise ArtifactError(f"checksum mismatch (corrupted data) in {', '.join(bad[:4])}"
                        + (f" and {len(bad) - 4} more" if len(bad) > 4 else ""))
  return meta


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None
            ) -> tuple[int, Any, dict] | None:
  """Restores `step` (default: the latest that reads back whole) into `abstract_state`.

  With `step=None`, a step that fails to read or verify is logged and the one before it is
  tried; once one reads, the failed newer ones are renamed `<step>.unreadable`. When steps
  exist but none reads (a checkpoint of another model or code version, or all damaged),
  nothing is renamed and ArtifactError says why: starting over silently would lose the run.

  Returns:
    (step, state, meta), or None when the directory holds no checkpoint.

  Raises:
    ArtifactError: an explicit `step` fails, or no step reads.
  """
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
  failed = []
  for s in steps:
    try:
      restored = manager.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      meta = _verify(restored["state"], restored["meta"])
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds.
      message = " ".join(str(e).split())[:300]
      if step is not None:
        raise ArtifactError(f"{manager.directory}/{s}: checkpoint unreadable: {message}") from e
      logging.warning("Checkpoint %s/%d is unreadable (%s); trying the previous one.",
                      manager.directory, s, message)
      failed.append((s, message))
      continue
    if failed:
      _set_aside(manager, [f for f, _ in failed])
    return s, restored["state"], meta
  if failed:
    reasons = "; ".join(f"{s}: {m}" for s, m in failed)
    raise ArtifactError(f"{manager.directory}: no checkpoint reads back ({reasons}). If the "
                        "model, config or code changed, use a fresh --workdir; to start over, "
                        "delete this folder")
  return None


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Renames unreadable step folders to `<step>.unreadable[.N]`, kept for inspection."""
  if jax.process_index() == 0:
    for s in steps:
      path = io.join(str(manager.directory), str(s))
      target, n = path + ".unreadable", 1
      while io.exists(target):
        target, n = f"{path}.unreadable.{n}", n + 1
      if io.isdir(path):
        io.rename(path, target)
        logging.warning("Moved unreadable checkpoint %s to %s", path, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("checkpoint.set_aside")
  manager.reload()


def abstract_like(tree: Any) -> Any:
  """`jax.ShapeDtypeStruct`s (with shardings) for restoring into the layout of `tree`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
