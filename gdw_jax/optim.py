"""Optimizers with PyTorch semantics, built from config.

PyTorch SGD/Adam ``weight_decay`` is coupled L2 (added to the gradient before momentum / Adam
moments), i.e. ``optax.chain(optax.add_decayed_weights(wd), <optimizer>)``; optax's trace
(``t = g + m t``, ``t_0 = 0``) is PyTorch's momentum buffer, and optax's Adam puts ``eps``
outside the square root as PyTorch does.
"""
from __future__ import annotations

import math
from typing import Tuple

import jax.numpy as jnp
import optax
from flax import traverse_util

LR_SCHEDULES = ("cosine_epoch", "constant", "step_epoch", "cosine_restarts")
OPTIMIZERS = ("sgd", "adam")


def cosine_restarts(t, base: float, eta_min: float, period: int, mult: int):
  """PyTorch ``CosineAnnealingWarmRestarts(T_0=period, T_mult=mult, eta_min)`` at (integer)
  ``t``: ``eta_min + (base - eta_min) (1 + cos(pi T_cur / T_i)) / 2`` where cycle ``i`` lasts
  ``T_i = period mult^i`` and ``T_cur`` is ``t`` minus the cycle's start."""
  t = jnp.asarray(t, jnp.float32)
  if mult == 1:
    t_cur, t_i = jnp.mod(t, period), float(period)
  else:
    i = jnp.floor(jnp.log(t / period * (mult - 1) + 1.0) / math.log(mult))
    start = period * (mult ** i - 1.0) / (mult - 1)
    t_i = period * mult ** i
    # guard float rounding at a cycle boundary (t = start of cycle i + 1)
    over = t - start >= t_i
    start, t_i = jnp.where(over, start + t_i, start), jnp.where(over, t_i * mult, t_i)
    t_cur = t - start
  return eta_min + (base - eta_min) * 0.5 * (1.0 + jnp.cos(math.pi * t_cur / t_i))


def lr_schedule(config, steps_per_epoch: int):
  """Learning rate as a function of the global step (constant within an epoch).

  ``cosine_epoch`` (GDW): ``lr_e = lr (1 + cos(pi e / T)) / 2`` with ``e`` the 0-based epoch and
  ``T = num_epochs``. ``step_epoch``: ``lr * lr_decay ** (#milestones <= e)``.
  ``cosine_restarts`` (CMW-Net ``mwn.py``): ``lr`` before ``lr_restart_epoch = s``, then
  :func:`cosine_restarts` at ``e - s``. With ``lr_warmup_epochs = W > 0`` every schedule is
  multiplied by ``min(1, (e + 1) / W)``.
  """
  base = float(config.learning_rate)
  total = int(config.num_epochs)
  kind = config.lr_schedule

  def epoch_of(step):
    return jnp.floor_divide(step, steps_per_epoch)

  if kind == "cosine_epoch":
    sched = lambda step: base * 0.5 * (1.0 + jnp.cos(math.pi * epoch_of(step) / total))
  elif kind == "constant":
    sched = lambda step: base * jnp.ones_like(step, dtype=jnp.float32)
  elif kind == "step_epoch":
    milestones = jnp.asarray(tuple(config.lr_milestones) or (total + 1,))
    decay = float(config.lr_decay)
    sched = lambda step: base * decay ** jnp.sum(epoch_of(step) >= milestones)
  elif kind == "cosine_restarts":
    start, eta_min = int(config.lr_restart_epoch), float(config.lr_min)
    period, mult = int(config.lr_restart_period), int(config.lr_restart_mult)

    def sched(step):
      t = epoch_of(step) - start
      cos = cosine_restarts(jnp.maximum(t, 0), base, eta_min, period, mult)
      return jnp.where(t < 0, base, cos)
  else:
    raise ValueError(f"unknown lr_schedule {kind!r}; valid: {', '.join(LR_SCHEDULES)}")
  warmup = int(config.lr_warmup_epochs)
  if not warmup:
    return sched
  # LDAM-DRW: ``if epoch <= 5: lr = lr * epoch / 5`` with the 1-based epoch.
  return lambda step: sched(step) * jnp.minimum(1.0, (epoch_of(step) + 1) / warmup)


def make(name: str, learning_rate, *, weight_decay: float = 0.0, momentum: float = 0.0,
         nesterov: bool = False, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
         amsgrad: bool = False) -> optax.GradientTransformation:
  """A PyTorch-style optimizer: coupled L2 weight decay, then SGD(momentum) or Adam."""
  if name == "sgd":
    opt = optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov)
  elif name == "adam":
    opt = (optax.amsgrad(learning_rate, b1=b1, b2=b2, eps=eps) if amsgrad
           else optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))
  else:
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay), opt)
  return opt


def parse_weight_decay_overrides(text: str) -> Tuple[Tuple[str, float], ...]:
  """``"pattern:wd,..."`` -> ``((pattern, wd), ...)``; raises ValueError naming the key."""
  out = []
  for item in (text or "").split(","):
    item = item.strip()
    if not item:
      continue
    pattern, sep, value = item.rpartition(":")
    try:
      wd = float(value)
    except ValueError:
      wd = -1.0
    if not sep or not pattern or wd < 0:
      raise ValueError(f"weight_decay_overrides entry {item!r} is not pattern:value with a "
                       f"value >= 0 (e.g. weight_decay_overrides='fc1:0.01')")
    out.append((pattern, wd))
  return tuple(out)


def weight_decay_transform(weight_decay: float, overrides=()) -> optax.GradientTransformation:
  """Coupled L2: ``g + wd p``; a parameter whose path (``a/b/kernel``) contains an override's
  pattern gets that override's ``wd`` (the first that matches), as a PyTorch param group."""
  if not overrides:
    return optax.add_decayed_weights(weight_decay) if weight_decay else optax.identity()
  groups = ["default"] + [f"override{i}" for i in range(len(overrides))]
  decays = [weight_decay] + [wd for _, wd in overrides]

  def label(params):
    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict({
        path: next((groups[i + 1] for i, (pat, _) in enumerate(overrides) if pat in path),
                   "default") for path in flat}, sep="/")

  return optax.multi_transform(
      {g: optax.add_decayed_weights(wd) if wd else optax.identity()
       for g, wd in zip(groups, decays)}, label)


def classifier_optimizer(config) -> optax.GradientTransformation:
  """The classifier's SGD (momentum, coupled L2) with the learning rate as an *injected*
  hyperparameter (``optax.inject_hyperparams``): it keeps no schedule and no step count of its
  own. The train step computes ``lr = schedule(state.step)`` once and hands that same value to
  the look-ahead (virtual) step and, through :func:`set_learning_rate`, to this optimizer, so
  the two cannot disagree, whatever step a train state was created at (parity fixtures recorded
  mid-training, a resume, a user's own loop).

  Options of ABSGD's noisy-label code: ``grad_clip_norm > 0`` clips the gradient to that global
  norm *before* the L2 term is added (``clip_grad_norm_`` then ``SGD.step``), and
  ``weight_decay_overrides`` gives some parameters their own L2 (PyTorch param groups)."""
  weight_decay, momentum = float(config.weight_decay), float(config.momentum)
  nesterov = bool(config.nesterov)
  clip = float(config.grad_clip_norm)
  overrides = parse_weight_decay_overrides(config.weight_decay_overrides)

  def sgd(learning_rate):
    if not clip and not overrides:  # the plain chain (same optimizer state as before)
      return make("sgd", learning_rate, weight_decay=weight_decay, momentum=momentum,
                  nesterov=nesterov)
    return optax.chain(
        optax.clip_by_global_norm(clip) if clip else optax.identity(),
        weight_decay_transform(weight_decay, overrides),
        make("sgd", learning_rate, momentum=momentum, nesterov=nesterov))

  return optax.inject_hyperparams(sgd)(learning_rate=float(config.learning_rate))


def set_learning_rate(opt_state, lr):
  """``opt_state`` of an injected-lr optimizer (:func:`classifier_optimizer`) with its learning
  rate set to ``lr`` for the next update."""
  hyper = getattr(opt_state, "hyperparams", None)
  if not isinstance(hyper, dict) or "learning_rate" not in hyper:
    raise TypeError("the classifier optimizer must take its learning rate from the train step "
                    "(build it with optim.classifier_optimizer or optax.inject_hyperparams); "
                    f"got a state of type {type(opt_state).__name__} with no injected "
                    "learning_rate, whose own schedule could disagree with the look-ahead lr")
  return opt_state._replace(
      hyperparams={**hyper, "learning_rate": jnp.asarray(lr, hyper["learning_rate"].dtype)})


def from_config(group) -> optax.GradientTransformation:
  """Optimizer of a config group with keys optimizer, lr, weight_decay, (momentum, nesterov,
  amsgrad), e.g. ``config.vnet``."""
  # momentum / nesterov / amsgrad exist only in the groups whose optimizer has them (a method's
  # OptionGroup declares its own keys): absent means the optimizer's plain form.
  return make(group.optimizer, float(group.lr), weight_decay=float(group.weight_decay),
              momentum=float(group.get("momentum", 0.0)),
              nesterov=bool(group.get("nesterov", False)),
              amsgrad=bool(group.get("amsgrad", False)))
