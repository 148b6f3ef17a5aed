"""The learned weighting net shared by MW-Net and GDW: VNet + its optimizer, as pure functions."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gdw_jax import optim
from gdw_jax.models.weight_nets import VNet


class WeightNet:
  """``init(rng) -> {'params', 'opt'}``; ``apply(params, losses[N,1]) -> weights[N,1]``;
  ``step(state, grads) -> state`` (one optimizer step, e.g. Adam(1e-3) + L2 1e-4)."""

  def __init__(self, group, dtype=jnp.float32):
    self.module = VNet(hidden=int(group.hidden), dtype=dtype)
    self.tx = optim.from_config(group)
    self.dtype = dtype

  def init(self, rng):
    params = self.module.init(rng, jnp.zeros((1, 1), self.dtype))["params"]
    return {"params": params, "opt": self.tx.init(params)}

  def apply(self, params, loss):
    return self.module.apply({"params": params}, loss)

  def step(self, state, grads):
    updates, opt = self.tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}


def detached_losses(ce):
  """The weight net's input: per-sample losses as ``[N, 1]``, stop-gradient."""
  return jax.lax.stop_gradient(ce)[:, None]
