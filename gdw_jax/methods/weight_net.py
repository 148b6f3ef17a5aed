"""The learned weighting nets (MW-Net's VNet, CMW-Net's multi-head net) + their optimizer, as
pure functions, and the instance-weighted objectives of MW-Net's variants.

``config.vnet`` (:data:`OPTIONS`) is the net and optimizer every learned weighting method uses
(MW-Net, GDW, CMW-Net, CMW-Net-SL); its defaults are the papers': a 1-100-1 MLP trained with Adam
1e-3 and coupled L2 1e-4. A method constructor given ``weight_net=None`` / ``weight_optimizer=None``
uses exactly these (:func:`default_module`, :func:`default_optimizer`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gdw_jax import optim, options
from gdw_jax.models.weight_nets import VNet

NORMALISE = ("mean", "sum", "sum_detached")


def _validate(config) -> None:
  g, p = config.vnet, "vnet."
  options.one_of(g, "optimizer", optim.OPTIMIZERS, p)
  options.number(g, "lr", 0.0, prefix=p)
  options.number(g, "weight_decay", 0.0, prefix=p)
  options.number(g, "hidden", 1, integer=True, prefix=p)


OPTIONS = options.OptionGroup("vnet", dict(
    hidden=100, optimizer="adam", lr=1e-3, weight_decay=1e-4, momentum=0.0, nesterov=False,
    amsgrad=False), _validate)


def optimizer_from(group) -> optax.GradientTransformation:
  """The weighting net's optimizer from ``config.vnet``-like keys (PyTorch-style, coupled L2)."""
  return optim.make(group["optimizer"], float(group["lr"]),
                    weight_decay=float(group["weight_decay"]), momentum=float(group["momentum"]),
                    nesterov=bool(group["nesterov"]), amsgrad=bool(group["amsgrad"]))


def default_optimizer() -> optax.GradientTransformation:
  """The papers' weighting-net optimizer: Adam 1e-3 with coupled L2 1e-4."""
  return optimizer_from(OPTIONS.defaults)


def default_module(dtype=jnp.float32, hidden=None) -> VNet:
  """MW-Net's VNet, ``Linear(1, 100) -> ReLU -> Linear(100, 1) -> sigmoid``."""
  return VNet(hidden=int(hidden or OPTIONS.defaults["hidden"]), dtype=dtype)


def module_from(group, dtype=jnp.float32) -> VNet:
  """The VNet of ``config.vnet`` (its ``hidden`` width)."""
  return default_module(dtype, int(group["hidden"]))


class WeightNet:
  """``init(rng) -> {'params', 'opt'}``; ``apply(params, *inputs) -> weights[N,1]``;
  ``step(state, grads) -> state`` (one optimizer step with ``tx``).

  ``module`` is a Flax linen module (input: losses ``[N, 1]`` for MW-Net's VNet);
  ``sample_inputs`` are what ``module.init`` is called with (default: one ``[1, 1]`` loss). With
  ``frozen_params`` (transfer) the net is fixed: ``init`` returns those parameters, there is no
  optimizer state and ``step`` is not allowed.
  """

  def __init__(self, module, tx=None, dtype=jnp.float32, sample_inputs=None,
               frozen_params=None):
    self.module = module if module is not None else default_module(dtype)
    self.sample_inputs = sample_inputs or (jnp.zeros((1, 1), dtype),)
    self.frozen = frozen_params is not None
    self.frozen_params = frozen_params
    self.tx = None if self.frozen else (tx if tx is not None else default_optimizer())
    self.dtype = dtype

  def init(self, rng):
    if self.frozen:
      return {"params": jax.tree.map(lambda a: jnp.asarray(a, self.dtype), self.frozen_params)}
    params = self.module.init(rng, *self.sample_inputs)["params"]
    return {"params": params, "opt": self.tx.init(params)}

  def apply(self, params, *inputs):
    return self.module.apply({"params": params}, *inputs)

  def step(self, state, grads):
    if self.frozen:
      raise RuntimeError("a frozen (transferred) weight net takes no optimizer step")
    updates, opt = self.tx.update(grads, state["opt"], state["params"])
    return {**state, "params": optax.apply_updates(state["params"], updates), "opt": opt}


def detached_losses(ce):
  """The weight net's input: per-sample losses as ``[N, 1]``, stop-gradient."""
  return jax.lax.stop_gradient(ce)[:, None]


def virtual_coefficients(weight_fn, loss, normalise: str = "mean", live_input: bool = False,
                         n=None):
  """Per-sample coefficients ``c_i = dF/dl_i`` of MW-Net's weighted objective ``F(l)``.

  ``F = sum_i V(l_i) l_i / D`` with ``D = N`` (``mean``, ``MW-Net.py``), ``D = sum_j V(l_j)``
  (``sum``, the WRN and class-imbalance scripts: the meta gradient also flows through ``D``; a
  zero sum leaves the weights unnormalised, ``if norm_c != 0``), or ``D = stopgrad(sum_j V)``
  (``sum_detached``, CMW-Net's long-tail script). ``V`` sees ``stopgrad(l)`` unless
  ``live_input`` (the class-imbalance script feeds ``cost_v`` undetached, so ``dF/dl`` also
  carries ``V'(l) l`` terms). The virtual step's logit cotangent is then exactly
  ``c_i * dl_i/dz_i`` (chain rule), i.e. ``bilevel.meta_gradient(ctx, B, c, norm=1)``.

  ``weight_fn(l [N, 1]) -> v [N, 1]``; ``loss`` is ``[N]``; ``n`` is the mean's divisor (the
  batch size by default); returns ``c`` ``[N, 1]``, a differentiable function of whatever
  ``weight_fn`` closes over (the weight-net parameters).
  """
  if normalise not in NORMALISE:
    raise ValueError(f"unknown normalise {normalise!r}; valid: {', '.join(NORMALISE)}")
  n = loss.shape[0] if n is None else n

  def objective(l):
    v = weight_fn((l if live_input else jax.lax.stop_gradient(l))[:, None])[:, 0]
    total = jnp.sum(v * l)
    if normalise == "mean":
      return total / n
    d = jnp.sum(v)
    if normalise == "sum_detached":
      d = jax.lax.stop_gradient(d)
    return total / jnp.where(d != 0, d, jnp.ones_like(d))

  return jax.grad(objective)(jax.lax.stop_gradient(loss))[:, None]


def real_coefficients(w, normalise: str = "mean", n=None):
  """The real step's coefficients for weights ``w`` ``[N, 1]`` computed under ``no_grad``:
  ``w / N`` or ``w / sum(w)`` (zero sum: unnormalised)."""
  w = jax.lax.stop_gradient(w)
  if normalise == "mean":
    return w / (w.shape[0] if n is None else n)
  d = jnp.sum(w)
  return w / jnp.where(d != 0, d, jnp.ones_like(d))
