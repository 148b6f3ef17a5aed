"""Data parallelism: a 1-D device mesh, batches sharded over ``'data'``, the rest replicated;
with several runs (seeds) at once, a 2-D mesh whose ``'seeds'`` axis splits the runs.

The train step is jitted once for the whole mesh (``jax.jit`` + ``NamedSharding``, no ``pmap``):
its inputs are global arrays whose batch axis is split over the devices, and XLA inserts the
collectives the math needs. So an N-device run computes what one device computes on the global
batch: BatchNorm statistics, the ``/ N`` weight normalisations, GDW's ``sum |g|`` and the meta
gradient are all over the global batch, and the parameter gradient is reduced across devices.
Only the summation order inside those reductions changes, so results agree with one device to
float rounding (tested: same test accuracies, losses within 1e-4).

Multi-host: with ``config.distributed`` every process calls :func:`jax.distributed.initialize`
(arguments auto-detected on SLURM / Open MPI / TPU, or taken from ``coordinator_address``,
``num_processes`` and ``process_id``). Each process holds the (small) host arrays of the whole
dataset, derives the same global batch indices from ``(seed, epoch, step)``, and gathers and
transfers only the rows of its own devices (:func:`global_rows`), so each host feeds its
per-process shard of the global batch.

Several runs (``config.seeds``): every array of the runs' state and batches has a leading runs
axis. The mesh is ``('seeds', 'data')`` of shape ``(g, D / g)`` with ``g = gcd(K, D)`` for K runs
on D devices: the runs axis is split over ``'seeds'`` and each run's batch over ``'data'``, so
K runs on K devices train side by side, one run per device, and K runs on one device are one
batched (``vmap``) program.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
SEEDS = "seeds"


def initialize(config) -> None:
  """Start the multi-host runtime if ``config.distributed`` (idempotent; before any jax work)."""
  if not config.distributed or jax.distributed.is_initialized():
    return
  kwargs = {}
  if config.coordinator_address:
    kwargs = dict(coordinator_address=config.coordinator_address,
                  num_processes=int(config.num_processes), process_id=int(config.process_id))
  jax.distributed.initialize(**kwargs)


def device_count(config) -> int:
  """How many devices the run uses: ``config.num_devices`` or, if 0, all of them."""
  return int(config.num_devices or jax.device_count())


def seed_axis_size(num_runs: int, num_devices: int) -> int:
  """How many devices the runs axis is split over: ``gcd(K, D)`` (1 for a single run)."""
  return math.gcd(num_runs, num_devices) if num_runs > 1 else 1


def data_axis_size(config, num_runs: int = 1) -> int:
  """How many devices each run's batch is split over."""
  n = device_count(config)
  return n // seed_axis_size(num_runs, n)


def make_mesh(config, num_runs: int = 1) -> Mesh:
  """A 1-D ``'data'`` mesh over the first :func:`device_count` devices; for several runs a 2-D
  ``('seeds', 'data')`` mesh (:func:`seed_axis_size`).

  ``Auto`` axis types: sharding is propagated by the compiler from the inputs, so the model and
  method code stay free of sharding annotations.
  """
  n = device_count(config)
  devices = jax.devices()[:n]
  if num_runs == 1:
    return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,), devices=devices)
  g = seed_axis_size(num_runs, n)
  return jax.make_mesh((g, n // g), (SEEDS, DATA), axis_types=(AxisType.Auto,) * 2,
                       devices=devices)


def has_runs_axis(mesh: Mesh) -> bool:
  return SEEDS in mesh.axis_names


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows split over ``'data'`` (a single run's batch, or rows every run shares)."""
  return NamedSharding(mesh, P(DATA))


def runs_sharding(mesh: Mesh, rows: bool = False) -> NamedSharding:
  """A leading runs axis split over ``'seeds'``; ``rows``: the next axis (each run's batch)
  split over ``'data'``."""
  return NamedSharding(mesh, P(SEEDS, DATA) if rows else P(SEEDS))


def state_sharding(mesh: Mesh) -> NamedSharding:
  """Where train states live: replicated, or for several runs split along the runs axis."""
  return runs_sharding(mesh) if has_runs_axis(mesh) else replicated(mesh)


def rows_sharding(mesh: Mesh, num_rows: int) -> NamedSharding:
  """Split rows over devices when they divide evenly, else replicate them.

  Training batches must divide (checked by validation); this fallback serves meta batches,
  whose last batch of a pass may be smaller: replicated, they give the same result, computed
  redundantly on every device.
  """
  return batch_sharding(mesh) if num_rows % mesh.shape[DATA] == 0 else replicated(mesh)


def global_rows(arrays: Dict[str, np.ndarray], idx: np.ndarray,
                sharding: Optional[NamedSharding] = None, mesh: Optional[Mesh] = None):
  """``{k: arrays[k][idx]}`` as global ``jax.Array``s laid out by ``sharding``.

  Rows are gathered lazily per device shard, so each process only gathers and transfers the
  rows that live on its own devices (its per-process shard of the global batch).
  """
  if sharding is None:
    sharding = rows_sharding(mesh, len(idx))

  def one(a):
    def shard(index):  # index: this device's slice of the global [len(idx), ...] array
      return a[idx[index[0]]][(slice(None),) + tuple(index[1:])]
    return jax.make_array_from_callback((len(idx),) + a.shape[1:], sharding, shard)

  return {k: one(np.asarray(a)) for k, a in arrays.items()}


def run_rows(arrays: Sequence[Dict[str, np.ndarray]], idx: np.ndarray, mesh: Mesh):
  """``{k: stack_r(arrays[r][k][idx[r]])}``: each run's rows (``idx`` ``[K, B]``) as global
  ``[K, B, ...]`` arrays, runs over ``'seeds'`` and rows over ``'data'`` (rows replicated when
  ``B`` does not divide, as :func:`rows_sharding`). Gathered lazily per device shard."""
  rows = idx.shape[1] % mesh.shape[DATA] == 0
  sharding = runs_sharding(mesh, rows=rows)

  def one(key):
    first = np.asarray(arrays[0][key])
    shape = (len(arrays), idx.shape[1]) + first.shape[1:]

    def shard(index):
      runs = range(len(arrays))[index[0]]
      return np.stack([np.asarray(arrays[r][key])[idx[r][index[1]]][(slice(None),) +
                                                                     tuple(index[2:])]
                       for r in runs])
    return jax.make_array_from_callback(shape, sharding, shard)

  return {k: one(k) for k in arrays[0]}


def put(tree: Any, sharding: NamedSharding) -> Any:
  """Place a host pytree (identical on every process) as global arrays laid out by
  ``sharding`` (each process transfers only its own devices' parts)."""

  def one(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

  return jax.tree.map(one, tree)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Place a host pytree (identical on every process) on every device of ``mesh``."""
  return put(tree, replicated(mesh))


def is_primary() -> bool:
  """Only process 0 writes files (checkpoints are written collectively by orbax)."""
  return jax.process_index() == 0


def from_primary(value: int) -> int:
  """Process 0's ``value`` on every process (a decision only process 0 takes, such as whether
  it holds the workdir's lease); ``value`` itself on one process."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))
