"""The recommender's compiled programs: inference (constrained beam search) and training.

  model_programs(config, mesh) -> ModelPrograms    (model definition, shardings, generate)
  train_programs(config, mesh, total_steps) -> TrainPrograms    (optimizer, init, train step)

Both are cached per (config, mesh) in the process (`training.compile.cached_program`), so the
trainer, the evaluation, DIGER's joint trainer and `api.Recommender` share one compilation.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import ml_collections
from jax.sharding import Mesh

from r3vae_jax import io
from r3vae_jax.recommender import sharding, steps
from r3vae_jax.recommender import state as state_lib
from r3vae_jax.training.compile import cached_program


@dataclasses.dataclass(frozen=True)
class ModelPrograms:
  """What inference needs: the model structure, where params live, constrained generation.

  `generate_scored(params, batch, trie)` -> (item ids, scores) `[B, beam]` (`steps.make_generate`);
  `generate` the same, item ids only.
  """
  mdef: state_lib.ModelDef
  param_shardings: Any
  generate_scored: Callable

  def generate(self, params: Any, batch: Any, trie: Any) -> jax.Array:
    return self.generate_scored(params, batch, trie)[0]


@dataclasses.dataclass(frozen=True)
class TrainPrograms:
  """What training adds: the optimizer, the train-state layout, init and the update step."""
  tx: Any
  shardings: Any
  init: Callable
  train_step: Callable


def model_programs(config: ml_collections.ConfigDict, mesh: Mesh) -> ModelPrograms:
  """Builds the inference programs, or reuses them (`cached_program`)."""
  key = ("model", mesh, io.fingerprint_json(
      {"recommender": config.recommender.to_dict(), "sid": config.sid.to_dict(),
       "seed": config.seed, "rng_impl": config.train.rng_impl,
       "beam_size": config.eval.beam_size, "fsdp_min_size": config.train.fsdp_min_size}))

  def build():
    mdef = state_lib.model_def(config)
    param_sh = sharding.param_shardings(mdef.abstract_params, mesh, config.train.fsdp_min_size)
    return ModelPrograms(mdef, param_sh, steps.make_generate(
        mdef, config.eval.beam_size, param_sh, mesh))

  return cached_program(key, build)


def train_programs(config: ml_collections.ConfigDict, mesh: Mesh, total_steps: int
                   ) -> TrainPrograms:
  """As `model_programs`, for training `total_steps` steps (the learning-rate schedule)."""
  key = ("train", mesh, total_steps, io.fingerprint_json(config.to_dict()))

  def build():
    mdef = model_programs(config, mesh).mdef
    tx, schedule = state_lib.make_optimizer(config, total_steps)
    shardings = state_lib.state_shardings(mdef, tx, mesh, config.train.fsdp_min_size)
    return TrainPrograms(tx, shardings, state_lib.make_init(mdef, tx, shardings),
                         steps.make_train_step(mdef, tx, schedule, config.train.rng_impl,
                                               shardings, mesh))

  return cached_program(key, build)
