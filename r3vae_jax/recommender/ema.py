"""An exponential moving average of the recommender's parameters (`config.train.ema_decay`).

Kept in the optimizer state as the last transformation of the chain, so it is sharded like the
parameters, checkpointed and restored with them, and skipped with them when a step is not
applied (non-finite). The average starts at the initial parameters (so it needs no bias
correction) and after every update becomes `d * ema + (1 - d) * new_params`. Validation, the
best checkpoint's evaluation and inference read `eval_params(state)`: the average when the
optimizer tracks one, else the raw parameters.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax


class EmaState(NamedTuple):
  ema: Any  # a pytree shaped like the parameters


def track_ema(decay: float) -> optax.GradientTransformation:
  """Leaves the updates unchanged; keeps the average of `params + updates` in its state."""
  if not 0.0 < decay < 1.0:
    raise ValueError(f"config.train.ema_decay must be in (0, 1) to track an average, got {decay}")

  def init(params):
    return EmaState(ema=jax.tree.map(lambda p: p.copy(), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("track_ema needs the parameters: call tx.update(grads, state, params)")
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), state.ema,
                       new)
    return updates, EmaState(ema=ema)

  return optax.GradientTransformation(init, update)


def eval_params(state: dict) -> Any:
  """The parameters to evaluate: the tracked average if `state["opt"]` holds one."""
  found = [s for s in jax.tree.leaves(state["opt"], is_leaf=lambda x: isinstance(x, EmaState))
           if isinstance(s, EmaState)]
  return found[0].ema if found else state["params"]
