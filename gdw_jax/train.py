"""The generic trainer: one functional train state, one jitted step, the epoch loop.

Nothing here knows which weighting method runs. Each step:

    forward once at theta (train-mode BN)  ->  z, vjp, new BN stats
    method.update(ctx, method_state)        ->  cotangent G on the logits (+ its own meta step)
    grads = vjp(G); optax update            ->  new theta

The BN statistics kept are those of this single real forward; the virtual and meta forwards
inside a method's meta step use batch statistics and their BN updates are dropped.
"""
from __future__ import annotations

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

from gdw_jax import bilevel, data, losses, methods, models, optim, validation
from gdw_jax.data import pipeline
from gdw_jax.validation import ConfigError


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  model_state: Any
  opt_state: Any
  method_state: Any
  rng: jnp.ndarray


def create_train_state(rng, model: models.ModelFns, method: methods.Method,
                       tx: optax.GradientTransformation, sample_x) -> TrainState:
  model_rng, method_rng, state_rng = jax.random.split(rng, 3)
  params, model_state = model.init(model_rng, sample_x)
  method_state = (method.init(method_rng, params, model_state) if method.init_takes_model
                  else method.init(method_rng))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                    opt_state=tx.init(params), method_state=method_state, rng=state_rng)


def make_train_step(model: models.ModelFns, method: methods.Method,
                    tx: optax.GradientTransformation, schedule: Callable, *,
                    hypergrad: str = "autodiff", norm_size: Optional[int] = None,
                    augment: Optional[Callable] = None):
  """``train_step(state, batch, meta_batch) -> (state, metrics, weights)`` (pure; jit it).

  ``batch``: ``x``, ``y`` (labels seen), ``y_true`` (clean, for logging only), optionally
  ``index`` (positions in the training set, for methods with per-sample memory);
  ``meta_batch``: ``x``, ``y`` or None. ``augment(rng, x) -> x`` runs on device if given.
  """

  def train_step(state: TrainState, batch, meta_batch):
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
    input_info = None
    if method.transform_input is not None:  # e.g. mixup: the classifier sees x_in, not x
      x, input_info = method.transform_input(state.method_state,
                                             jax.random.fold_in(method_rng, 1), x, y, state.step)
    lr = schedule(state.step)

    def forward(params):
      return model.apply(params, state.model_state, x, True)

    logits, vjp_fn, new_model_state = jax.vjp(forward, state.params, has_aux=True)
    ctx = bilevel.StepContext(
        apply_fn=model.apply, params=state.params, model_state=state.model_state, x=x,
        labels=y, logits=logits, lr=jnp.asarray(lr, logits.dtype), meta_x=meta_x,
        meta_y=meta_y, rng=method_rng, step=state.step, norm_size=norm_size,
        hypergrad=hypergrad, index=batch.get("index"), input_info=input_info)
    cotangent, method_state, aux = method.update(ctx, state.method_state)
    (grads,) = vjp_fn(jax.lax.stop_gradient(cotangent).astype(logits.dtype))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    weights = aux.pop("weights")
    metrics = {
        "train_loss": jnp.mean(losses.cross_entropy(logits, y)),
        "train_acc_noisy": losses.accuracy(logits, y),
        "train_acc_true": losses.accuracy(logits, batch.get("y_true", y)),
        "lr": lr,
        **{k: v for k, v in aux.items() if jnp.ndim(v) == 0},
    }
    new_state = state.replace(step=state.step + 1, params=params, model_state=new_model_state,
                              opt_state=opt_state, method_state=method_state)
    return new_state, metrics, weights

  return train_step


def make_eval_fn(model: models.ModelFns, batch_size: int):
  """``evaluate(params, model_state, x, y) -> {'acc', 'loss'}`` in eval mode (running BN stats)."""

  @jax.jit
  def logits_fn(params, model_state, x):
    return model.apply(params, model_state, x, False)[0]

  def evaluate(params, model_state, x, y) -> Dict[str, Any]:
    n = x.shape[0]
    preds, total_loss = [], 0.0
    for start in range(0, n, batch_size):
      xb, yb = x[start:start + batch_size], y[start:start + batch_size]
      pad = batch_size - xb.shape[0] if n > batch_size else 0
      if pad:  # keep one compiled shape
        xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
      logits = logits_fn(params, model_state, xb)[:len(yb)]
      total_loss += float(jnp.sum(losses.cross_entropy(logits, jnp.asarray(yb))))
      preds.append(np.asarray(jnp.argmax(logits, -1)))
    preds = np.concatenate(preds)
    return {"acc": 100.0 * float(np.mean(preds == y)), "loss": total_loss / n, "pred": preds}

  return evaluate


def make_train_loss_fn(model: models.ModelFns, x, y, batch_size: int):
  """``(params, model_state) -> [n]`` per-sample CE of ``(x, y)`` in eval mode (no augmentation)."""

  @jax.jit
  def ce(params, model_state, xb, yb):
    return losses.cross_entropy(model.apply(params, model_state, xb, False)[0], yb)

  def train_losses(params, model_state) -> np.ndarray:
    out = []
    for start in range(0, x.shape[0], batch_size):
      xb, yb = x[start:start + batch_size], y[start:start + batch_size]
      pad = batch_size - xb.shape[0] if x.shape[0] > batch_size else 0
      if pad:  # keep one compiled shape
        xb = np.concatenate([xb, np.repeat(xb[-1:], pad, axis=0)])
        yb = np.concatenate([yb, np.repeat(yb[-1:], pad, axis=0)])
      out.append(np.asarray(ce(params, model_state, xb, yb))[:batch_size - pad])
    return np.concatenate(out)

  return train_losses


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def _instance_weight(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """One number per sample: the weight itself, or for class-level weights the target column."""
  if weights.shape[1] == 1:
    return weights[:, 0]
  return np.take_along_axis(weights, labels[:, None], axis=1)[:, 0]


def setup(config):
  """Validate, build data, model, method and optimizer. Raises ConfigError on bad input."""
  validation.validate(config)
  if config.dtype == "float64":
    jax.config.update("jax_enable_x64", True)
  dtype = jnp.dtype(config.dtype)
  try:
    ds = data.build(config)
  except ValueError as e:  # e.g. meta set larger than a class, imbalance emptying a class
    raise ConfigError(str(e)) from None
  spe = pipeline.steps_per_epoch(ds.num_train, config.batch_size, config.drop_last)
  if spe < 1:
    raise ConfigError(f"batch_size {config.batch_size} is larger than the training set "
                      f"({ds.num_train}) with drop_last")
  info = methods.DataInfo(ds.num_classes, ds.num_train, ds.class_counts, spe)
  model = models.get(config.model, ds.num_classes, config, dtype)
  try:  # e.g. a transfer file that is not a weighting net
    method = methods.get(config.method)(config, info)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  schedule = optim.lr_schedule(config, spe)
  tx = optim.classifier_optimizer(config, schedule)
  return ds, info, model, method, schedule, tx


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Train ``config`` and write config, labels, metrics and final results to ``workdir``."""
  ds, info, model, method, schedule, tx = setup(config)
  dtype = jnp.dtype(config.dtype)
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
  _write_json(os.path.join(workdir, "data.json"), ds.summary())
  ds.save_labels(os.path.join(workdir, "labels.npz"))

  x_train = ds.x_train.astype(dtype)
  x_meta = ds.x_meta.astype(dtype)
  x_test = ds.x_test.astype(dtype)
  state = create_train_state(jax.random.PRNGKey(config.seed), model, method, tx, x_train[:2])
  train_step = jax.jit(make_train_step(model, method, tx, schedule, hypergrad=config.hypergrad),
                       donate_argnums=0)
  evaluate = make_eval_fn(model, config.eval_batch_size)

  train_losses = make_train_loss_fn(model, x_train, ds.y_train, config.eval_batch_size)
  meta_xs, meta_ys = x_meta, ds.y_meta  # replaced per epoch if the method picks its meta set
  spe, epochs = info.steps_per_epoch, config.num_epochs
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  open(metrics_path, "w").close()
  instance_w = np.full((epochs, ds.num_train), np.nan, np.float32)
  final_w = None
  history = []
  t0 = time.time()
  bar = tqdm(total=epochs * spe, disable=not config.progress, unit="step", dynamic_ncols=True)
  for epoch in range(epochs):
    picked = None
    if method.epoch_start is not None:
      picked = method.epoch_start(methods.EpochContext(
          epoch=epoch, seed=config.seed, labels=ds.y_train, class_counts=info.class_counts,
          params=state.params, model_state=state.model_state, train_losses=train_losses),
          state.method_state)
      if picked is not None:
        meta_xs, meta_ys = x_train[picked], ds.y_train[picked]
    n_meta = meta_ys.shape[0]
    meta_bs = min(config.meta_batch_size or config.batch_size, n_meta) if n_meta else 0
    if method.uses_meta and not n_meta:
      raise RuntimeError(f"method {method.name} needs a meta set but has none at epoch {epoch}")
    step_metrics, step_weights, step_idx = [], [], []
    for s in range(spe):
      idx = pipeline.train_batch_indices(ds.num_train, config.batch_size, config.seed, epoch, s)
      batch = {"x": x_train[idx], "y": ds.y_train[idx], "y_true": ds.y_train_true[idx],
               "index": idx}
      meta = None
      if method.uses_meta:
        midx = pipeline.meta_batch_indices(n_meta, meta_bs, config.seed, epoch, s)
        meta = {"x": meta_xs[midx], "y": meta_ys[midx]}
      state, m, w = train_step(state, batch, meta)
      step_metrics.append(m)
      step_weights.append(w)
      step_idx.append(idx)
      bar.update(1)
      if s == spe - 1 or s % 20 == 0:
        bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{float(m['train_loss']):.3f}",
                        test_acc=f"{history[-1]['test_acc']:.2f}" if history else "-")
    step_metrics = jax.device_get(step_metrics)
    idx = np.concatenate(step_idx)
    w = np.concatenate(jax.device_get(step_weights)).astype(np.float32)
    iw = _instance_weight(w, ds.y_train[idx])
    instance_w[epoch, idx] = iw
    if epoch == epochs - 1:
      final_w = np.full((ds.num_train, w.shape[1]), np.nan, np.float32)
      final_w[idx] = w
    noisy = ds.noise_mask[idx]
    test = evaluate(state.params, state.model_state, x_test, ds.y_test)
    row = {"epoch": epoch, "step": int(state.step)}
    sizes = np.array([len(i) for i in step_idx], np.float64)
    for k in step_metrics[0]:
      row[k] = float(np.sum([float(m[k]) * n for m, n in zip(step_metrics, sizes)]) / sizes.sum())
    row.update({
        "test_acc": test["acc"], "test_loss": test["loss"],
        "weight_mean": float(iw.mean()),
        "weight_clean_mean": float(iw[~noisy].mean()) if (~noisy).any() else None,
        "weight_noisy_mean": float(iw[noisy].mean()) if noisy.any() else None,
        "wall_time_s": time.time() - t0,
    })
    if picked is not None:  # how clean the method's own meta set is (true labels: analysis only)
      row["meta_set_size"] = int(len(picked))
      row["meta_set_noisy_frac"] = float(ds.noise_mask[picked].mean()) if len(picked) else None
    history.append(row)
    with open(metrics_path, "a") as f:
      f.write(json.dumps(row) + "\n")
    bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{row['train_loss']:.3f}",
                    test_acc=f"{row['test_acc']:.2f}")
  bar.close()

  np.savez(os.path.join(workdir, "predictions.npz"), test_pred=test["pred"], test_labels=ds.y_test)
  with open(os.path.join(workdir, "method_state.msgpack"), "wb") as f:
    f.write(flax.serialization.to_bytes(jax.device_get(state.method_state)))
  np.savez(os.path.join(workdir, "sample_weights.npz"), instance_weight=instance_w,
           final_weights=final_w, noisy_labels=ds.y_train, true_labels=ds.y_train_true)
  accs = [r["test_acc"] for r in history]
  final = {
      "method": config.method, "dataset": config.dataset, "noise_type": config.noise_type,
      "noise_rate": config.noise_rate, "imbalance_factor": config.imbalance_factor,
      "seed": config.seed, "num_epochs": epochs, "steps": int(state.step),
      "last_acc": accs[-1], "best_acc": max(accs), "best_epoch": int(np.argmax(accs)),
      "last5_acc": float(np.mean(accs[-5:])),
      "final_train_loss": history[-1]["train_loss"],
      "realised_noise_rate": float(ds.noise_mask.mean()),
      "wall_time_s": time.time() - t0,
  }
  _write_json(os.path.join(workdir, "final.json"), final)
  return final
