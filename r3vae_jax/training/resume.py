"""Resume a stage from its latest readable checkpoint, refusing one of another run.

A checkpoint's meta (JSON) carries {"version": the trainer's meta layout, "fingerprints": {name:
hex digest of what the checkpoint must agree with (config sections, SID table, vectors)}, ...
the trainer's own progress}. `resume` restores the latest checkpoint into `tree`'s layout and
checks both; a mismatch is one `io.ArtifactError` naming the directory and the differing part.
"""
from __future__ import annotations

from typing import Any

import orbax.checkpoint as ocp

from r3vae_jax import checkpoint, io


def make_meta(version: int, fingerprints: dict[str, str], **progress: Any) -> dict[str, Any]:
  """The meta of a checkpoint: layout version, fingerprints and the trainer's progress."""
  return {"version": version, "fingerprints": dict(fingerprints), **progress}


def check_meta(meta: dict[str, Any], version: int, fingerprints: dict[str, str],
               directory: str) -> None:
  """Raises `io.ArtifactError` unless `meta` has `version` and every one of `fingerprints`."""
  if meta.get("version") != version:
    raise io.ArtifactError(f"use a fresh --workdir: {directory}: checkpoint meta version "
                           f"{meta.get('version')!r}, this code reads version {version}")
  found = meta.get("fingerprints") or {}
  for key, value in fingerprints.items():
    if found.get(key) != value:
      raise io.ArtifactError(
          f"use a fresh --workdir, or the {key} this one was trained with: {directory}: "
          f"checkpoint of another run: trained with a different {key} (fingerprint "
          f"{found.get(key)} != {value})")


def resume(manager: ocp.CheckpointManager, tree: Any, version: int,
           fingerprints: dict[str, str]) -> tuple[int, Any, dict[str, Any]] | None:
  """(step, restored tree, meta) of the latest readable checkpoint, checked (`check_meta`);
  None when the directory holds none.

  Args:
    manager: the stage's `checkpoint.make_manager`.
    tree: a pytree in the layout to restore into: arrays (their shardings are kept) or
      `jax.ShapeDtypeStruct`s.
    version, fingerprints: what the meta must carry.
  """
  steps = manager.all_steps()
  if steps:  # the latest meta first: another run's arrays need not even fit `tree`
    try:
      meta = manager.restore(max(steps), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception:  # pylint: disable=broad-except  # unreadable: checkpoint.restore decides
      meta = None
    if meta is not None and isinstance(meta.get("meta"), dict):
      check_meta(meta["meta"], version, fingerprints, str(manager.directory))
  abstract = checkpoint.abstract_like(tree)
  restored = checkpoint.restore(manager, abstract)
  if restored is None:
    return None
  check_meta(restored[2], version, fingerprints, str(manager.directory))
  return restored
