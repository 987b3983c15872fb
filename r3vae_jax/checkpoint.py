"""Orbax checkpointing: async saves, keep-latest-N plus the best by a metric, safe resume.

A checkpoint holds `state` (any pytree of arrays, restored into an already-sharded abstract
tree so orbax reshards N devices -> M devices) and `meta` (JSON: data-iterator position, RNG
seed, config fingerprint). A latest checkpoint that fails to restore (truncated, half written)
is reported and the previous good one is used.
"""
from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import orbax.checkpoint as ocp

from r3vae_jax.io import ArtifactError


def make_manager(directory: str, keep: int = 2, best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True) -> ocp.CheckpointManager:
  """A manager that keeps the `keep` latest steps and, if `best_metric`, the best one too."""
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
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict,
         metrics: dict | None = None, force: bool = False) -> None:
  """Saves `state` (arrays) and `meta` (JSON) at `step`; refuses non-finite state."""
  _check_finite(state, step)
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(meta)),
               metrics=metrics, force=force)


@jax.jit
def _finite_flags(leaves: list) -> Any:
  """One compiled reduction for a whole tree (eager per-leaf checks compile once per shape)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def _check_finite(state: Any, step: int) -> None:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  named = [(jax.tree_util.keystr(p), x) for p, x in jax.tree_util.tree_leaves_with_path(state)
           if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
  if not named:
    return
  flags = jax.device_get(_finite_flags([x for _, x in named]))
  if not flags.all():
    paths = [name for (name, _), ok in zip(named, flags) if not ok]
    raise FloatingPointError(f"refusing to checkpoint step {step}: non-finite values in {paths}")


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None
            ) -> tuple[int, Any, dict] | None:
  """Restores `step` (default: the latest that reads back whole) into `abstract_state`.

  Returns (step, state, meta), or None when the directory holds no checkpoint. A step that
  fails to read is logged and skipped in favour of the one before it.
  """
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
  for s in steps:
    try:
      restored = manager.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
      return s, restored["state"], dict(restored["meta"])
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds.
      if step is not None:
        raise ArtifactError(f"{manager.directory}/{s}: checkpoint unreadable: {e}") from e
      logging.warning("Checkpoint %s/%d is unreadable (%s); trying the previous one.",
                      manager.directory, s, str(e).splitlines()[0][:200])
  return None


def abstract_like(tree: Any) -> Any:
  """`jax.ShapeDtypeStruct`s (with shardings) for restoring into the layout of `tree`."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
