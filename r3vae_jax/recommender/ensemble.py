"""Ensembles of recommenders on one SID table: extra members trained, all decoded together.

`train.ensemble_size` = K > 1 trains K recommenders on the same SID table that differ only in
their seed (initialisation, dropout, batch order). Member 0 is the run's own
(`workdir/recommender/`), member k lives in `workdir/ensemble/member<k>/recommender/` with seed
`config.seed + SEED_STRIDE * k`. Evaluation decodes the K members with ONE constrained beam
search whose per-level log-probabilities are their mean (`decode.ensemble_step_fn`), so the
ensemble costs K x the training and K x the decoder work, and nothing else changes: the same
trie, the same Recall/NDCG@K, the same popularity prior.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax.configs import validate
from r3vae_jax.data.splits import Splits
from r3vae_jax.recommender import steps
from r3vae_jax.recommender import train as rec_train
from r3vae_jax.recommender.tokens import check_sid_table, layout_from_config

ENSEMBLE_DIR = "ensemble"
SEED_STRIDE = 1000

def check_size(config: ml_collections.ConfigDict) -> int:
  """`train.ensemble_size` of a validated config (`configs/validate.py` names a bad value: an
  int >= 1, and 1 for DIGER's one joint model)."""
  validate.validate(config)
  return config.train.ensemble_size


def member_workdirs(workdir: str, size: int) -> list[str]:
  """Where members 0 .. size-1 keep their `recommender/` folder."""
  return [workdir] + [os.path.join(workdir, ENSEMBLE_DIR, f"member{k}") for k in range(1, size)]


def member_config(config: ml_collections.ConfigDict, k: int) -> ml_collections.ConfigDict:
  """Member k's config: the run's, with seed `config.seed + SEED_STRIDE * k`."""
  if k == 0:
    return config
  member = config.copy_and_resolve_references()
  member.unlock()
  member.seed = config.seed + SEED_STRIDE * k
  return member


def train_members(config: ml_collections.ConfigDict, workdir: str, sid_table: np.ndarray,
                  splits: Splits) -> list[dict[str, Any]]:
  """Trains (or resumes, or finds finished) members 1 .. K-1 and returns their train summaries;
  stops after a member whose training was preempted (SIGTERM), leaving the rest for a relaunch."""
  summaries = []
  for k, member_dir in enumerate(member_workdirs(workdir, check_size(config))):
    if k == 0:
      continue
    summaries.append(rec_train.train_recommender(member_config(config, k), member_dir,
                                                 sid_table, splits))
    if summaries[-1]["finished"] == "preempted":
      break
  return summaries


def trained_members(workdir: str, size: int) -> list[int]:
  """The members (of 0 .. size-1) whose recommender has a checkpoint; a run stopped early may
  lack the last ones."""
  found = []
  for k, member_dir in enumerate(member_workdirs(workdir, size)):
    ckpt = os.path.join(member_dir, "recommender", "checkpoints")
    if io.isdir(ckpt) and any(name.isdigit() for name in io.listdir(ckpt)):
      found.append(k)
  return found


def _generate(config: ml_collections.ConfigDict, mesh: Mesh, size: int):
  """The jitted ensemble decoder of `size` members (built once per config, mesh and size)."""
  prog = rec_train.model_programs(config, mesh)
  key = ("ensemble", mesh, size, io.fingerprint_json({
      "recommender": config.recommender.to_dict(), "sid": config.sid.to_dict(),
      "beam_size": config.eval.beam_size}))
  return rec_train.cached_program(key, lambda: steps.make_generate_ensemble(
      prog.mdef, config.eval.beam_size, prog.param_shardings, mesh, size))


def evaluate_members(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                     sid_table: np.ndarray, splits: Splits, split: str = "test",
                     ranking_path: str | None = None) -> dict[str, Any]:
  """Recall@K / NDCG@K of the best checkpoints of `workdirs` (each trained with the config at
  the same position) decoding together on `split`; with `ranking_path`, their ranking is
  written there too (`fusion.save_ranking`).

  Returns:
    the metrics of `recommender.train.evaluate_recommender`, with "steps" (each member's
    checkpoint step) instead of "step" and "members" = len(workdirs).
  """
  if len(configs) != len(workdirs) or not workdirs:
    raise ValueError(f"ensemble: {len(configs)} configs for {len(workdirs)} workdirs")
  mesh = parallel.config_mesh(configs[0])
  table = check_sid_table(sid_table, layout_from_config(configs[0]), "ensemble: sid_table")
  restored = [rec_train.restore_params(c, w, table, mesh) for c, w in zip(configs, workdirs)]
  params = tuple(p for _, p, _ in restored)
  generate = _generate(configs[0], mesh, len(params))
  metrics = rec_train.score_split(configs[0], table, splits, split,
                                  lambda batch, trie: generate(params, batch, trie), mesh,
                                  ranking_path)
  metrics.update(steps=[step for _, _, step in restored], members=len(params))
  return metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str, sid_table: np.ndarray,
             splits: Splits, split: str = "test", members: Sequence[int] | None = None
             ) -> dict[str, Any]:
  """The run's members (`members`, default all `train.ensemble_size`) decoding together on
  `split`; also written to `workdir/recommender/{split}_ensemble_metrics.json` (and their
  ranking to `{split}_ensemble_ranking.npz`)."""
  size = check_size(config)
  members = range(size) if members is None else members
  dirs = member_workdirs(workdir, size)
  root = os.path.join(workdir, "recommender")
  metrics = evaluate_members([member_config(config, k) for k in members],
                             [dirs[k] for k in members], sid_table, splits, split,
                             os.path.join(root, f"{split}_ensemble_ranking.npz"))
  if jax.process_index() == 0:
    io.write_json(os.path.join(root, f"{split}_ensemble_metrics.json"), metrics)
  return metrics
