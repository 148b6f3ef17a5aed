"""Optimizers with PyTorch semantics, built from config.

PyTorch SGD/Adam ``weight_decay`` is coupled L2 (added to the gradient before momentum / Adam
moments), i.e. ``optax.chain(optax.add_decayed_weights(wd), <optimizer>)``; optax's trace
(``t = g + m t``, ``t_0 = 0``) is PyTorch's momentum buffer, and optax's Adam puts ``eps``
outside the square root as PyTorch does.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import optax

LR_SCHEDULES = ("cosine_epoch", "constant", "step_epoch")
OPTIMIZERS = ("sgd", "adam")


def lr_schedule(config, steps_per_epoch: int):
  """Learning rate as a function of the global step (constant within an epoch).

  ``cosine_epoch`` (GDW): ``lr_e = lr (1 + cos(pi e / T)) / 2`` with ``e`` the 0-based epoch and
  ``T = num_epochs``. ``step_epoch``: ``lr * lr_decay ** (#milestones <= e)``. With
  ``lr_warmup_epochs = W > 0`` every schedule is multiplied by ``min(1, (e + 1) / W)``.
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
  else:
    raise ValueError(f"unknown lr_schedule {kind!r}; valid: {', '.join(LR_SCHEDULES)}")
  warmup = int(config.get("lr_warmup_epochs", 0) or 0)
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


def classifier_optimizer(config) -> optax.GradientTransformation:
  """The classifier's SGD (momentum, coupled L2) with the learning rate as an *injected*
  hyperparameter (``optax.inject_hyperparams``): it keeps no schedule and no step count of its
  own. The train step computes ``lr = schedule(state.step)`` once and hands that same value to
  the look-ahead (virtual) step and, through :func:`set_learning_rate`, to this optimizer, so
  the two cannot disagree, whatever step a train state was created at (parity fixtures recorded
  mid-training, a resume, a user's own loop)."""
  weight_decay, momentum = float(config.weight_decay), float(config.momentum)
  nesterov = bool(config.nesterov)

  def sgd(learning_rate):
    return make("sgd", learning_rate, weight_decay=weight_decay, momentum=momentum,
                nesterov=nesterov)

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
  return make(group.optimizer, float(group.lr), weight_decay=float(group.weight_decay),
              momentum=float(group.get("momentum", 0.0)),
              nesterov=bool(group.get("nesterov", False)),
              amsgrad=bool(group.get("amsgrad", False)))
