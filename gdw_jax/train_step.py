"""One run's step: its train state, its jitted train step and its evaluation.

The bottom of the trainer (``gdw_jax/train.py`` lists its layers): the loop builds the launch's
step from this one (wrapped by :mod:`gdw_jax.guards`, vmapped and chunked by
:mod:`gdw_jax.steps`); this module imports only the library below (the method protocol, models,
losses, optimizer, device mesh). Nothing here knows which weighting method runs. Each step:

    forward once at theta (train-mode BN)  ->  z, vjp, new BN stats
    method.update(ctx, method_state)        ->  cotangent G on the logits (+ its own meta step)
    grads = vjp(G); optax update            ->  new theta

The BN statistics kept are those of this single real forward; the virtual and meta forwards
inside a method's meta step use batch statistics and their BN updates are dropped.

* :class:`TrainState`, :func:`create_train_state`: one run's state;
* :func:`make_train_step`: the pure step (what a launch jits, vmaps over seeds or loops over in
  chunks: :mod:`gdw_jax.steps`; the finite check that wraps it: :mod:`gdw_jax.guards`);
* :func:`make_eval_fn`: evaluation in eval mode (top-1, top-5, loss, per-sample predictions).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Iterable, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdw_jax import api, interop, losses, methods, models, optim, parallel


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
    estimate = aux.pop("label_estimate", None)  # a partial-label method's current label guess
    metrics = {
        "train_loss": jnp.mean(losses.cross_entropy(logits, y)),
        "train_acc_noisy": losses.accuracy(logits, y),
        "train_acc_true": losses.accuracy(logits, batch.get("y_true", y)),
        "lr": lr,
        **{k: v for k, v in aux.items() if jnp.ndim(v) == 0},
    }
    if estimate is not None:  # how often it is the true label (logging only)
      metrics["disambiguation_acc"] = jnp.mean(
          (estimate == batch.get("y_true", y)).astype(jnp.float32))
    if return_cotangent:
      metrics["logit_cotangent"] = cotangent
    new_state = state.replace(step=state.step + 1, params=params, model_state=new_model_state,
                              opt_state=opt_state, method_state=method_state)
    return new_state, metrics, weights

  return train_step


def make_eval_fn(model: models.ModelFns, batch_size: int, mesh=None,
                 preprocess: Optional[Callable] = None, runs: bool = False,
                 with_probs: bool = False):
  """``evaluate(params, model_state, x, y) -> {'acc', 'top5', 'loss', 'pred', 'ce'}`` in eval mode
  (running BN stats). With a ``mesh``, each batch is split over its ``'data'`` devices (padded to
  a multiple of their count; the padding rows are dropped, eval mode has no batch coupling).
  ``preprocess(x) -> x`` (e.g. CIFAR normalisation of uint8 images) runs on device if given.
  ``runs``: params and model state have a leading runs axis (vmapped); one dict per run.
  ``evaluate.streamed(params, model_state, batches, y)``: the same on batches decoded by the
  streaming input path (rows of ``evaluate.batch_size_for(n)``; bit-identical to the arrays').
  """
  n_dev = mesh.shape[parallel.DATA] if mesh is not None else 1
  out = parallel.replicated(mesh) if mesh is not None else None

  def one(params, model_state, x, y):
    logits = model.apply(params, model_state, x, False)[0]
    out = (jnp.argmax(logits, -1), losses.cross_entropy(logits, y), in_top_k(logits, y))
    # the softmax [C, N] (samples last, as the other outputs): candidate-set label issues
    return out + (jax.nn.softmax(logits, -1).T,) if with_probs else out

  @functools.partial(jax.jit, out_shardings=out)
  def per_sample(params, model_state, x, y):
    if preprocess is not None:
      x = preprocess(x)
    if runs:
      return jax.vmap(one, in_axes=(0, 0, None, None))(params, model_state, x, y)
    return one(params, model_state, x, y)

  def batch_size_for(n: int) -> int:
    """One compiled shape for a set of ``n`` samples, divisible by the devices."""
    return -(-min(batch_size, n) // n_dev) * n_dev

  def evaluate(params, model_state, x, y):
    batches = _array_batches(x, y, batch_size_for(x.shape[0]), mesh)
    return _accumulate(per_sample, params, model_state, batches, y, runs)

  def evaluate_streamed(params, model_state, batches, y):
    """The same on images decoded elsewhere (the streaming path): ``batches`` yields ``(start,
    n_valid, x)``, ``x`` the ``batch_size_for(len(y))`` rows from ``start`` (the last batch
    padded with its last row), as :func:`evaluate` would have gathered them."""
    return _accumulate(per_sample, params, model_state, _placed_batches(batches, y, mesh), y,
                       runs)

  evaluate.batch_size_for = batch_size_for
  evaluate.streamed = evaluate_streamed
  return evaluate


def _array_batches(x, y, bs: int, mesh):
  """``(n_valid, {'x', 'y'})``: the set in global batches of ``bs`` rows, the last one padded
  with its last row (placed on the mesh's ``'data'`` axis when there is one)."""
  n = x.shape[0]
  for start in range(0, n, bs):
    idx = np.arange(start, min(start + bs, n))
    padded = np.concatenate([idx, np.full(bs - len(idx), idx[-1])])
    if mesh is not None:
      yield len(idx), parallel.global_rows({"x": x, "y": y}, padded,
                                           parallel.batch_sharding(mesh))
    else:
      yield len(idx), {"x": x[padded], "y": jnp.asarray(y[padded])}


def _placed_batches(batches, y, mesh):
  """:func:`_array_batches` of streamed ``(start, n_valid, x)`` batches."""
  for start, n_valid, x in batches:
    rows = np.arange(start, start + len(x)).clip(max=start + n_valid - 1)
    b = {"x": x, "y": y[rows]}
    yield n_valid, (parallel.global_rows(b, np.arange(len(x)), parallel.batch_sharding(mesh))
                    if mesh is not None else jax.tree.map(jnp.asarray, b))


def _accumulate(per_sample: Callable, params, model_state, batches: Iterable, y, runs: bool):
  """Every batch's ``(pred, ce, in_top_k)`` with the padding rows dropped, as one result (one
  per run with ``runs``)."""
  parts = []
  for n_valid, b in batches:
    out = jax.device_get(per_sample(params, model_state, b["x"], b["y"]))
    parts.append([a[..., :n_valid] for a in out])
  preds, ces, hits, *probs = (np.concatenate(a, -1) for a in zip(*parts))
  if runs:
    return [_eval_result(p, c, h, y, *q) for p, c, h, *q in zip(preds, ces, hits, *probs)]
  return _eval_result(preds, ces, hits, y, *probs)


TOP_K = 5  # the second accuracy of every evaluation (WebVision / ImageNet report top-5)


def in_top_k(logits: jax.Array, y: jax.Array, k: int = TOP_K) -> jax.Array:
  """``[n]`` bool: whether the label is among the ``k`` largest logits (all classes when there
  are fewer than ``k``). Ties keep the lower class first, as ``argmax`` does, so a top-1 hit is
  always a top-k hit."""
  k = min(k, logits.shape[-1])
  return jnp.any(jax.lax.top_k(logits, k)[1] == y[..., None], axis=-1)


def _eval_result(pred, ce, hit, y, probs=None) -> Dict[str, Any]:
  loss = float(np.sum(ce, dtype=np.float64)) / len(y)
  out = {"acc": 100.0 * float(np.mean(pred == y)), "top5": 100.0 * float(np.mean(hit)),
         "loss": loss, "pred": pred, "ce": ce}
  if probs is not None:  # with_probs: [N, C]
    out["probs"] = probs.T
  return out
