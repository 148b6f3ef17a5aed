"""ERM: plain mean cross-entropy. Cotangent ``G = (softmax(z) - onehot(y)) / N``."""
import jax.numpy as jnp

from gdw_jax import losses
from gdw_jax.methods.base import Method


def make(config, info) -> Method:
  del config, info

  def init(rng):
    del rng
    return {}

  def update(ctx, state):
    e = losses.ce_logit_grad(ctx.logits, ctx.labels, None)
    n = ctx.batch_size
    return e / n, state, {"weights": jnp.ones((ctx.labels.shape[0], 1), e.dtype)}

  return Method("erm", init, update, uses_meta=False)
