"""Several update steps per dispatch: the train step scanned over a block of batches.

One call of the compiled program runs `k` optimizer steps (`lax.scan` of `steps.train_step_fn`
over batches stacked on a leading axis), so the host dispatches, and the runtime sets up the
program's arguments, once per `k` steps. The arithmetic of each step is that of the single step:
`k` scanned steps equal `k` single steps (tests/test_recommender_model.py).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from r3vae_jax import parallel
from r3vae_jax.recommender.state import ModelDef
from r3vae_jax.recommender.steps import train_step_fn


def block_shardings(mesh: Mesh) -> NamedSharding:
  """A block of batches `[k, batch, ...]`: the batch axis split over `data`."""
  return NamedSharding(mesh, P(None, parallel.DATA))


def stack_batches(batches: Sequence[dict]) -> dict:
  """k host batches of one shape -> one block, every leaf `[k, batch, ...]`."""
  return jax.tree.map(lambda *leaves: np.stack(leaves), *batches)


def make_train_block(mdef: ModelDef, tx: optax.GradientTransformation,
                     schedule: optax.Schedule, rng_impl: str, state_shardings: Any, mesh: Mesh):
  """The update step scanned over a block of batches, under one `jax.jit` (state donated).

  Returns:
    block_step(state, block) -> (state, measurements with leaves `[k]`, step by step), where
    every leaf of `block` is `[k, batch, ...]` (`stack_batches`) split over `data` on axis 1.
  """
  step = train_step_fn(mdef, tx, schedule, rng_impl)

  def block_step(state: dict, block: dict) -> tuple[dict, dict]:
    return jax.lax.scan(step, state, block)

  return jax.jit(block_step, in_shardings=(state_shardings, block_shardings(mesh)),
                 out_shardings=(state_shardings, parallel.replicated(mesh)),
                 donate_argnums=(0,))
