"""The loop's batch providers: every run's batches of a range of steps, on the device.

The loop (:mod:`gdw_jax.loop`) asks a provider to run the steps of a segment and to bring their
outputs to the host in one sync; how the batches get to the step is the provider's business:

* :class:`DeviceInputs`: the images on the device once; per call, a chunk of steps whose batches
  are gathered inside the compiled program (:func:`gdw_jax.steps.make_chunk_fn`);
* :class:`HostInputs`: each step's batches gathered on the host and sent with the step (data that
  do not fit on the device, or models slow inside a compiled loop on CPU);
* :class:`StreamInputs` (``input_pipeline=stream``): each step's images decoded and augmented by
  grain (:mod:`gdw_jax.data.stream`, :func:`make_stream`), then the per-step path.

Every step's batch positions are a pure function of ``(seed, epoch, step)``
(:mod:`gdw_jax.data.pipeline`), so all three give bit-identical results on CPU (on the same
pixels: streaming without random transforms) and a launch can start at any step.
:func:`choose_inputs` picks one from the config. Above the launch's pieces (:mod:`gdw_jax.runs`)
and the compiled step (:mod:`gdw_jax.steps`), below the loop.
"""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

import jax
import numpy as np

from gdw_jax import parallel
from gdw_jax import runs as runs_lib
from gdw_jax import steps as steps_lib
from gdw_jax.data import pipeline, stream
from gdw_jax.data.image_table import ImageTable


class Block(NamedTuple):
  """Consecutive steps' outputs on the host, every array with leading ``[T, K]`` axes."""
  steps: range
  idx: np.ndarray         # [T, K, B] training positions
  metrics: Dict[str, np.ndarray]
  weights: np.ndarray     # [T, K, B, k]
  finite: Dict[str, np.ndarray]


class _Inputs:
  """A batch provider: what the loop asks of one, and what both built-in ones share.

  ``set_meta(rows, labels, batch_size)``: the runs' current meta sets (store rows, labels);
  ``run(state, steps) -> (state, pending)``: dispatch the steps (nothing waits on the device);
  ``fetch(pending) -> [Block]``: the steps' outputs on the host (the one sync). Each step's
  batch positions are a pure function of ``(seed, epoch, step)`` (:meth:`indices`); a streaming
  provider reads the same positions from its own loader.
  """

  def __init__(self, runs: runs_lib.Runs, step_fn):
    self.runs, self.step_fn = runs, step_fn
    self._jitted: Dict[Any, Any] = {}
    self.meta_n = self.meta_bs = 0

  def set_meta(self, rows: np.ndarray, labels: np.ndarray, batch_size: int) -> None:
    self.meta_n, self.meta_bs = rows.shape[1], batch_size

  def indices(self, step: int):
    """``([K, B], [K, B_meta] or None)``: every run's training and meta batch positions."""
    r, c = self.runs, self.runs.config
    epoch, s = divmod(step, r.steps_per_epoch)
    idx = np.stack([pipeline.train_batch_indices(r.info.num_train, c.batch_size, seed, epoch, s)
                    for seed in r.seeds]).astype(np.int32)
    if not r.method.uses_meta:
      return idx, None
    midx = np.stack([pipeline.meta_batch_indices(self.meta_n, self.meta_bs, seed, epoch, s)
                     for seed in r.seeds]).astype(np.int32)
    return idx, midx

  def signature(self, step: int):
    """Steps with the same signature share a compiled program."""
    r = self.runs
    s = step % r.steps_per_epoch
    return (r.phase(step),
            runs_lib.batch_size_of_step(r.info.num_train, r.config.batch_size, s),
            runs_lib.meta_batch_size_of_step(self.meta_n, self.meta_bs, s)
            if r.method.uses_meta else 0)

  def _blocks(self, steps: range, max_len: int):
    """``steps`` cut into runs of one signature, at most ``max_len`` long."""
    out, start = [], steps.start
    for t in range(steps.start + 1, steps.stop + 1):
      if (t == steps.stop or t - start == max_len
          or self.signature(t) != self.signature(start)):
        out.append(range(start, t))
        start = t
    return out

  def close(self) -> None:
    """Release what the provider holds (worker processes)."""

  @staticmethod
  def _with_runs_axis(tree, batched: bool, axis: int):
    """One run's outputs with the runs axis (of size 1) the loop expects at ``axis``."""
    return tree if batched else jax.tree.map(lambda a: np.expand_dims(a, axis), tree)


class HostInputs(_Inputs):
  """Each step's batches gathered on the host and sent to the device (the per-step path: data
  that do not fit on the device, or that stream)."""

  name = "host"

  def __init__(self, runs, step_fn):
    super().__init__(runs, step_fn)
    st = runs.store
    n = st.labels.shape[1]
    self.labels = [{"y": st.labels[k], "y_true": st.true_labels[k],
                    "index": np.arange(n, dtype=np.int32)} for k in range(runs.num_runs)]
    self.meta_rows = self.meta_labels = None

  def set_meta(self, rows, labels, batch_size):
    super().set_meta(rows, labels, batch_size)
    self.meta_rows, self.meta_labels = rows, labels

  def run(self, state, steps: range):
    pending = []
    for t in steps:
      idx, batch, meta = self.step_batches(t)
      phase = self.runs.phase(t)
      if phase not in self._jitted:
        self._jitted[phase] = steps_lib.jit_host_step(self.step_fn, phase, self.runs.mesh)
      state, *outs = self._jitted[phase](state, batch, meta)
      pending.append((range(t, t + 1), idx, tuple(outs)))
    return state, pending

  def step_batches(self, step: int):
    """``(idx, batch, meta)``: step ``step``'s positions and batches as global arrays, the
    images gathered from the store's rows."""
    r = self.runs
    idx, midx = self.indices(step)
    every = [{"x": r.store.images}] * r.num_runs
    rows = np.stack([r.store.train_rows[k][idx[k]] for k in range(r.num_runs)])
    meta_rows = None if midx is None else np.stack(
        [self.meta_rows[k][midx[k]] for k in range(r.num_runs)])
    return (idx,) + self._assemble(every, rows, idx, every, meta_rows, midx)

  def _assemble(self, images, rows, idx, meta_images, meta_rows, midx):
    """``(batch, meta)``: run ``k``'s images ``images[k]['x'][rows[k]]`` (meta:
    ``meta_images[k]['x'][meta_rows[k]]``) with its labels at positions ``idx`` / ``midx``."""
    r = self.runs
    meta_labels = [{"y": y} for y in (self.meta_labels if midx is not None else [])]
    if not r.batched:  # exactly the rows the single-run loop always sent
      sharding = parallel.batch_sharding(r.mesh)
      batch = {**parallel.global_rows(images[0], rows[0], sharding),
               **parallel.global_rows(self.labels[0], idx[0], sharding)}
      meta = None if midx is None else {
          **parallel.global_rows(meta_images[0], meta_rows[0], mesh=r.mesh),
          **parallel.global_rows(meta_labels[0], midx[0], mesh=r.mesh)}
      return batch, meta
    batch = {**parallel.run_rows(images, rows, r.mesh),
             **parallel.run_rows(self.labels, idx, r.mesh)}
    meta = None if midx is None else {**parallel.run_rows(meta_images, meta_rows, r.mesh),
                                      **parallel.run_rows(meta_labels, midx, r.mesh)}
    return batch, meta

  def fetch(self, pending) -> List[Block]:
    out = []
    for steps, idx, (m, w, f) in jax.device_get(pending):
      m, w, f = self._with_runs_axis((m, w, f), self.runs.batched, 0)
      out.append(Block(steps, idx[None], jax.tree.map(lambda a: a[None], m), w[None],
                       jax.tree.map(lambda a: a[None], f)))
    return out


class StreamInputs(HostInputs):
  """Each step's batches decoded and augmented by grain (``input_pipeline=stream``,
  :class:`gdw_jax.data.stream.StreamBatches`): the same positions from the same functions as the
  other providers, read from the store's image table; then the per-step path of
  :class:`HostInputs`. The stream restarts at any step asked out of order (a resume, a new meta
  set), so it has no state to checkpoint."""

  name = "stream"

  def __init__(self, runs, step_fn, batches: stream.StreamBatches):
    super().__init__(runs, step_fn)
    self.stream = batches

  def set_meta(self, rows, labels, batch_size):
    super().set_meta(rows, labels, batch_size)
    uses = self.runs.method.uses_meta and rows.shape[1]
    self.stream.set_meta(rows if uses else None, batch_size)
    if jax.process_count() > 1 and not self.runs.batched:  # each process decodes its own rows
      mesh = self.runs.mesh
      self.stream.plan.local = stream.local_plan_rows(
          self.stream.plan, lambda n: parallel.rows_sharding(mesh, n))

  def step_batches(self, step: int):
    idx, x, midx, meta_x = self.stream.batches(step)
    every = [{"x": a} for a in self._full(x, idx.shape[1])]
    rows = np.broadcast_to(np.arange(idx.shape[1]), idx.shape)
    meta_images = meta_rows = None
    if midx is not None:
      meta_images = [{"x": a} for a in self._full(meta_x, midx.shape[1])]
      meta_rows = np.broadcast_to(np.arange(midx.shape[1]), midx.shape)
    return (idx,) + self._assemble(every, rows, idx, meta_images, meta_rows, midx)

  def _full(self, x: np.ndarray, n: int) -> np.ndarray:
    """``[K, b, ...]`` rows this process decoded as ``[K, n, ...]`` (the other rows, zeros here,
    live on other processes' devices: the global arrays never read them from this one)."""
    pos = self.stream.plan.positions(n)
    if len(pos) == n:
      return x
    full = np.zeros(x.shape[:1] + (n,) + x.shape[2:], x.dtype)
    full[:, pos] = x
    return full

  def close(self) -> None:
    self.stream.close()


class DeviceInputs(_Inputs):
  """The images on the device once; per call, a chunk's batch positions (compiled epochs)."""

  name = "device"

  def __init__(self, runs, step_fn, max_steps: int):
    super().__init__(runs, step_fn)
    self.max_steps = max_steps
    st, mesh, batched = runs.store, runs.mesh, runs.batched
    per_run = parallel.state_sharding(mesh)
    self.data = {"images": parallel.put(st.images, parallel.replicated(mesh))}
    for key, value in (("train_rows", st.train_rows), ("labels", st.labels),
                       ("true_labels", st.true_labels)):
      self.data[key] = parallel.put(value if batched else value[0], per_run)

  def set_meta(self, rows, labels, batch_size):
    super().set_meta(rows, labels, batch_size)
    batched, per_run = self.runs.batched, parallel.state_sharding(self.runs.mesh)
    self.data["meta_rows"] = parallel.put(rows if batched else rows[0], per_run)
    self.data["meta_labels"] = parallel.put(labels if batched else labels[0], per_run)

  def run(self, state, steps: range):
    pending = []
    for block in self._blocks(steps, self.max_steps):
      idx, midx = zip(*[self.indices(t) for t in block])
      plan = {"idx": self._plan(np.stack(idx)),
              "meta_idx": None if midx[0] is None else self._plan(np.stack(midx))}
      state, outs = self._fn(block.start)(state, self.data, plan, np.int32(len(block)))
      pending.append((block, np.stack(idx), outs))
    return state, pending

  def _fn(self, step: int):
    phase = self.runs.phase(step)
    if phase not in self._jitted:
      self._jitted[phase] = steps_lib.jit_chunk_fn(self.step_fn, phase, self.max_steps,
                                                   self.runs.batched, self.runs.mesh)
    return self._jitted[phase]

  def _plan(self, idx: np.ndarray):
    """``[T, K, B]`` positions -> ``[max_steps, (K,) B]`` on the device (rows past T: 0),
    each step's rows split over ``'data'`` when they divide, like the host path's batches."""
    r = self.runs
    padded = np.zeros((self.max_steps,) + idx.shape[1:], np.int32)
    padded[:len(idx)] = idx
    if not r.batched:
      padded = padded[:, 0]
    split = idx.shape[-1] % r.mesh.shape[parallel.DATA] == 0
    axes = ((parallel.SEEDS,) if r.batched else ()) + ((parallel.DATA,) if split else ())
    return parallel.put(padded, jax.sharding.NamedSharding(
        r.mesh, jax.sharding.PartitionSpec(None, *axes)))

  def fetch(self, pending) -> List[Block]:
    out = []
    for steps, idx, outs in jax.device_get(pending):
      m, w, f = jax.tree.map(lambda a: a[:len(steps)], outs)
      m, w, f = self._with_runs_axis((m, w, f), self.runs.batched, 1)
      out.append(Block(steps, idx, m, w, f))
    return out


def choose_inputs(runs: runs_lib.Runs, step_fn, batches: Optional[stream.StreamBatches] = None):
  """``input_pipeline=stream``: the streamed batches (``batches``); else ``data_placement``:
  device (compiled chunks) when the images fit, else host (per step)."""
  c = runs.config
  if batches is not None:
    return StreamInputs(runs, step_fn, batches)
  placement = c.data_placement
  if placement == "auto":
    fits = _fits_on_device(runs.store.images.nbytes)
    placement = "device" if fits and not _slow_loop_convolutions(runs) else "host"
  if placement == "host":
    return HostInputs(runs, step_fn)
  return DeviceInputs(runs, step_fn, min(c.steps_per_call or runs.steps_per_epoch,
                                         runs.steps_per_epoch))


def _slow_loop_convolutions(runs: runs_lib.Runs) -> bool:
  """Whether compiled chunks would be slow here: on XLA:CPU a convolution's gradients inside a
  loop body run about 20x slower than the same step called on its own (measured: a two-conv
  CNN GDW step at batch 20 took 3.7 s per step in the chunk's ``fori_loop``, 0.17 s per call;
  ResNet-32 alike; compare jax-ml/jax#12868), so ``auto`` keeps convolutional models on the
  per-step path on CPU. Decided from the model's forward (a convolution in its jaxpr)."""
  if jax.default_backend() != "cpu":
    return False
  sample = runs.store.train_images(0)[:1]
  ds = runs.datasets[0]
  sample = ds.preprocess(sample) if ds.preprocess else sample
  params, model_state = jax.eval_shape(runs.model.init, jax.random.PRNGKey(0), sample)
  jaxpr = jax.make_jaxpr(lambda p, ms, x: runs.model.apply(p, ms, x, False))(
      params, model_state, sample)
  return "conv_general_dilated" in str(jaxpr)


def _fits_on_device(nbytes: int) -> bool:
  """A quarter of the device's memory where it says (GPU, TPU); 4 GiB otherwise (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  limit = stats.get("bytes_limit")
  return nbytes <= (limit / 4 if limit else 4 * 2**30)


def make_stream(runs: runs_lib.Runs) -> Optional[stream.StreamBatches]:
  """The streamed batches of every run (``input_pipeline=stream``), None for in-memory data."""
  if not isinstance(runs.store.images, ImageTable):
    return None
  return stream.provider_for(runs.seeds, runs.store.images, runs.store.train_rows, runs.config,
                             runs.steps_per_epoch, runs.total_steps)
