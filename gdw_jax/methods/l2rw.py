"""L2RW: learning to reweight examples (Ren et al., ICML 2018).

Per step the weights are the negative meta gradient at ``eps = 0``:

1. virtual step ``theta' = theta - lr J^T (B * eps / N)`` with ``eps = 0`` (so ``theta' = theta``
   in value; only its derivative in ``eps`` matters), ``B = dl/dz`` of the base loss;
2. ``g = dL_meta/deps`` on the clean meta batch (nested autodiff, :mod:`gdw_jax.bilevel`):
   ``g_i = -(lr/N) <grad l_i(theta), grad L_meta(theta)>``;
3. ``w~ = max(-g, 0)``, ``w = w~ / sum w~`` (if the sum is 0 every weight stays 0: the step is
   then a no-op, as in the official ``if norm_c != 0``), detached;
4. real step on ``sum_i w_i l_i``: cotangent ``B * w`` (the weights already sum to 1).

There is no learned state. ``lr`` and ``N`` only scale ``g`` and cancel in the normalisation.
"""
from typing import Optional

import jax
import jax.numpy as jnp

from gdw_jax import bilevel, losses
from gdw_jax.methods.base import Method, MethodSpec, always


def normalised_weights(g):
  """``max(-g, 0) / sum`` with a zero sum giving all zeros (no NaN)."""
  w = jnp.maximum(-g, 0.0)
  total = jnp.sum(w)
  return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), jnp.zeros_like(w))


def l2rw(*, loss: Optional[losses.BaseLoss] = None) -> Method:
  """L2RW on the base ``loss`` (default plain CE); no options, no state."""
  base = loss if loss is not None else losses.base_loss()
  meta_fn = None if base.logit_scale == 1.0 else bilevel.meta_loss_from(base.meta_loss)

  def init(rng, params=None, model_state=None):
    del rng, params, model_state
    return {}

  def update(ctx, state):
    b = base.logit_grad(ctx.logits, ctx.labels, ctx.step, None)
    eps = jnp.zeros((ctx.labels.shape[0], 1), b.dtype)
    meta_loss, g = bilevel.meta_gradient(ctx, b, eps, meta_loss_fn=meta_fn)
    w = jax.lax.stop_gradient(normalised_weights(g))
    # Recorded weights are relative to a plain mean (sum N), so they read like other methods'.
    return b * w, state, {"meta_loss": meta_loss, "weights": w * b.shape[0],
                          "zero_weight_steps": (jnp.sum(w) == 0).astype(b.dtype)}

  return Method("l2rw", init, update, uses_meta=True, label_score="weight")


def from_config(config, info, dtype=None) -> Method:
  del dtype
  return l2rw(loss=losses.make_base_loss(config, info.class_counts, info.steps_per_epoch))


SPECS = (MethodSpec("l2rw", from_config, needs_meta=always),)
