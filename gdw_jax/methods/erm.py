"""ERM: the mean base loss. Cotangent ``G = dl/dz / D`` with ``D = N`` or ``sum_i w_{y_i}``.

With the default base loss (plain CE) ``G = (softmax(z) - onehot(y)) / N`` (exact, no clamp).
The loss baselines are ERM with a loss / schedule implied by their name (:data:`LOSS_OVERRIDES`,
forced on ``config.loss``): ``focal`` (focal loss, gamma ``loss.focal_gamma``), ``cb``
(class-balanced weights, effective number with ``loss.cb_beta``, from the start) and
``ldam_drw`` (LDAM on a cosine head, s ``loss.ldam_s``, max margin ``loss.ldam_max_m``, with
class-balanced weights deferred to epoch ``loss.drw_epoch``).
"""
from typing import Optional

import jax.numpy as jnp

from gdw_jax import losses
from gdw_jax.methods.base import Method, MethodSpec

LOSS_OVERRIDES = {
    "focal": {"name": "focal"},
    "cb": {"class_weights": "cb"},
    "ldam_drw": {"name": "ldam", "class_weights": "cb", "drw": True},
}


def erm(*, loss: Optional[losses.BaseLoss] = None, name: str = "erm") -> Method:
  """Plain (or class-weighted) mean of the base ``loss`` (default plain CE)."""
  base = loss if loss is not None else losses.base_loss()
  weighted = base.settings["class_weights"] != "none"

  def init(rng, params=None, model_state=None):
    del rng, params, model_state
    return {}

  def update(ctx, state):
    b = base.logit_grad(ctx.logits, ctx.labels, ctx.step, None)
    n = ctx.norm_size
    if not weighted:
      return b / n, state, {"weights": jnp.ones((ctx.labels.shape[0], 1), b.dtype)}
    cw = base.class_weight(ctx.labels, ctx.step).astype(b.dtype)[:, None]
    norm = base.normaliser(ctx.labels, ctx.step).astype(b.dtype)
    # The recorded weight is each sample's share relative to a plain mean: w_y * N / D.
    return b / norm, state, {"weights": cw * n / norm}

  return Method(name, init, update, uses_meta=False)


def _baseline(name: str, loss_options) -> Method:
  forced = LOSS_OVERRIDES[name]
  clash = {k: v for k, v in loss_options.items() if k in forced and v != forced[k]}
  if clash:
    raise ValueError(f"{name} sets {', '.join(f'{k}={v!r}' for k, v in forced.items())} itself; "
                     f"got {clash}")
  return erm(loss=losses.base_loss(**{**loss_options, **forced}), name=name)


def focal(**loss_options) -> Method:
  """ERM with the focal loss ``(1 - e^{-ce})^gamma ce`` (LDAM-DRW's form; ``focal_gamma`` 1).
  Keywords: any of :func:`gdw_jax.losses.base_loss` but ``name``."""
  return _baseline("focal", loss_options)


def cb(*, class_counts, **loss_options) -> Method:
  """ERM with class-balanced weights (Cui et al. 2019; ``cb_beta`` 0.9999) from the start.
  Keywords: any of :func:`gdw_jax.losses.base_loss` but ``class_weights``."""
  return _baseline("cb", dict(loss_options, class_counts=class_counts))


def ldam_drw(*, class_counts, steps_per_epoch: int, **loss_options) -> Method:
  """LDAM-DRW (Cao et al. 2019): LDAM (``ldam_s`` 30, ``ldam_max_m`` 0.5, on a cosine head)
  with class-balanced weights from ``drw_epoch`` (160) on. Keywords: any of
  :func:`gdw_jax.losses.base_loss` but ``name``, ``class_weights`` and ``drw``."""
  return _baseline("ldam_drw", dict(loss_options, class_counts=class_counts,
                                    steps_per_epoch=steps_per_epoch))


def from_config(config, info, dtype=None) -> Method:
  del dtype
  return erm(loss=losses.make_base_loss(config, info.class_counts, info.steps_per_epoch))


def baseline_from_config(name: str):
  """``build`` of a loss baseline: its constructor with ``config.loss`` (+ its forced keys)."""
  constructor = {"focal": focal, "cb": cb, "ldam_drw": ldam_drw}[name]

  def build(config, info, dtype=None):
    del dtype
    return constructor(**losses.loss_settings(config, LOSS_OVERRIDES[name]),
                       class_counts=info.class_counts, steps_per_epoch=info.steps_per_epoch)

  return build


SPECS = (MethodSpec("erm", from_config),) + tuple(
    MethodSpec(name, baseline_from_config(name), loss_overrides=forced)
    for name, forced in LOSS_OVERRIDES.items())
