"""Data parallelism: a 1-D device mesh, batches sharded over ``'data'``, the rest replicated.

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
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def initialize(config) -> None:
  """Start the multi-host runtime if ``config.distributed`` (idempotent; before any jax work)."""
  if not config.get("distributed", False) or jax.distributed.is_initialized():
    return
  kwargs = {}
  if config.get("coordinator_address"):
    kwargs = dict(coordinator_address=config.coordinator_address,
                  num_processes=int(config.num_processes), process_id=int(config.process_id))
  jax.distributed.initialize(**kwargs)


def device_count(config) -> int:
  """How many devices the run uses: ``config.num_devices`` or, if 0, all of them."""
  return int(config.get("num_devices", 0) or jax.device_count())


def make_mesh(config) -> Mesh:
  """A 1-D ``'data'`` mesh over the first :func:`device_count` devices.

  ``Auto`` axis types: sharding is propagated by the compiler from the inputs, so the model and
  method code stay free of sharding annotations.
  """
  n = device_count(config)
  return jax.make_mesh((n,), (DATA,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


def rows_sharding(mesh: Mesh, num_rows: int) -> NamedSharding:
  """Split rows over devices when they divide evenly, else replicate them.

  Training batches must divide (checked by validation); this fallback serves meta batches,
  whose last batch of a pass may be smaller: replicated, they give the same result, computed
  redundantly on every device.
  """
  return batch_sharding(mesh) if num_rows % mesh.size == 0 else replicated(mesh)


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


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Place a host pytree (identical on every process) on every device of ``mesh``."""
  sharding = replicated(mesh)

  def one(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

  return jax.tree.map(one, tree)


def is_primary() -> bool:
  """Only process 0 writes files (checkpoints are written collectively by orbax)."""
  return jax.process_index() == 0
