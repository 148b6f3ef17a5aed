"""One call for your own training step: reweighted classifier gradients from any method.

    grads, model_state, method_state, aux = gdw_jax.reweighted_grads(
        method, method_state, apply_fn, params, model_state, batch, meta_batch,
        lr=lr, step=step, rng=rng)
    updates, opt_state = tx.update(grads, opt_state, params)   # your own optax optimizer
    params = optax.apply_updates(params, updates)

Inside, exactly what the package's own trainer does (:func:`gdw_jax.train_step.make_train_step`
calls this function): one train-mode forward ``z = f_theta(x)``, ``method.update`` turns the step's
:class:`gdw_jax.bilevel.StepContext` into the logit cotangent ``G`` ``[N, C]`` (running its own
meta step on the meta batch, e.g. GDW's look-ahead at learning rate ``lr``), and the classifier
gradient is ``grads = J_theta(z)^T G``: the gradient of the method's weighted loss. The model is a
pure function ``apply_fn(params, model_state, x, train) -> (logits, model_state)``
(:mod:`gdw_jax.adapters` makes one from a Flax linen or NNX module); the returned ``model_state``
is that of the real forward (e.g. updated BatchNorm statistics).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import chex
import jax
import jax.numpy as jnp

from gdw_jax import bilevel
from gdw_jax.methods.base import Method


def _arrays(batch, name: str, where: str):
  if not isinstance(batch, Mapping) or "x" not in batch or "y" not in batch:
    raise TypeError(f"{where}: {name} must be a dict with 'x' (inputs) and 'y' (integer labels), "
                    f"got {type(batch).__name__}")
  return batch["x"], batch["y"]


def learning_rate(lr, step):
  """The look-ahead learning rate: ``lr(step)`` for a schedule (callable), else ``lr`` (a float
  or a scalar array, e.g. the value of an optax schedule)."""
  return lr(step) if callable(lr) else lr


def reweighted_grads(method: Method, method_state, apply_fn: Callable, params, model_state,
                     batch: Mapping[str, Any], meta_batch: Optional[Mapping[str, Any]] = None, *,
                     lr, step, rng=None, hypergrad: str = "autodiff", norm_size=None,
                     phase: Optional[int] = None):
  """``(grads, model_state, method_state, aux)`` of one step of ``method``; pure, jit it.

  * ``batch``: ``{'x': [N, ...], 'y': [N] int}`` and optionally ``'index'`` ``[N]`` (positions in
    the training set, for methods with per-sample memory); ``meta_batch``: ``{'x', 'y'}`` of
    clean data, needed when ``method.uses_meta``.
  * ``lr``: the learning rate of the method's look-ahead (plain SGD) step: a float, a scalar
    array (e.g. ``schedule(step)``) or the schedule itself (called at ``step``). For the
    papers' algorithm use your optimizer's current learning rate.
  * ``step``: the number of classifier updates so far (DRW, ABSGD's stages, CMW-Net's warm-up
    and ``meta_every`` read it). ``rng``: a key for this step (mixup, CMW-Net-SL); needed by
    methods with ``transform_input``.
  * ``hypergrad``: ``autodiff`` (nested reverse mode) or ``jvp`` (same result, memory-lean: no
    training-batch activations are kept across the meta step; the forward is recomputed).
  * ``norm_size``: the ``N`` of the batch means (default the batch size); ``phase``: a static
    ``method.phase(step)`` (for methods that declare phases; None decides on device).

  ``aux``: the method's diagnostics (scalars, ``weights`` ``[N, k]``) plus ``logits`` (of the
  real forward) and ``logit_cotangent`` (``G``); unused outputs cost nothing under ``jit``.
  """
  where = "gdw_jax.reweighted_grads"
  if not isinstance(method, Method):
    raise TypeError(f"{where}: method must be a gdw_jax.Method (call the constructor, e.g. "
                    f"gdw_jax.gdw()), got {type(method).__name__}")
  x, y = _arrays(batch, "batch", where)
  meta_x = meta_y = None
  if meta_batch is not None:
    meta_x, meta_y = _arrays(meta_batch, "meta_batch", where)
  elif method.uses_meta:
    raise ValueError(f"{where}: method {method.name} needs a meta_batch (clean data)")
  bilevel.check_step_arrays(x, y, None, meta_x, meta_y, where)
  lr = learning_rate(lr, step)
  chex.assert_rank([lr, step], 0, custom_message=f"{where}: lr and step must be scalars")
  chex.assert_type(step, int, custom_message=f"{where}: step must be an integer")
  input_info = None
  if method.transform_input is not None:  # e.g. mixup: the classifier sees x_in, not x
    if rng is None:
      raise ValueError(f"{where}: method {method.name} transforms its input and needs rng")
    x, input_info = method.transform_input(method_state, jax.random.fold_in(rng, 1), x, y, step)

  def forward(p):
    return apply_fn(p, model_state, x, True)

  lean = hypergrad == "jvp" and method.uses_meta
  if lean:  # memory-lean meta step: no training-batch residuals kept across the meta pass
    logits, new_model_state = forward(params)
    vjp_fn = None
  else:
    logits, vjp_fn, new_model_state = jax.vjp(forward, params, has_aux=True)
  bilevel.check_step_arrays(x, y, logits, None, None, where)
  ctx = bilevel.StepContext(
      apply_fn=apply_fn, params=params, model_state=model_state, x=x, labels=y, logits=logits,
      lr=jnp.asarray(lr, logits.dtype), meta_x=meta_x, meta_y=meta_y, rng=rng, step=step,
      norm_size=norm_size, hypergrad=hypergrad, logits_vjp=vjp_fn, index=batch.get("index"),
      input_info=input_info, phase=phase)
  cotangent, method_state, aux = method.update(ctx, method_state)
  if vjp_fn is None:  # recompute the forward for the real update, after the meta step
    _, vjp_fn = jax.vjp(lambda p: forward(p)[0], bilevel.after(params, cotangent))
  cotangent = jax.lax.stop_gradient(cotangent).astype(logits.dtype)
  (grads,) = vjp_fn(cotangent)
  return grads, new_model_state, method_state, {**aux, "logits": logits,
                                                "logit_cotangent": cotangent}
