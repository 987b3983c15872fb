"""The recommender's checkpoints on disk: layout, fingerprints, restore for inference, export.

Files under `workdir/recommender/`:
  checkpoints/   orbax: the latest `config.train.checkpoint_keep` steps plus the best one by
                 validation `config.train.select_metric`; each carries the meta of
                 `training.resume.make_meta` (progress of the run: `training.selection.Progress`,
                 SID-table and config fingerprints).
  metrics.jsonl  the trainer's records (`recommender/train.py`).
  result.json    the best validation metrics and the paths, when training ends.
  {split}_metrics.json, {split}_ranking.npz   written by `evaluation.evaluate_recommender`.

Both trainers write here: `recommender/train.py` while it trains, DIGER's joint trainer once
(`export_params`), so evaluation and `api.Recommender` read one layout.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from r3vae_jax import checkpoint, io
from r3vae_jax.recommender import programs as programs_lib
from r3vae_jax.recommender import state as state_lib
from r3vae_jax.recommender.tokens import check_sid_table, layout_from_config
from r3vae_jax.training import resume, selection

STAGE = "recommender"
META_VERSION = 2  # 2: the train state holds "rng" (dropout key data)


@dataclasses.dataclass(frozen=True)
class Paths:
  root: str
  checkpoints: str
  result: str


def paths(workdir: str) -> Paths:
  root = os.path.join(workdir, STAGE)
  return Paths(root, os.path.join(root, "checkpoints"), os.path.join(root, "result.json"))


def fingerprints(config: ml_collections.ConfigDict, sid_table: np.ndarray) -> dict[str, str]:
  """What a checkpoint must agree with: the SID table and the config that shapes the run."""
  # embed_grad changes how a gradient is computed, not its value: runs may resume across it.
  model = {k: v for k, v in config.recommender.to_dict().items() if k != "embed_grad"}
  run = {"recommender": model, "sid": config.sid.to_dict(),
         "max_history": config.data.max_history, "seed": config.seed,
         "batch_size": config.train.batch_size,
         # the batch order (data.make_plan) depends on these two: a resume must keep them
         "length_buckets": list(config.train.length_buckets),
         "example_window": config.train.example_window}
  return {"sid_table": io.fingerprint_array(sid_table), "config": io.fingerprint_json(run)}


def make_manager(config: ml_collections.ConfigDict, workdir: str, async_save: bool = True):
  """The checkpoint manager of `workdir/recommender/checkpoints` (latest N + the best)."""
  t = config.train
  return checkpoint.make_manager(paths(workdir).checkpoints, keep=t.checkpoint_keep,
                                 best_metric=t.select_metric, best_mode="max",
                                 async_save=async_save)


def restore_params(config: ml_collections.ConfigDict, workdir: str, sid_table: np.ndarray,
                   mesh: Mesh, which: str = "best"
                   ) -> tuple[programs_lib.ModelPrograms, dict, int]:
  """Loads trained parameters for inference.

  Args:
    config, workdir, sid_table: as `train.train_recommender`.
    mesh: where to place the parameters.
    which: "best" (by validation select_metric; the latest when none was validated) or
      "latest".

  Returns:
    (the model programs, params pure dict placed on `mesh`, checkpoint step).

  Raises:
    ArtifactError: no checkpoint, or one trained on another SID table / config.
  """
  if which not in ("best", "latest"):
    raise ValueError(f"restore_params: which must be 'best' or 'latest', got {which!r}")
  table = check_sid_table(sid_table, layout_from_config(config), "recommender: sid_table")
  directory = paths(workdir).checkpoints
  manager = make_manager(config, workdir, async_save=False)
  try:
    ckpt_step = manager.best_step() if which == "best" else None
    ckpt_step = manager.latest_step() if ckpt_step is None else ckpt_step
    if ckpt_step is None:
      raise io.ArtifactError(f"{directory}: no recommender checkpoint; run --mode=train first")
    prog = programs_lib.model_programs(config, mesh)
    tx, _ = state_lib.make_optimizer(config, 1)
    shardings = state_lib.state_shardings(prog.mdef, tx, mesh, config.train.fsdp_min_size)
    _, state, meta = checkpoint.restore(
        manager, state_lib.abstract_state(prog.mdef, tx, shardings), step=ckpt_step)
  finally:
    manager.close()
  resume.check_meta(meta, META_VERSION, fingerprints(config, table), directory)
  return prog, state["params"], ckpt_step


def export_params(config: ml_collections.ConfigDict, workdir: str, params: Any,
                  table: np.ndarray, valid: dict[str, float], epoch: int, step: int,
                  mesh: Mesh) -> None:
  """Writes `params` as the best step `step` of `workdir/recommender/checkpoints` with the meta
  that `restore_params` checks, as if `train.train_recommender` had selected them at `epoch`
  with validation metrics `valid`; the optimizer part of that train state is fresh. A step
  already there is kept."""
  select = config.train.select_metric
  manager = make_manager(config, workdir, async_save=False)
  if step in manager.all_steps():
    return
  state = programs_lib.train_programs(config, mesh, 1).init()
  state["params"] = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), params,
                                 state["params"])
  state["step"] = jax.device_put(jnp.int32(step), state["step"].sharding)
  progress = selection.Progress(
      validated_epochs=epoch, best=float(valid.get(select, -1.0)), best_epoch=epoch,
      best_step=step, best_metrics=dict(valid), finished="diger")
  meta = resume.make_meta(META_VERSION, fingerprints(config, table),
                          step=step, progress=dataclasses.asdict(progress))
  checkpoint.save(manager, step, state, meta, metrics={select: progress.best}, force=True)
  manager.wait_until_finished()
