"""The recommender as a plain train-state pytree: params created sharded, bound to the module.

The NNX module is split once (under `eval_shape`, so nothing is allocated) into its static
graph and an abstract parameter state; the train state holds the parameters as a pure dict
(`nnx.to_pure_dict`), the optax state, the step and the non-finite bookkeeping. `ModelDef.bind`
turns a pure-dict of params back into a callable module (inside `jax.jit`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from r3vae_jax import parallel
from r3vae_jax.recommender import sharding
from r3vae_jax.recommender.model import T5Recommender
from r3vae_jax.recommender.tokens import TokenLayout, layout_from_config


@dataclasses.dataclass(frozen=True)
class ModelDef:
  """Static model structure: the NNX graph and the abstract parameter state."""
  graphdef: Any
  abstract_params: nnx.State
  seed: int
  config: ml_collections.ConfigDict

  @property
  def layout(self) -> TokenLayout:
    return layout_from_config(self.config)

  def bind(self, params: dict) -> T5Recommender:
    """A module whose parameters are the pure-dict `params` (arrays or tracers)."""
    return bind_pure(self.graphdef, self.abstract_params, params)

  def init_params(self) -> dict:
    """Freshly initialised params (pure dict); jit with `out_shardings` to create them sharded."""
    model = T5Recommender.from_config(self.config, self.seed)
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))

  def param_names(self) -> list[str]:
    """Readable path of every parameter leaf, in `jax.tree.leaves` order of the pure dict."""
    pure = nnx.to_pure_dict(self.abstract_params)
    return ["/".join(str(k.key) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(pure)[0]]


def bind_pure(graphdef: Any, abstract_params: nnx.State, params: dict) -> nnx.Module:
  """The module of `graphdef` whose parameters are the pure-dict `params` (arrays or tracers;
  `abstract_params` gives the structure and metadata)."""
  state = jax.tree.map(lambda x: x, abstract_params)
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)


def model_def(config: ml_collections.ConfigDict) -> ModelDef:
  """The `ModelDef` of `config.recommender` / `config.sid`, seeded by `config.seed`."""
  abstract = nnx.eval_shape(lambda: T5Recommender.from_config(config, config.seed))
  graphdef, params = nnx.split(abstract, nnx.Param)
  return ModelDef(graphdef, params, config.seed, config)


def seed_key_data(seed: int, impl: str) -> jax.Array:
  """uint32 data of `key(seed, impl=impl)`: a train state's "rng". The seed travels as data, not
  as a constant of the compiled step, so runs that differ only in their seed share one program."""
  return jax.random.key_data(jax.random.key(seed, impl=impl))


def step_key(rng: jax.Array, step: jax.Array, impl: str) -> jax.Array:
  """The key of one update step (dropout, Gumbel noise): `fold_in(wrap(rng), step)`, so a
  resumed run draws the same numbers. Call inside the traced step."""
  return jax.random.fold_in(jax.random.wrap_key_data(rng, impl=impl), step)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (decay on matrices only) after global-norm clipping (none when `clip_norm` is 0),
  warm-up, then cosine / linear decay to 0 or a constant rate."""
  t = config.train
  if t.schedule not in ("cosine", "linear", "constant"):
    raise ValueError(f"config.train.schedule must be cosine, linear or constant, got "
                     f"{t.schedule!r}")
  if not (t.lr > 0 and t.clip_norm >= 0 and t.warmup_steps >= 0):
    raise ValueError(f"config.train: lr ({t.lr}) must be > 0, clip_norm ({t.clip_norm}) and "
                     f"warmup_steps ({t.warmup_steps}) >= 0")
  warmup = min(t.warmup_steps, max(total_steps - 1, 0))
  decay_steps = max(total_steps - warmup, 1)
  warm = optax.linear_schedule(0.0, t.lr, max(warmup, 1))
  if t.schedule == "cosine":
    after = optax.cosine_decay_schedule(t.lr, decay_steps)
  elif t.schedule == "linear":
    after = optax.linear_schedule(t.lr, 0.0, decay_steps)
  else:
    after = optax.constant_schedule(t.lr)
  schedule = optax.join_schedules([warm, after], [warmup]) if warmup else after
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  adamw = optax.adamw(schedule, weight_decay=t.weight_decay, mask=decay_mask)
  parts = [optax.clip_by_global_norm(t.clip_norm)] if t.clip_norm else []
  tx = optax.chain(*parts, adamw) if parts else adamw
  return tx, schedule


def _initial_state(mdef: ModelDef, tx: optax.GradientTransformation) -> dict:
  params = mdef.init_params()
  return {
      "params": params,
      "opt": tx.init(params),
      "step": jnp.zeros((), jnp.int32),
      "rng": seed_key_data(mdef.seed, mdef.config.train.rng_impl),
      # first_step: the first step whose loss or gradients were non-finite (-1: none yet);
      # which: at that step, [loss, *param grads] non-finite flags; count: such steps so far.
      "nonfinite": {"first_step": jnp.full((), -1, jnp.int32),
                    "count": jnp.zeros((), jnp.int32),
                    "which": jnp.zeros((1 + len(jax.tree.leaves(params)),), bool)},
  }


def state_shardings(mdef: ModelDef, tx: optax.GradientTransformation, mesh: Mesh,
                    fsdp_min_size: int) -> Any:
  """NamedShardings of the whole train state: optimizer moments follow their parameters."""
  param_sh = sharding.param_shardings(mdef.abstract_params, mesh, fsdp_min_size)
  abstract = jax.eval_shape(lambda: _initial_state(mdef, tx))
  rep = parallel.replicated(mesh)
  opt_sh = sharding.optimizer_shardings(tx, abstract["opt"], param_sh, mesh)
  return {"params": param_sh, "opt": opt_sh, "step": rep, "rng": rep,
          "nonfinite": jax.tree.map(lambda _: rep, abstract["nonfinite"])}


def make_init(mdef: ModelDef, tx: optax.GradientTransformation, shardings: Any
              ) -> Callable[[], dict]:
  """init() -> the train state, created directly in `shardings` (one `jax.jit`)."""
  return jax.jit(lambda: _initial_state(mdef, tx), out_shardings=shardings)


def batch_shardings(mesh: Mesh) -> NamedSharding:
  """Every batch leaf is split over `data` along its leading dimension."""
  return NamedSharding(mesh, P(parallel.DATA))


def abstract_state(mdef: ModelDef, tx: optax.GradientTransformation, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s (with shardings) of the train state, for restoring into."""
  shapes = jax.eval_shape(lambda: _initial_state(mdef, tx))
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      shapes, shardings)
