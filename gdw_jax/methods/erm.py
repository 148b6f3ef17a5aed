"""ERM: the mean base loss. Cotangent ``G = dl/dz / D`` with ``D = N`` or ``sum_i w_{y_i}``.

With the default base loss (plain CE) ``G = (softmax(z) - onehot(y)) / N`` (exact, no clamp).
The loss baselines are ERM with a loss / schedule implied by their name
(``losses.METHOD_LOSS_OVERRIDES``): ``focal`` (focal loss, gamma ``loss.focal_gamma``), ``cb``
(class-balanced weights, effective number with ``loss.cb_beta``, from the start) and
``ldam_drw`` (LDAM on a cosine head, s ``loss.ldam_s``, max margin ``loss.ldam_max_m``, with
class-balanced weights deferred to epoch ``loss.drw_epoch``).
"""
import jax.numpy as jnp

from gdw_jax import losses
from gdw_jax.methods.base import Method


def make(config, info, name: str = "erm") -> Method:
  base = losses.make_base_loss(config, info.class_counts, info.steps_per_epoch, name)
  weighted = base.settings["class_weights"] != "none"

  def init(rng):
    del rng
    return {}

  def update(ctx, state):
    b = base.logit_grad(ctx.logits, ctx.labels, ctx.step, None)
    n = ctx.batch_size
    if not weighted:
      return b / n, state, {"weights": jnp.ones((ctx.labels.shape[0], 1), b.dtype)}
    cw = base.class_weight(ctx.labels, ctx.step).astype(b.dtype)[:, None]
    norm = base.normaliser(ctx.labels, ctx.step).astype(b.dtype)
    # The recorded weight is each sample's share relative to a plain mean: w_y * N / D.
    return b / norm, state, {"weights": cw * n / norm}

  return Method(name, init, update, uses_meta=False)


def baseline(name: str):
  """The factory of a loss baseline (``focal``, ``cb``, ``ldam_drw``)."""
  if name not in losses.METHOD_LOSS_OVERRIDES:
    raise ValueError(f"unknown loss baseline {name!r}")
  return lambda config, info: make(config, info, name)
