"""Where each recommender parameter lives on the (`data`, `model`) mesh.

Every parameter carries logical axis names (`axes` metadata, see model.py). `RULES` maps them to
mesh axes (tensor parallelism over `model`: attention heads and FFN hidden units, Megatron
style); a parameter with at least `fsdp_min_size` elements is then also split over `data`
along its largest dimension that is still unassigned and divisible (FSDP of big tables).
"""
from __future__ import annotations

from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import optax

from r3vae_jax import parallel
from r3vae_jax.parallel import DATA, MODEL

RULES = {"heads": MODEL, "mlp": MODEL, "vocab": None, "embed": None, "kv": None, None: None}


def partition_spec(shape: tuple[int, ...], axes: tuple, mesh: Mesh, fsdp_min_size: int) -> P:
  """The spec of one parameter (module docstring).

  Raises:
    ValueError: when a dimension mapped to `model` does not divide by the model axis size.
  """
  if len(axes) != len(shape):
    raise ValueError(f"sharding: axes {axes} do not match shape {shape}")
  spec = [RULES[a] for a in axes]
  for dim, (size, mesh_axis) in enumerate(zip(shape, spec)):
    if mesh_axis is not None and size % mesh.shape[mesh_axis]:
      raise ValueError(f"sharding: parameter dimension '{axes[dim]}' of size {size} does not "
                       f"divide by mesh axis '{mesh_axis}' ({mesh.shape[mesh_axis]}); change "
                       f"config.recommender or config.mesh.model")
  n_data = mesh.shape[DATA]
  numel = 1
  for size in shape:
    numel *= size
  if n_data > 1 and numel >= fsdp_min_size:
    free = sorted((d for d in range(len(shape)) if spec[d] is None and shape[d] % n_data == 0),
                  key=lambda d: -shape[d])
    if free:
      spec[free[0]] = DATA
  return P(*spec)


def param_shardings(abstract_params: nnx.State, mesh: Mesh, fsdp_min_size: int = 2**18) -> Any:
  """NamedShardings for the pure-dict params of `abstract_params` (an `nnx.State` of Params)."""
  def one(variable: nnx.Variable) -> NamedSharding:
    axes = variable.get_metadata().get("axes")
    if axes is None:
      raise ValueError(f"sharding: parameter of shape {variable.shape} has no 'axes' metadata")
    return NamedSharding(mesh, partition_spec(tuple(variable.shape), axes, mesh, fsdp_min_size))

  specs = jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(specs)


def optimizer_shardings(tx: optax.GradientTransformation, abstract_opt: Any, param_sh: Any,
                        mesh: Mesh) -> Any:
  """NamedShardings of an optimizer state: moments follow their parameters (`param_sh`, the
  pure-dict tree of `param_shardings`), everything else (counts, scalars) is replicated."""
  rep = parallel.replicated(mesh)
  return optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_sh,
                               transform_non_params=lambda _: rep,
                               is_leaf=lambda x: isinstance(x, NamedSharding))
