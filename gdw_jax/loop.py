"""The training loop of a launch (one run, or several seeds as one program).

The loop runs over the global step in *segments*: the steps between two host events (an epoch
start or end, a checkpoint, or a call-length limit)::

    restore the latest step every run saved (or start at 0)
    for each segment [a, b):
      at an epoch start: each run's meta set (method hooks), per-epoch records reset
      run steps a..b-1 on the device      # a batch provider (gdw_jax.inputs)
      one host sync: every step's metrics, weights and finite flags (FiniteGuard)
      at an epoch end: evaluate, one metrics row per run
      save when due, or when a SIGTERM/SIGINT came (SignalGuard), then stop
    end-of-run files per run (+ the seeds' summary)

The batch of step ``t`` is a pure function of ``(seed, epoch, step)`` and the state comes from
the latest checkpoint, so a launch can start anywhere. How the batches reach the step (images
on the device, gathered on the host, or streamed) is the batch provider's
(:mod:`gdw_jax.inputs`); what stops a launch early, the guards' (:mod:`gdw_jax.guards`).

Below the entry (:func:`gdw_jax.train.train_and_evaluate`); built on the batch providers, the
launch's pieces (:mod:`gdw_jax.runs`) and the step (:mod:`gdw_jax.train_step`,
:mod:`gdw_jax.steps`, :mod:`gdw_jax.guards`).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from gdw_jax import checkpoint, fileio, metrics, parallel, train_step
from gdw_jax import inputs as inputs_lib
from gdw_jax import runs as runs_lib
from gdw_jax import steps as steps_lib
from gdw_jax.data import stream
from gdw_jax.data.image_table import ImageTable
from gdw_jax.guards import FiniteGuard, Preempted, SignalGuard, with_finite_check
from gdw_jax.validation import ConfigError

clock = time.perf_counter  # the loop's clock (a test may replace it)
SECONDS_PER_CALL = 2.0     # steps_per_call=0: calls of about this long (and at most an epoch)


# ---------------------------------------------------------------------------------------------
# Where the time goes


class _CompileTime:
  """Seconds JAX spends tracing, lowering and compiling (its own monitoring events). Nested
  traces (a jitted function inside another) are counted once."""

  EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
            "/jax/core/compile/jaxpr_to_mlir_module_duration",
            "/jax/core/compile/backend_compile_duration")

  def __init__(self):
    self.total = 0.0
    self._traces: List[tuple] = []  # (start, end) of the outermost traces seen recently

  def __call__(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event not in self.EVENTS:
      return
    end = clock()
    if event == self.EVENTS[0]:
      start = end - duration
      inner = [t for t in self._traces if t[0] >= start]
      self._traces = [t for t in self._traces if t[0] < start][-32:] + [(start, end)]
      duration -= sum(e - s for s, e in inner)
    self.total += duration


COMPILE_TIME = _CompileTime()
jax.monitoring.register_event_duration_secs_listener(COMPILE_TIME)


class Timers:
  """A launch's wall time by kind: ``compile`` (every jit compile, wherever it happens), and
  ``steps``, ``eval``, ``hooks``, ``checkpoint``, ``report`` without the compiles inside them."""

  KINDS = ("compile", "steps", "eval", "hooks", "checkpoint", "report")

  def __init__(self):
    self.start, self.compile_start = clock(), COMPILE_TIME.total
    self.seconds: Dict[str, float] = defaultdict(float)

  @contextlib.contextmanager
  def __call__(self, kind: str):
    """Time the block as ``kind``; yields a dict whose ``'s'`` is the block's seconds."""
    t, c, out = clock(), COMPILE_TIME.total, {}
    try:
      yield out
    finally:
      out["s"] = (clock() - t) - (COMPILE_TIME.total - c)
      self.seconds[kind] += out["s"]

  def split(self) -> Dict[str, float]:
    out = {k: self.seconds[k] for k in self.KINDS}
    out["compile"] = COMPILE_TIME.total - self.compile_start
    out["total"] = clock() - self.start
    out["other"] = out["total"] - sum(out[k] for k in self.KINDS)
    return out


# ---------------------------------------------------------------------------------------------
# The train state, and each run's records


def initial_state(runs: runs_lib.Runs, batches: Optional[stream.StreamBatches] = None):
  """Every run's state from its own seed (as if alone), stacked along a runs axis for K > 1,
  placed on the mesh (replicated, or split along the runs axis)."""
  states = []
  for k, seed in enumerate(runs.seeds):
    sample = runs.store.train_images(k)[:2]
    if batches is not None:  # streamed: decode the two images (evaluation transform)
      sample = batches.decode(sample)
    ds = runs.datasets[k]
    sample = ds.preprocess(sample) if ds.preprocess else sample
    c = runs.configs[k]
    state = train_step.create_train_state(jax.random.PRNGKey(seed), runs.model, runs.methods[k],
                                          runs.tx, sample, c.init_from, c.model)
    states.append(jax.device_get(state))
  state = jax.tree.map(lambda *a: np.stack(a), *states) if runs.batched else states[0]
  return parallel.put(state, parallel.state_sharding(runs.mesh))


class RunLog:
  """One run's records: the host-side recorder, its metrics writer and checkpoints."""

  def __init__(self, runs: runs_lib.Runs, k: int, names, weight_dim: int):
    c, ds = runs.configs[k], runs.datasets[k]
    self.workdir, self.config, self.ds = runs.workdirs[k], c, ds
    self.recorder = metrics.Recorder(names, c.num_epochs, ds.y_train, ds.noise_mask, weight_dim)
    self.ckpt = (checkpoint.Checkpointer(self.workdir, c.keep_checkpoints, c.checkpoint_best)
                 if c.checkpoint else None)
    self.writer: Optional[metrics.Writer] = None
    self.best = -np.inf
    self.test: Optional[Dict[str, Any]] = None  # the last evaluation

  def open_writer(self) -> None:
    self.writer = metrics.Writer(self.workdir, self.recorder.history, self.config.tensorboard,
                                 enabled=parallel.is_primary())
    self.best = max([r["test_acc"] for r in self.recorder.history if r["test_acc"] is not None],
                    default=-np.inf)

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
    if self.ckpt is not None:
      self.ckpt.close()


# ---------------------------------------------------------------------------------------------
# The loop


class Trainer:
  """One launch, from its inputs (:class:`gdw_jax.runs.Runs`) to its files."""

  def __init__(self, runs: runs_lib.Runs, heartbeat=None):
    """Everything is checked before the first file is written; then resume if possible.
    ``heartbeat(step)`` is called at each segment end (the workdir lease's
    :meth:`gdw_jax.lease.Lease.beat`: it raises if the lease is no longer this launch's)."""
    self.runs = runs
    self.heartbeat = heartbeat or (lambda step: None)
    self.timers = Timers()
    self.stream = inputs_lib.make_stream(runs)
    self.state = initial_state(runs, self.stream)
    self.step_fn = steps_lib.RunsStep([with_finite_check(train_step.make_train_step(
        runs.model, m, runs.tx, runs.schedule, hypergrad=runs.config.hypergrad,
        augment=runs.datasets[0].augment)) for m in _distinct(runs.methods)], runs.batched)
    self._make_eval_fns()
    self.metasets = runs_lib.MetaSets(runs)
    self._first_meta_sets()
    self.inputs = inputs_lib.choose_inputs(runs, self.step_fn, self.stream)
    self.inputs.set_meta(*self.metasets.rows_and_labels(), self.metasets.batch_size)
    names, weight_dim = self._probe_step()
    self.logs = [RunLog(runs, k, names, weight_dim) for k in range(runs.num_runs)]
    self.start = self._restore()  # before any file is written: a refused resume changes none
    runs_lib.write_start_files(runs)  # the first file written: everything above validated
    self._open_records()
    self.signals = SignalGuard()

  def _first_meta_sets(self) -> None:
    """Epoch 0's method-picked meta sets, where the shapes need them before training (no
    held-out set) or the seeds must agree on their size; recomputed when epoch 0 starts."""
    r = self.runs
    no_held_out = not r.store.meta_rows.shape[1]
    if self.metasets.has_hook and (r.batched or (r.method.uses_meta and no_held_out)):
      with self.timers("hooks"):
        self.metasets.start_epoch(0, self.state, self._train_losses)
    runs_lib.check_meta_sets_fit(self.metasets)

  def _probe_step(self):
    """The step's metric names and weights' width; the state in the step's dtypes; the runs'
    steps checked to be one program."""
    batch, meta = self._probe_batches()
    names, weight_dim, state_shapes = self._output_shapes(batch, meta)
    # The state enters the loop with the dtypes the step gives it (a float64 run's BN statistics
    # start as float32; a chunk's loop carry must keep one type). Exact: only widens.
    self.state = jax.tree.map(lambda a, s: a.astype(s.dtype) if a.dtype != s.dtype else a,
                              self.state, state_shapes)
    self._check_one_program(batch, meta)
    return names, weight_dim

  def _open_records(self) -> None:
    """Metrics writers (rewritten from the restored rows), the finite guard, the clocks."""
    r = self.runs
    for log in self.logs:
      log.open_writer()
    first = self.logs[0].ckpt
    self.guard = FiniteGuard(r.steps_per_epoch, first.dir if first else None,
                             r.seeds if r.batched else None)
    self.guard.last_saved = self.start or None
    self.t0 = self.epoch_t0 = clock()
    self.limit = r.config.steps_per_call or r.steps_per_epoch

  def _make_eval_fns(self):
    r, c = self.runs, self.runs.config
    pre = r.datasets[0].preprocess
    self.evaluate = train_step.make_eval_fn(r.model, c.eval_batch_size, r.mesh, pre, runs=r.batched)
    # one run's model on its own (a method's epoch_start hook); one run: the launch's own eval
    self.evaluate_one = (self.evaluate if not r.batched else
                         train_step.make_eval_fn(r.model, c.eval_batch_size, None, pre))
    # the end-of-run pass over the training set: with the softmax where the labels are candidate
    # sets (label_issues.csv ranks by the model's mass outside each set)
    self.evaluate_train = (train_step.make_eval_fn(r.model, c.eval_batch_size, None, pre,
                                                   with_probs=True)
                           if r.datasets[0].candidates is not None else self.evaluate_one)
    ds = r.datasets[0]

    def cast(x):  # raw uint8 images are preprocessed on device; arrays take the run's dtype
      return x if isinstance(x, ImageTable) or x.dtype == np.uint8 else x.astype(r.dtype)

    self.x_test = cast(ds.x_test)
    self.extra_tests = {name: (cast(x), y) for name, (x, y) in (ds.extra_tests or {}).items()}

  def _evaluate_test(self) -> List[Dict[str, Any]]:
    """Every run's test evaluation (``acc`` None when the data has no test set); the further
    test sets' (mini-WebVision's ILSVRC12 classes) under ``extra[name]``."""
    r = self.runs
    if r.datasets[0].has_test:
      tests = self._evaluate_all(self.x_test, r.datasets[0].y_test)
    else:
      tests = [{"acc": None, "top5": None, "loss": None, "pred": np.zeros(0, np.int64)}
               for _ in range(r.num_runs)]
    for name, (x, y) in self.extra_tests.items():
      for test, extra in zip(tests, self._evaluate_all(x, y)):
        test.setdefault("extra", {})[name] = extra
    return tests

  def _evaluate_all(self, x, y) -> List[Dict[str, Any]]:
    """Every run's evaluation on one set."""
    out = self._eval(self.evaluate, self.state.params, self.state.model_state, x, y)
    return out if self.runs.batched else [out]

  def _train_eval(self, k: int) -> Dict[str, Any]:
    """Run ``k``'s final model on its training set (the losses ``label_issues.csv`` ranks by)."""
    r = self.runs
    params, model_state = (runs_lib.run_slice(t, k, r.batched)
                           for t in (self.state.params, self.state.model_state))
    with self.timers("eval"):
      return self._eval(self.evaluate_train, params, model_state, r.store.train_images(k),
                        r.store.labels[k])

  def _train_losses(self, k: int, params, model_state) -> np.ndarray:
    r = self.runs
    with self.timers("eval"):
      return self._eval(self.evaluate_one, params, model_state, r.store.train_images(k),
                        r.store.labels[k])["ce"]

  def _eval(self, evaluate, params, model_state, x, y):
    """``evaluate`` on arrays, or on the streamed evaluation batches of an image table."""
    if not isinstance(x, ImageTable):
      return evaluate(params, model_state, x, y)
    batches = self.stream.eval_batches(x, evaluate.batch_size_for(len(y)))
    return evaluate.streamed(params, model_state, batches, y)

  def _probe_batches(self):
    """Run 0's batches of step 0, on the host (shapes and dtypes for the probes below)."""
    st = self.runs.store

    def images(rows):  # a streamed store's images are not read here: only shapes matter
      if isinstance(st.images, ImageTable):
        return np.zeros((len(rows),) + st.images.shape[1:], st.images.dtype)
      return st.images[rows]

    idx, midx = self.inputs.indices(0)
    batch = {"x": images(st.train_rows[0][idx[0]]), "y": st.labels[0][idx[0]],
             "y_true": st.true_labels[0][idx[0]], "index": idx[0]}
    meta = None
    if midx is not None:
      rows, labels = self.metasets.rows_and_labels()
      meta = {"x": images(rows[0][midx[0]]), "y": labels[0][midx[0]]}
    return jax.tree.map(jnp.asarray, (batch, meta))

  def _output_shapes(self, batch, meta):
    """The step's metric names, the weights' width and the new state's shapes (run 0's step)."""
    r = self.runs
    state = jax.eval_shape(lambda s: runs_lib.run_slice(s, 0, r.batched), self.state)
    shapes = jax.eval_shape(functools.partial(self.step_fn.run_steps[0], phase=r.phase(0)),
                            state, batch, meta)
    state_shapes = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((r.num_runs,) + a.shape if r.batched else a.shape,
                                       a.dtype), shapes[0])
    return sorted(shapes[1]), shapes[2].shape[1], state_shapes

  def _check_one_program(self, batch, meta) -> None:
    """Runs whose methods were built from different data: their steps must be one program up
    to constants (steps.RunsStep), checked before anything is written."""
    r = self.runs
    if len(self.step_fn.run_steps) == 1:
      return
    stacked = jax.tree.map(lambda a: jax.ShapeDtypeStruct((r.num_runs,) + a.shape, a.dtype),
                           (batch, meta))
    try:
      jax.eval_shape(functools.partial(self.step_fn, phase=r.phase(0)), self.state, *stacked)
    except ValueError as e:
      raise ConfigError(f"seeds: method {r.config.method}: {e}") from None

  # -- resume --------------------------------------------------------------------------------

  def _restore(self) -> int:
    """Continue from the latest step every run saved and that restores (0: a fresh start).

    A checkpoint that cannot be restored (truncated, a file missing, another structure) is
    skipped for the one before it; once one restores, each skipped one is reported on one line
    and deleted (so that its step is saved again). When none restores the launch stops
    (:class:`ConfigError`, nothing deleted) rather than train from scratch over them, unless
    ``restart`` asks for exactly that."""
    r = self.runs
    if self.logs[0].ckpt is None:
      return 0
    if r.config.restart:
      self._delete_previous_run()
      return 0
    common = sorted(set.intersection(*[set(log.ckpt.all_steps()) for log in self.logs]))
    where = self.logs[0].ckpt.dir + (" (and the other seeds')" if r.batched else "")
    broken = []  # (step, reason), newest first
    for step in reversed(common):
      try:
        self._restore_step(step)
      except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many kinds for a bad file
        broken.append((step, fileio.reason(e).split(" See full TensorStore details")[0][:200]))
        continue
      for bad, reason in broken:  # only now: nothing is deleted unless an older one restores
        if parallel.is_primary():
          print(f"gdw_jax: warning: checkpoint {bad} in {where} cannot be restored ({reason}); "
                f"deleted it, resuming from step {step}", file=sys.stderr, flush=True)
        for log in self.logs:
          log.ckpt.discard(bad)
      return step
    if broken:
      raise ConfigError(
          f"the checkpoints in {where} (steps {', '.join(map(str, common))}) cannot be "
          f"restored: step {broken[0][0]}: {broken[0][1]}; --config.restart=true starts from "
          f"scratch, deleting them")
    return 0

  def _restore_step(self, step: int) -> None:
    """Every run's state and records at ``step``."""
    r = self.runs
    restored = []
    for k, log in enumerate(self.logs):
      target = self.state if not r.batched else _single_device_target(self.state)
      loop_target, _ = log.recorder.state_dict(0.0, 0.0)
      state, arrays, meta = log.ckpt.restore(target, loop_target, step=step)
      log.recorder.load_state_dict(arrays, meta)
      self.metasets.picked[k] = log.recorder.meta_picked
      restored.append(state)
    if r.batched:
      self.state = parallel.put(jax.tree.map(lambda *a: np.stack(a), *jax.device_get(restored)),
                                parallel.state_sharding(r.mesh))
    else:
      self.state = restored[0]
    if step % r.steps_per_epoch and self.metasets.has_hook:  # mid-epoch: that epoch's meta set
      self.inputs.set_meta(*self.metasets.rows_and_labels(), self.metasets.batch_size)

  def _delete_previous_run(self) -> None:
    """``restart``: the checkpoints and completion files of an earlier run in the workdir go
    (metrics.jsonl is rewritten from no rows when the records open)."""
    for log in self.logs:
      for step in log.ckpt.all_steps():
        log.ckpt.discard(step)
    if parallel.is_primary():
      for path in [os.path.join(w, "final.json") for w in self.runs.workdirs] + [
          os.path.join(self.runs.workdir, "summary.json")]:
        if os.path.exists(path):
          os.remove(path)

  # -- the loop ------------------------------------------------------------------------------

  def train(self) -> None:
    """Train from :attr:`start` to the last step (see the module docstring)."""
    r = self.runs
    total, spe = r.total_steps, r.steps_per_epoch
    bar = tqdm(total=total, initial=self.start, unit="step", dynamic_ncols=True,
               disable=not r.config.progress or not parallel.is_primary())
    step = self.start
    try:
      with self.signals:
        while step < total:
          epoch = step // spe
          if step % spe == 0:
            self._start_epoch(epoch)
          stop = self._segment_end(step)
          self._run_segment(step, stop)
          self.heartbeat(stop)  # before this segment writes anything
          bar.update(stop - step)
          step = stop
          test_accs = self._end_epoch(epoch) if step % spe == 0 else None
          self._show(bar, epoch)
          signum = self.signals.requested()
          if self._save_due(step, self._new_best(test_accs)) or (signum and r.config.checkpoint):
            self.save(step, test_accs)
          if signum and step < total:
            self._stop(signum, step)
    finally:
      bar.close()
      self.inputs.close()
      for log in self.logs:
        log.close()

  def _stop(self, signum: int, step: int) -> None:
    """A signal came: the step's checkpoint committed (the metrics rows are written at each
    epoch end, the rest is in the checkpoint), then :class:`gdw_jax.guards.Preempted`."""
    for log in self.logs:
      if log.ckpt is not None:
        log.ckpt.wait()
    raise Preempted(signum, step, self.runs.steps_per_epoch,
                          saved=bool(self.runs.config.checkpoint))

  def _segment_end(self, step: int) -> int:
    """The next host event after ``step``: an epoch end, a checkpoint step, the last step, or
    the call-length limit."""
    c, spe = self.runs.config, self.runs.steps_per_epoch
    ends = [(step // spe + 1) * spe, self.runs.total_steps, step + self.limit]
    if c.checkpoint and c.checkpoint_every_steps:
      every = c.checkpoint_every_steps
      ends.append((step // every + 1) * every)
    return min(ends)

  def _run_segment(self, start: int, stop: int) -> None:
    """Steps ``start..stop-1`` on the device, then one host sync for all their outputs."""
    epoch = start // self.runs.steps_per_epoch
    with self.timers("steps") as took:
      self.state, pending = self.inputs.run(self.state, range(start, stop))
      blocks = self.inputs.fetch(pending)
    self.guard.check(blocks)
    for b in blocks:
      for k, log in enumerate(self.logs):
        for t in range(len(b.steps)):
          log.recorder.add(epoch, b.idx[t, k], {n: v[t, k] for n, v in b.metrics.items()},
                           b.weights[t, k])
    self.last_loss = float(np.mean(blocks[-1].metrics["train_loss"][-1]))
    self._adapt_limit(stop - start, took["s"])

  def _adapt_limit(self, n: int, seconds: float) -> None:
    """``steps_per_call=0``: aim for calls of about :data:`SECONDS_PER_CALL` (a live progress
    bar when steps are slow), at most an epoch."""
    if self.runs.config.steps_per_call:
      return
    if jax.process_count() > 1:  # every process must cut the same segments: process 0 decides
      seconds = float(multihost_utils.broadcast_one_to_all(np.float32(seconds)))
    if seconds > 0:
      limit = round(n * SECONDS_PER_CALL / seconds)
      self.limit = int(np.clip(limit, 1, self.runs.steps_per_epoch))

  def _start_epoch(self, epoch: int) -> None:
    for log in self.logs:
      log.recorder.start_epoch()
    self.epoch_t0 = clock()
    if self.metasets.has_hook:
      with self.timers("hooks"):
        self.metasets.start_epoch(epoch, self.state, self._train_losses)
      self.metasets.check()
      self.inputs.set_meta(*self.metasets.rows_and_labels(), self.metasets.batch_size)
    for k, log in enumerate(self.logs):
      log.recorder.meta_picked = self.metasets.picked[k]

  def _end_epoch(self, epoch: int) -> List[float]:
    """Evaluate every run; write its metrics row. Returns the runs' test accuracies."""
    r = self.runs
    with self.timers("eval"):
      tests = self._evaluate_test()
    done = (epoch + 1) * r.steps_per_epoch
    for log, test, picked in zip(self.logs, tests, self.metasets.picked):
      log.test = test
      row = log.recorder.end_epoch(epoch, done, test, self.elapsed(), clock() - self.epoch_t0,
                                   r.steps_per_epoch)
      if picked is not None:  # how clean the method's own meta set is (analysis)
        row["meta_set_size"] = int(len(picked))
        row["meta_set_noisy_frac"] = float(log.ds.noise_mask[picked].mean()) if len(
            picked) else None
      log.writer.write(row)
    return [t["acc"] for t in tests]

  def _new_best(self, test_accs) -> bool:
    """Whether any run's test accuracy is a new best (all runs then save: one common step)."""
    if test_accs is None or test_accs[0] is None:  # not an epoch end, or no test set
      return False
    new = any(a > log.best for a, log in zip(test_accs, self.logs))
    for a, log in zip(test_accs, self.logs):
      log.best = max(log.best, a)
    return new

  def _save_due(self, done: int, new_best: bool) -> bool:
    c = self.runs.config
    if not c.checkpoint:
      return False
    return (done == self.runs.total_steps
            or (c.checkpoint_every_steps and done % c.checkpoint_every_steps == 0)
            or (new_best and c.checkpoint_best))

  def _show(self, bar, epoch: int) -> None:
    tests = [log.test["acc"] for log in self.logs
             if log.test is not None and log.test["acc"] is not None]
    bar.set_postfix(epoch=f"{epoch + 1}/{self.runs.config.num_epochs}",
                    loss=f"{self.last_loss:.3f}",
                    test_acc=f"{np.mean(tests):.2f}" if tests else "-")

  def elapsed(self) -> float:
    """The launch's wall time so far, over every session."""
    return self.logs[0].recorder.elapsed_before + clock() - self.t0

  def save(self, done: int, test_accs: Optional[List[float]] = None) -> None:
    """The one save: every run's state and records at step ``done``, in the background.

    Every run's previous save is committed before any run starts this one, so a kill at any
    moment leaves a step that every run has (:meth:`_restore`)."""
    r = self.runs
    with self.timers("checkpoint"):
      for log in self.logs:
        log.ckpt.wait()
      in_epoch = clock() - self.epoch_t0
      for k, log in enumerate(self.logs):
        arrays, meta = log.recorder.state_dict(self.elapsed(), in_epoch)
        meta.update(epoch=done // r.steps_per_epoch, step_in_epoch=done % r.steps_per_epoch)
        log.ckpt.save(done, runs_lib.run_slice(self.state, k, r.batched), arrays, meta,
                      None if test_accs is None else test_accs[k])
    self.guard.last_saved = done

  # -- the end -------------------------------------------------------------------------------

  def finish(self) -> Dict[str, Any]:
    """Every run's end-of-run files; for seeds also the summary. Returns the final dict (one
    run) or the summary (seeds)."""
    r = self.runs
    if self.logs[0].test is None:  # resumed from the final checkpoint: nothing left to train
      for log, test in zip(self.logs, self._evaluate_test()):
        log.test = test
    method_states = jax.device_get(self.state.method_state)
    steps_done = np.asarray(jax.device_get(self.state.step)).reshape(-1)
    finals = []
    for k, log in enumerate(self.logs):
      final = runs_lib.final_summary(log.config, log.ds, log.recorder.history,
                                     int(steps_done[k]), r.mesh.size, self.elapsed())
      final["label_score"] = (  # how label_issues.csv ranks: candidate sets rank by their mass
          "candidates" if log.ds.candidates is not None else r.methods[k].label_score)
      if self.stream is not None and self.stream.bad_images:  # skip_bad_images: zeros instead
        final["bad_images"] = dict(sorted(self.stream.bad_images.items()))
      finals.append(final)
      train_eval = self._train_eval(k)  # every process takes part (the mesh's collectives)
      if parallel.is_primary():
        runs_lib.write_end_files(log.workdir, log.ds, log.recorder, log.test,
                                 runs_lib.run_slice(method_states, k, r.batched), final,
                                 train_eval, log.config.label_score_epochs)
    if parallel.is_primary() and r.config.report:
      with self.timers("report"):
        runs_lib.write_reports(r.workdirs)
    out = finals[0]
    if r.per_seed_dirs:
      out = runs_lib.summarize(r.seeds, finals)
      if parallel.is_primary():
        runs_lib.write_summary(r.workdir, out)
    if parallel.is_primary():
      self._write_timing()
    return out

  def _write_timing(self) -> None:
    """``timing.json``: where this session's wall time went, and how the steps were fed."""
    split = self.timers.split()
    fileio.write_json(os.path.join(self.runs.workdir, "timing.json"), {
        "seconds": split, "inputs": self.inputs.name, "num_runs": self.runs.num_runs,
        "steps_this_session": self.runs.total_steps - self.start,
        "backend": jax.default_backend()})


def _distinct(methods):
  """The runs' methods, once when they are one function (runs.Runs.same_method)."""
  return methods[:1] if all(m is methods[0] for m in methods) else methods


def _single_device_target(state):
  """Run 0's part of a runs-axis state as restore targets on this process's first device."""
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype, sharding=here), state)
