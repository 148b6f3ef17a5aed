"""Checkpoints with orbax: exact resume of a run from its ``--workdir``.

A checkpoint (``<workdir>/checkpoints/<step>/``) holds three items:

* ``state``: the whole :class:`gdw_jax.train_step.TrainState` (step, params, BN statistics,
  optimizer state, method state, rng). The data position needs nothing more: batch order is a pure
  function of ``(seed, epoch, step)`` and the per-step key is ``fold_in(rng, step)``.
* ``loop``: the host accumulators of :class:`gdw_jax.metrics.Recorder` (weight history, the
  current epoch's weights and metric sums), so the final files are identical too.
* ``meta``: JSON: the metric rows so far, the elapsed wall time, the position for humans.

Saving policy: every ``checkpoint_every_steps`` steps (0: never mid-run), at every epoch end
whose test accuracy is a new best (``checkpoint_best``), and at the end. Kept: the last
``keep_checkpoints`` plus the best by test accuracy (``orbax`` preservation policies).

Saves are asynchronous and atomic: :meth:`Checkpointer.save` returns once the arrays are copied
off the device (orbax's synchronous device-to-host transfer, so the next step may overwrite or
donate them) and the files are written by a background thread into a temporary directory that
is renamed on commit. Training goes on meanwhile; the next save (and :meth:`close`) first waits
for the previous one. A kill at any moment leaves the earlier checkpoints intact; a half-written
one is ignored. A failed write raises :class:`gdw_jax.fileio.WriteError` (exit status 4); a
checkpoint that cannot be restored is reported and skipped by the loop (``Trainer._restore``).
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from gdw_jax import fileio

SUBDIR = "checkpoints"


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), SUBDIR)


def _test_acc(metrics) -> float:
  # Mid-epoch checkpoints carry no test accuracy: they rank below every epoch-end one.
  return metrics.get("test_acc", -np.inf)


def _options(keep: int, best: bool, asynchronous: bool) -> ocp.CheckpointManagerOptions:
  pp = ocp.checkpoint_managers
  policies = [pp.LatestN(n=keep)]
  if best:
    policies.append(pp.BestN(get_metric_fn=_test_acc, reverse=False, n=1))
  # best_fn also makes orbax write each checkpoint's metrics to disk, so a resumed run still
  # knows which earlier checkpoint is the best.
  return ocp.CheckpointManagerOptions(
      enable_async_checkpointing=asynchronous, best_fn=_test_acc, best_mode="max",
      preservation_policy=pp.AnyPreservationPolicy(policies))


class Checkpointer:
  """Save / restore the train state and the loop's records under ``<workdir>/checkpoints``."""

  def __init__(self, workdir: str, keep: int = 2, best: bool = True, asynchronous: bool = True):
    self.dir = directory(workdir)
    self.manager = ocp.CheckpointManager(self.dir, options=_options(keep, best, asynchronous))
    self._saved = set(self.manager.all_steps())  # steps saved by any session (no re-save)

  def latest_step(self) -> Optional[int]:
    self.wait()
    return self.manager.latest_step()

  def all_steps(self):
    """The committed steps, ascending."""
    self.wait()
    return sorted(self.manager.all_steps())

  def wait(self) -> None:
    """Block until the save in flight (if any) is committed; a failed one (disk full, a
    read-only workdir) raises :class:`gdw_jax.fileio.WriteError` naming the directory."""
    with self._writing():
      self.manager.wait_until_finished()

  @contextlib.contextmanager
  def _writing(self):
    # orbax reports a failed write as whatever its storage layer raised (tensorstore: a
    # ValueError "RESOURCE_EXHAUSTED: ... No space left on device"), here or in wait().
    try:
      yield
    except Exception as e:  # noqa: BLE001 -- see above
      text = fileio.reason(e)
      if "os_error_code" in text or len(text) > 200:  # tensorstore's: the OS reason is last
        text = text.rsplit(": ", 1)[-1][-200:]
      raise fileio.WriteError(f"cannot write a checkpoint in {self.dir}: {text}") from e

  def discard(self, step: int) -> None:
    """Delete the checkpoint of ``step`` (one that cannot be restored), so it is saved again."""
    self.wait()
    self.manager.delete(step)
    self._saved.discard(step)

  def save(self, step: int, state, loop_arrays: Dict[str, np.ndarray], meta: Dict[str, Any],
           test_acc: Optional[float] = None) -> None:
    """Save at ``step`` (a no-op if that step is already saved). ``test_acc`` is given only for
    epoch-end checkpoints: it ranks them for the keep-the-best policy."""
    if step in self._saved:
      return
    self._saved.add(step)
    with self._writing():
      self.manager.save(
          step, force=True, metrics={} if test_acc is None else {"test_acc": float(test_acc)},
          args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  loop=ocp.args.StandardSave(loop_arrays),
                                  meta=ocp.args.JsonSave(meta)))

  def restore(self, state_target, loop_target, step: Optional[int] = None):
    """``(state, loop_arrays, meta)`` of ``step`` (default: latest). ``state_target``: a
    TrainState of the right structure whose arrays (or ``jax.ShapeDtypeStruct``s) carry the
    shardings to restore into (so a run may resume on another device layout); ``loop_target``:
    NumPy arrays of the right shapes (restored as NumPy on every process)."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(
        lambda a: a if isinstance(a, jax.ShapeDtypeStruct) else ocp.utils.to_shape_dtype_struct(a),
        state_target)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), loop=ocp.args.StandardRestore(loop_target),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["loop"], out["meta"]

  def close(self) -> None:
    self.manager.close()


def _reader(workdir: str) -> ocp.CheckpointManager:
  """A manager for reading a workdir's checkpoints (it never saves nor deletes)."""
  return ocp.CheckpointManager(
      directory(workdir), options=ocp.CheckpointManagerOptions(create=False),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "loop": ocp.StandardCheckpointHandler(),
                     "meta": ocp.JsonCheckpointHandler()})


def steps(workdir: str):
  """The checkpointed steps in ``workdir`` (finished ones only), ascending."""
  if not os.path.isdir(directory(workdir)):
    return []
  with _reader(workdir) as m:
    return list(m.all_steps())


def best_step(workdir: str) -> Optional[int]:
  """The kept epoch-end checkpoint with the highest test accuracy (None if there is none)."""
  if not os.path.isdir(directory(workdir)):
    return None
  with _reader(workdir) as m:
    ranked = [(metrics["test_acc"], step) for step in m.all_steps()
              if "test_acc" in (metrics := m.metrics(step) or {})]
  return max(ranked)[1] if ranked else None


def load(workdir: str, step: Optional[int] = None) -> Dict[str, Any]:
  """A checkpoint as plain nested dicts of NumPy arrays, on any machine (for analysis).

  ``{'state': {'step', 'params', 'model_state', 'opt_state', 'method_state', 'rng'}, 'loop':
  {...}, 'meta': {...}}``; ``step`` defaults to the latest. Works whatever the device layout
  the run had (e.g. a checkpoint of a 2-host run read on a laptop). Optimizer states come back
  as nested dicts / lists, not as optax NamedTuples.
  """
  if not os.path.isdir(directory(workdir)):
    raise FileNotFoundError(f"no checkpoint in {directory(workdir)}")
  with _reader(workdir) as m:
    step = m.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {directory(workdir)}")
    metadata = m.item_metadata(step)
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {k: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here),
                                metadata[k]) for k in ("state", "loop")}
    out = m.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract["state"]),
        loop=ocp.args.StandardRestore(abstract["loop"]), meta=ocp.args.JsonRestore()))
  return {"state": jax.device_get(out["state"]), "loop": jax.device_get(out["loop"]),
          "meta": out["meta"]}
