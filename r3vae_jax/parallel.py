"""Device mesh, shardings and multi-host helpers (the `jax.jit` + `NamedSharding` model).

Axes: `data` (batch, and FSDP of large tables) and `model` (optional tensor parallelism).
The same code runs on 1 CPU, 8 fake CPU devices, a GPU node and a TPU pod slice.
"""
from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
MODEL = "model"


# An explicit cluster, for launchers that JAX does not detect (several processes on one machine,
# a cluster without SLURM or a TPU metadata server): every process gets the same coordinator
# address and process count, and its own id. JAX itself reads only the first of these.
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def initialize_distributed() -> None:
  """Joins the job's processes with `jax.distributed.initialize()`; no-op for a single process.

  With $JAX_NUM_PROCESSES and $JAX_PROCESS_ID set (and $JAX_COORDINATOR_ADDRESS, host:port of
  process 0), those define the cluster; otherwise JAX detects it (SLURM, Cloud TPU, Open MPI,
  Kubernetes) or finds none. CPU processes exchange collectives over gloo.
  """
  if jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  explicit = {}
  if os.environ.get(NUM_PROCESSES_ENV) or os.environ.get(PROCESS_ID_ENV):
    missing = [v for v in (COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV)
               if not os.environ.get(v)]
    if missing:
      raise ValueError(f"multi-process launch: {', '.join(missing)} not set (expected "
                       f"{COORDINATOR_ENV}=host:port, {NUM_PROCESSES_ENV}=N, "
                       f"{PROCESS_ID_ENV}=0..N-1 in every process)")
    try:
      explicit = dict(coordinator_address=os.environ[COORDINATOR_ENV],
                      num_processes=int(os.environ[NUM_PROCESSES_ENV]),
                      process_id=int(os.environ[PROCESS_ID_ENV]))
    except ValueError:
      raise ValueError(f"multi-process launch: {NUM_PROCESSES_ENV}="
                       f"{os.environ[NUM_PROCESSES_ENV]!r}, {PROCESS_ID_ENV}="
                       f"{os.environ[PROCESS_ID_ENV]!r}: expected integers") from None
  try:
    jax.distributed.initialize(**explicit)
  except (ValueError, RuntimeError) as e:
    if explicit:  # Asked for a cluster that cannot be joined: an error, not a 1-process run.
      raise
    logging.info("Single-process run (%s).", str(e).splitlines()[0] if str(e) else "no cluster")
    return
  logging.info("jax.distributed initialised: process %d of %d",
               jax.process_index(), jax.process_count())


def sync_processes(name: str) -> None:
  """Waits until every process of the job reaches the barrier `name` (no-op for one process):
  what process 0 wrote before it is then there for all to read."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def make_mesh(data: int = -1, model: int = 1, devices=None) -> Mesh:
  """Builds a (`data`, `model`) mesh; `data=-1` takes every device left after `model`."""
  devices = list(devices if devices is not None else jax.devices())
  if model < 1 or len(devices) % model:
    raise ValueError(f"mesh: model axis {model} must divide the {len(devices)} devices")
  if data == -1:
    data = len(devices) // model
  if data * model != len(devices):
    raise ValueError(f"mesh: data={data} x model={model} != {len(devices)} devices")
  axis_types = (jax.sharding.AxisType.Auto,) * 2
  return jax.make_mesh((data, model), (DATA, MODEL), axis_types=axis_types, devices=devices)


def config_mesh(config: Any) -> Mesh:
  """The mesh of `config.mesh` (data, model) over this job's devices; a single process whose
  mesh asks for fewer devices than it has uses the first ones (e.g. `mesh.data=1`)."""
  n_data, n_model = config.mesh.data, config.mesh.model
  devices = jax.devices()
  if n_data > 0 and jax.process_count() == 1 and n_data * n_model < len(devices):
    devices = devices[:n_data * n_model]
  return make_mesh(n_data, n_model, devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def fsdp_sharding(shape: tuple[int, ...], mesh: Mesh, min_size: int = 2**18) -> NamedSharding:
  """Shards the largest `data`-divisible dimension of a big array over `data` (FSDP).

  Arrays with fewer than `min_size` elements stay replicated: sharding them costs more in
  collectives than it saves in memory.
  """
  n = mesh.shape[DATA]
  if n == 1 or int(np.prod(shape)) < min_size:
    return replicated(mesh)
  for axis in np.argsort(shape)[::-1]:
    if shape[axis] % n == 0:
      spec = [None] * len(shape)
      spec[axis] = DATA
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def fsdp_shardings(abstract_tree: Any, mesh: Mesh, min_size: int = 2**18) -> Any:
  """`fsdp_sharding` for every leaf of a tree of `jax.ShapeDtypeStruct`s."""
  return jax.tree.map(lambda x: fsdp_sharding(tuple(x.shape), mesh, min_size), abstract_tree)


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  n = mesh.shape[DATA]
  if global_batch % n:
    raise ValueError(f"batch size {global_batch} must be a multiple of the data axis ({n})")
  if global_batch % jax.process_count():
    raise ValueError(f"batch size {global_batch} must divide over {jax.process_count()} hosts")


def host_batch_slice(global_batch: int, mesh: Mesh | None = None) -> slice:
  """The rows of a global batch that this process feeds: those of its devices' `data` shards.

  Processes whose devices differ only along `model` (a model axis that spans hosts) feed the
  same rows. Without `mesh`, each process holds an equal part of the `data` axis.
  """
  if mesh is None or jax.process_count() == 1:
    per_host = global_batch // jax.process_count()
    start = jax.process_index() * per_host
    return slice(start, start + per_host)
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
  spans = sorted({index[0].indices(global_batch)[:2] for index in index_map.values()})
  if any(stop != start for (_, stop), (start, _) in zip(spans, spans[1:])):
    raise ValueError(f"mesh: the devices of process {jax.process_index()} hold data shards "
                     f"{spans} of the batch, not one run of rows")
  return slice(spans[0][0], spans[-1][1])


def _local_data_shards(mesh: Mesh) -> int:
  """How many positions of the `data` axis this process's devices occupy."""
  here = jax.process_index()
  return sum(any(d.process_index == here for d in row.flat) for row in mesh.devices)


def to_global(host_batch: Any, mesh: Mesh) -> Any:
  """Places this process's rows of a batch (numpy tree; `host_batch_slice`) as global arrays
  sharded over `data`."""
  sharding = batch_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(host_batch, sharding)
  shards = _local_data_shards(mesh)

  def place(x):
    rows = x.shape[0] // shards * mesh.shape[DATA]
    return jax.make_array_from_process_local_data(sharding, x, (rows,) + x.shape[1:])
  return jax.tree.map(place, host_batch)


def pad_to_multiple(n: int, mesh: Mesh) -> int:
  """The smallest multiple of the `data` axis size that is >= n."""
  k = mesh.shape[DATA]
  return -(-n // k) * k
