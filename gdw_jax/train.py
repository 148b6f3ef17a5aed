"""The generic trainer: one functional train state, one jitted step, the training loop.

Nothing here knows which weighting method runs. Each step:

    forward once at theta (train-mode BN)  ->  z, vjp, new BN stats
    method.update(ctx, method_state)        ->  cotangent G on the logits (+ its own meta step)
    grads = vjp(G); optax update            ->  new theta

The BN statistics kept are those of this single real forward; the virtual and meta forwards
inside a method's meta step use batch statistics and their BN updates are dropped.

The loop (:func:`train_and_evaluate`) runs over the global step, so it can start anywhere: the
batch of step ``t`` is a pure function of ``(seed, epoch, step)``, the state comes from the
latest checkpoint in the workdir (:mod:`gdw_jax.checkpoint`), and the host-side records from
:class:`gdw_jax.metrics.Recorder`. The step is jitted once over a device mesh
(:mod:`gdw_jax.parallel`): batches sharded, everything else replicated.
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from gdw_jax import (api, checkpoint, fileio, interop, losses, methods, metrics, models,
                     optim, parallel, validation)
from gdw_jax.data import pipeline
from gdw_jax.validation import ConfigError  # noqa: F401  (re-exported for main.py)


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  model_state: Any
  opt_state: Any
  method_state: Any
  rng: jnp.ndarray


def create_train_state(rng, model: models.ModelFns, method: methods.Method,
                       tx: optax.GradientTransformation, sample_x, init_from: str = "",
                       model_name: str = "") -> TrainState:
  """Fresh state; ``init_from`` (a PyTorch state dict, '' for none) replaces the model's
  variables but the head before the method and the optimizer see them (an EMA teacher starts
  from the pretrained weights too)."""
  model_rng, method_rng, state_rng = jax.random.split(rng, 3)
  params, model_state = model.init(model_rng, sample_x)
  params, model_state = interop.init_from(init_from, params, model_state, model_name)
  method_state = method.init(method_rng, params, model_state)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                    opt_state=tx.init(params), method_state=method_state, rng=state_rng)


def make_train_step(model: models.ModelFns, method: methods.Method,
                    tx: optax.GradientTransformation, schedule: Callable, *,
                    hypergrad: str = "autodiff", norm_size: Optional[int] = None,
                    augment: Optional[Callable] = None, return_cotangent: bool = False):
  """``train_step(state, batch, meta_batch, phase=None) -> (state, metrics, weights)`` (pure;
  jit it, with ``phase`` static: ``method.phase(step)`` for methods that declare phases).
  The gradients come from :func:`gdw_jax.reweighted_grads`, the call a user's own loop makes.

  ``batch``: ``x``, ``y`` (labels seen), ``y_true`` (clean, for logging only), optionally
  ``index`` (positions in the training set, for methods with per-sample memory);
  ``meta_batch``: ``x``, ``y`` or None. ``augment(rng, x) -> x`` runs on device if given.
  ``return_cotangent``: also put the logit cotangent ``G`` ``[N, C]`` of the real update in
  ``metrics['logit_cotangent']`` (for step-parity checks; not a scalar, so off in training).

  ``schedule(step)`` is the one source of the learning rate: the step evaluates it once and uses
  that value for the method's look-ahead step and for the real update (``tx`` must take an
  injected learning rate, :func:`gdw_jax.optim.classifier_optimizer`).
  """

  def train_step(state: TrainState, batch, meta_batch, phase: Optional[int] = None):
    rng = jax.random.fold_in(state.rng, state.step)
    aug_rng, meta_aug_rng, method_rng = jax.random.split(rng, 3)
    x, y = batch["x"], batch["y"]
    meta_x = meta_y = None
    if meta_batch is not None:
      meta_x, meta_y = meta_batch["x"], meta_batch["y"]
    if augment is not None:
      x = augment(aug_rng, x)
      if meta_x is not None:
        meta_x = augment(meta_aug_rng, meta_x)
    lr = schedule(state.step)
    grads, new_model_state, method_state, aux = api.reweighted_grads(
        method, state.method_state, model.apply, state.params, state.model_state,
        {"x": x, "y": y, "index": batch.get("index")},
        None if meta_x is None else {"x": meta_x, "y": meta_y}, lr=lr, step=state.step,
        rng=method_rng, hypergrad=hypergrad, norm_size=norm_size, phase=phase)
    opt_state = optim.set_learning_rate(state.opt_state, lr)  # the look-ahead's lr, by construction
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    logits, cotangent = aux.pop("logits"), aux.pop("logit_cotangent")
    weights = aux.pop("weights")
    metrics = {
        "train_loss": jnp.mean(losses.cross_entropy(logits, y)),
        "train_acc_noisy": losses.accuracy(logits, y),
        "train_acc_true": losses.accuracy(logits, batch.get("y_true", y)),
        "lr": lr,
        **{k: v for k, v in aux.items() if jnp.ndim(v) == 0},
    }
    if return_cotangent:
      metrics["logit_cotangent"] = cotangent
    new_state = state.replace(step=state.step + 1, params=params, model_state=new_model_state,
                              opt_state=opt_state, method_state=method_state)
    return new_state, metrics, weights

  return train_step



def make_eval_fn(model: models.ModelFns, batch_size: int, mesh=None,
                 preprocess: Optional[Callable] = None):
  """``evaluate(params, model_state, x, y) -> {'acc', 'loss', 'pred'}`` in eval mode (running BN
  stats). With a ``mesh``, each batch is split over its devices (padded to a multiple of the
  device count; the padding rows are dropped, eval mode has no batch coupling).
  ``preprocess(x) -> x`` (e.g. CIFAR normalisation of uint8 images) runs on device if given."""
  n_dev = mesh.size if mesh is not None else 1
  out = parallel.replicated(mesh) if mesh is not None else None

  @functools.partial(jax.jit, out_shardings=out)
  def per_sample(params, model_state, x, y):
    if preprocess is not None:
      x = preprocess(x)
    logits = model.apply(params, model_state, x, False)[0]
    return jnp.argmax(logits, -1), losses.cross_entropy(logits, y)

  def evaluate(params, model_state, x, y) -> Dict[str, Any]:
    n = x.shape[0]
    bs = -(-min(batch_size, n) // n_dev) * n_dev  # one compiled shape, divisible by devices
    preds, ces = [], []
    for start in range(0, n, bs):
      idx = np.arange(start, min(start + bs, n))
      padded = np.concatenate([idx, np.full(bs - len(idx), idx[-1])])
      if mesh is not None:
        b = parallel.global_rows({"x": x, "y": y}, padded, parallel.batch_sharding(mesh))
      else:
        b = {"x": x[padded], "y": jnp.asarray(y[padded])}
      pred, ce = jax.device_get(per_sample(params, model_state, b["x"], b["y"]))
      preds.append(pred[:len(idx)])
      ces.append(ce[:len(idx)])
    preds = np.concatenate(preds)
    loss = float(np.sum(np.concatenate(ces), dtype=np.float64)) / n
    return {"acc": 100.0 * float(np.mean(preds == y)), "loss": loss, "pred": preds,
            "ce": np.concatenate(ces)}

  return evaluate


class NonFiniteError(FloatingPointError):
  """A NaN/inf in a loss, the weights, the parameters or a state: the run stops, unsaved."""


def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def with_finite_check(train_step):
  """``step(...) -> (state, metrics, weights, finite)``; ``finite`` maps each scalar metric,
  ``weights`` and each part of the new state to "all finite" (checked inside the jitted step)."""

  def step(state, batch, meta_batch, phase=None):
    new_state, step_metrics, weights = train_step(state, batch, meta_batch, phase)
    finite = {k: jnp.isfinite(v) for k, v in step_metrics.items()}
    finite.update(weights=_all_finite(weights), params=_all_finite(new_state.params),
                  bn_stats=_all_finite(new_state.model_state),
                  opt_state=_all_finite(new_state.opt_state),
                  method_state=_all_finite(new_state.method_state))
    return new_state, step_metrics, weights, finite

  return step


class _FiniteGuard:
  """Checks the steps' ``finite`` flags one step late, so the host does not wait for each
  step before dispatching the next; everything is checked before any save or metrics row."""

  def __init__(self, steps_per_epoch: int, ckpt_dir: Optional[str]):
    self.spe, self.ckpt_dir, self.pending = steps_per_epoch, ckpt_dir, []
    self.last_saved: Optional[int] = None

  def push(self, step: int, finite) -> None:
    self.pending.append((step, finite))

  def check(self, keep_last: int = 0) -> None:
    upto = len(self.pending) - keep_last
    todo, self.pending = self.pending[:upto], self.pending[upto:]
    for step, finite in todo:
      finite = jax.device_get(finite)
      bad = [k for k, ok in finite.items() if not ok]
      if bad:
        epoch, s = divmod(step, self.spe)
        where = (f"the last good checkpoint is step {self.last_saved} in {self.ckpt_dir}"
                 if self.last_saved is not None else "no checkpoint was saved")
        raise NonFiniteError(
            f"non-finite {', '.join(bad)} at step {step} (epoch {epoch}, batch {s}); run "
            f"stopped without saving, {where} (lower the learning rate or check the data)")


def setup(config):
  """Validate, build data, model, method and optimizer. Raises ConfigError on bad input.

  Starts the multi-host runtime if configured (before anything queries devices) and checks the
  batch sizes against the data and the device count, all before any file is written.
  """
  validation.validate(config)
  parallel.initialize(config)
  validation.validate_devices(config, jax.device_count())
  if config.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  dtype = jnp.dtype(config.dtype)
  ds = validation.build_data(config)
  validation.validate_data(config, ds.num_train, parallel.device_count(config))
  spe = pipeline.steps_per_epoch(ds.num_train, config.batch_size, config.drop_last)
  info = methods.DataInfo(ds.num_classes, ds.num_train, ds.class_counts, spe)
  model = models.get(config.model, ds.num_classes, config, dtype)
  try:  # e.g. a transfer file that is not a weighting net
    method = methods.get(config.method)(config, info)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  validation.validate_method(config, method, int(ds.y_meta.shape[0]))
  schedule = optim.lr_schedule(config, spe)
  tx = optim.classifier_optimizer(config)
  return ds, info, model, method, schedule, tx


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Train ``config`` and write config, labels, metrics and final results to ``workdir``.

  If ``workdir`` holds checkpoints of the same config, the run resumes from the latest one and
  ends exactly as an uninterrupted run would (bit-identical on CPU).
  """
  validation.validate(config)  # cheap checks first (setup repeats this one)
  validation.validate_workdir(config, workdir)
  ds, info, model, method, schedule, tx = setup(config)
  mesh = parallel.make_mesh(config)
  primary = parallel.is_primary()
  dtype = jnp.dtype(config.dtype)
  if primary:
    os.makedirs(workdir, exist_ok=True)
    fileio.write_json(os.path.join(workdir, "config.json"),
                      json.loads(config.to_json_best_effort()))
    fileio.write_json(os.path.join(workdir, "data.json"), ds.summary())
    fileio.atomic(os.path.join(workdir, "labels.npz"), ds.save_labels)

  # uint8 images stay uint8 on the host; the dataset's augment / preprocess convert on device.
  x_train, x_meta, x_test = (x if x.dtype == np.uint8 else x.astype(dtype)
                             for x in (ds.x_train, ds.x_meta, ds.x_test))
  train_arrays = {"x": x_train, "y": ds.y_train, "y_true": ds.y_train_true,
                  "index": np.arange(ds.num_train, dtype=np.int32)}
  held_out_meta = {"x": x_meta, "y": ds.y_meta}
  sample_x = ds.preprocess(x_train[:2]) if ds.preprocess else x_train[:2]
  state = create_train_state(jax.random.PRNGKey(config.seed), model, method, tx, sample_x,
                             config.init_from, config.model)
  state = parallel.put_replicated(jax.device_get(state), mesh)
  step_fn = jax.jit(with_finite_check(make_train_step(
      model, method, tx, schedule, hypergrad=config.hypergrad, augment=ds.augment)),
      out_shardings=parallel.replicated(mesh), donate_argnums=0, static_argnames="phase")
  evaluate = make_eval_fn(model, config.eval_batch_size, mesh, ds.preprocess)
  no_test = {"acc": None, "loss": None, "pred": np.zeros(0, np.int64)}  # the data has no test set

  def evaluate_test(state):
    return evaluate(state.params, state.model_state, x_test, ds.y_test) if ds.has_test else no_test

  def phase_of(step: int):
    return method.phase(step) if method.phase is not None else None

  spe, epochs = info.steps_per_epoch, config.num_epochs
  total = epochs * spe
  batch_sharding = parallel.batch_sharding(mesh)
  meta_set = {}  # the current meta set: held out, or training positions the method picked

  def use_meta_set(picked) -> None:
    arrays = held_out_meta if picked is None else {"x": x_train[picked], "y": ds.y_train[picked]}
    n = arrays["y"].shape[0]
    if method.uses_meta and not n:
      raise RuntimeError(f"method {method.name} needs a meta set but has none")
    meta_set.update(picked=picked, arrays=arrays, n=n,
                    bs=min(config.meta_batch_size or config.batch_size, n) if n else 0)

  def pick_meta_set(epoch: int, state) -> None:
    """``method.epoch_start`` (e.g. CMW-Net's per-epoch balanced or small-loss meta set)."""
    if method.epoch_start is None:
      return
    ectx = methods.EpochContext(
        epoch=epoch, seed=config.seed, labels=ds.y_train, class_counts=info.class_counts,
        params=state.params, model_state=state.model_state,
        train_losses=lambda p, ms: evaluate(p, ms, x_train, ds.y_train)["ce"])
    use_meta_set(method.epoch_start(ectx, state.method_state))

  def batches(epoch: int, s: int):
    """The step's global batches (the data position is a pure function of epoch and step)."""
    idx = pipeline.train_batch_indices(ds.num_train, config.batch_size, config.seed, epoch, s)
    batch = parallel.global_rows(train_arrays, idx, batch_sharding)
    meta = None
    if method.uses_meta:
      midx = pipeline.meta_batch_indices(meta_set["n"], meta_set["bs"], config.seed, epoch, s)
      meta = parallel.global_rows(meta_set["arrays"], midx, mesh=mesh)
    return idx, batch, meta

  if method.uses_meta and not held_out_meta["y"].shape[0]:
    pick_meta_set(0, state)  # shapes for the probe below; recomputed when epoch 0 starts
  else:
    use_meta_set(None)
  _, probe_batch, probe_meta = batches(0, 0)
  shapes = jax.eval_shape(functools.partial(step_fn, phase=phase_of(0)), state, probe_batch,
                          probe_meta)
  recorder = metrics.Recorder(sorted(shapes[1]), epochs, ds.y_train, ds.noise_mask,
                              shapes[2].shape[1])
  ckpt = (checkpoint.Checkpointer(workdir, int(config.get("keep_checkpoints", 2)),
                                  bool(config.get("checkpoint_best", True)))
          if config.get("checkpoint", True) else None)
  start = 0
  if ckpt is not None and ckpt.latest_step() is not None:
    loop_target, _ = recorder.state_dict(0.0)
    state, loop_arrays, loop_meta = ckpt.restore(state, loop_target)
    recorder.load_state_dict(loop_arrays, loop_meta)
    start = int(state.step)
    if recorder.meta_picked is not None:  # mid-epoch: the meta set that epoch started with
      use_meta_set(recorder.meta_picked)
  guard = _FiniteGuard(spe, ckpt.dir if ckpt else None)
  guard.last_saved = start if start else None
  writer = metrics.Writer(workdir, recorder.history, bool(config.get("tensorboard", False)),
                          enabled=primary)
  every = int(config.get("checkpoint_every_steps", 0))
  keep_best = bool(config.get("checkpoint_best", True))
  best = max([r["test_acc"] for r in recorder.history if r["test_acc"] is not None],
             default=-np.inf)
  t0 = time.time()
  t_epoch = t0

  def elapsed():
    return recorder.elapsed_before + time.time() - t0

  def save(done: int, test_acc=None):
    guard.check()
    recorder.flush()
    arrays, meta = recorder.state_dict(elapsed())
    meta.update(epoch=done // spe, step_in_epoch=done % spe)
    ckpt.save(done, state, arrays, meta, test_acc)
    guard.last_saved = done

  test = None
  bar = tqdm(total=total, initial=start, disable=not config.progress or not primary,
             unit="step", dynamic_ncols=True)
  try:
    for step in range(start, total):
      epoch, s = divmod(step, spe)
      if s == 0:
        recorder.start_epoch()
        t_epoch = time.time()
        pick_meta_set(epoch, state)
        recorder.meta_picked = meta_set["picked"]
      idx, batch, meta = batches(epoch, s)
      state, m, w, finite = step_fn(state, batch, meta, phase=phase_of(step))
      guard.push(step, finite)
      guard.check(keep_last=1)
      recorder.add(epoch, idx, m, w)
      bar.update(1)
      if s % 20 == 0:
        bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{float(m['train_loss']):.3f}",
                        test_acc=_acc_text(recorder.history[-1]["test_acc"])
                        if recorder.history else "-")
      done, test_acc = step + 1, None
      if s == spe - 1:  # epoch end
        guard.check()
        test = evaluate_test(state)
        now = time.time()
        row = recorder.end_epoch(epoch, done, test, elapsed(), now - t_epoch, spe)
        if meta_set["picked"] is not None:  # how clean the method's own meta set is (analysis)
          picked = meta_set["picked"]
          row["meta_set_size"] = int(len(picked))
          row["meta_set_noisy_frac"] = float(ds.noise_mask[picked].mean()) if len(picked) else None
        writer.write(row)
        bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{row['train_loss']:.3f}",
                        test_acc=_acc_text(row["test_acc"]))
        test_acc = row["test_acc"]
      new_best = test_acc is not None and test_acc > best
      if ckpt is not None and (done == total or (every and done % every == 0)
                               or (new_best and keep_best)):
        save(done, test_acc)
      if new_best:
        best = test_acc
    guard.check()
  finally:
    bar.close()
    writer.close()
    if ckpt is not None:
      ckpt.close()

  if test is None:  # resumed from the final checkpoint: nothing left to train
    test = evaluate_test(state)
  final = _final_summary(config, ds, recorder.history, int(state.step), mesh.size, elapsed())
  final["label_score"] = method.label_score  # how label_issues.csv ranks (no method names)
  train_eval = evaluate(state.params, state.model_state, x_train, ds.y_train)  # label issues
  if primary:
    _write_final_files(workdir, ds, recorder, test, jax.device_get(state.method_state), final,
                       train_eval, config.label_score_epochs)
    if config.get("report", True):
      from gdw_jax.analysis import report  # imported here: matplotlib loads only when needed
      report.write_report(workdir)
  return final


def _acc_text(acc) -> str:
  return "-" if acc is None else f"{acc:.2f}"


def _final_summary(config, ds, history, steps: int, num_devices: int, wall_time: float):
  accs = [r["test_acc"] for r in history]
  has = bool(accs) and accs[-1] is not None  # no test set: every accuracy is None
  return {
      "method": config.method, "dataset": config.dataset, "noise_type": config.noise_type,
      "noise_rate": config.noise_rate, "imbalance_factor": config.imbalance_factor,
      "seed": config.seed, "num_epochs": config.num_epochs, "steps": steps,
      "last_acc": accs[-1] if has else None, "best_acc": max(accs) if has else None,
      "best_epoch": int(np.argmax(accs)) if has else None,
      "last5_acc": float(np.mean(accs[-5:])) if has else None,
      "final_train_loss": history[-1]["train_loss"],
      "realised_noise_rate": ds.realised_noise_rate, "notes": list(ds.notes),
      "num_devices": num_devices, "num_processes": jax.process_count(),
      "wall_time_s": wall_time,
  }


def _write_final_files(workdir, ds, recorder, test, method_state, final, train_eval,
                       label_score_epochs: int) -> None:
  """Test predictions, method state, per-sample weights, ``label_issues.csv``, then
  ``final.json`` (written last: its presence means the run completed)."""
  from gdw_jax.analysis import label_issues  # pylint: disable=import-outside-toplevel
  fileio.save_npz(os.path.join(workdir, "predictions.npz"), test_pred=test["pred"],
                  test_labels=ds.y_test)
  fileio.write_bytes(os.path.join(workdir, "method_state.msgpack"),
                     flax.serialization.to_bytes(method_state))
  fileio.save_npz(os.path.join(workdir, "sample_weights.npz"),
                  instance_weight=recorder.instance_w, final_weights=recorder.epoch_w,
                  noisy_labels=ds.y_train,
                  **({"true_labels": ds.y_train_true} if ds.truth_known else {}))
  label_issues.write_for_run(label_issues.path_in(workdir), ds, train_eval, recorder.instance_w,
                             final["label_score"], label_score_epochs)
  fileio.write_json(os.path.join(workdir, "final.json"), final)
