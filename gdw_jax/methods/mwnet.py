"""MW-Net (Shu et al., NeurIPS 2019), as run by the official GDW code in ``--mode mw-net``, plus
the variants of the official MW-Net scripts (``../shared/specs/mwnet_cmwnet.md`` §1.2).

Per step, with ``B = dl/dz`` the base-loss gradient (for CE ``E = min(softmax(z), clamp) -
onehot(y)``) and ``l`` the detached per-sample loss:

1. ``v = V_phi(l)`` ``[N, 1]`` (1-100-1 MLP, sigmoid);
2. virtual step ``theta' = theta - lr J^T (B * c)`` where ``c_i = dF/dl_i`` for the weighted
   objective ``F`` of ``mwnet.normalise``: ``sum v l / N`` (``mean``, ``MW-Net.py``, default),
   ``sum v l / sum v`` (``sum``, WRN / class-imbalance scripts) or ``/ stopgrad(sum v)``
   (``sum_detached``); with ``mwnet.live_input`` the net's input is not detached in ``F``
   (class-imbalance script). Meta CE on the clean meta batch;
3. ``dL_meta/dphi`` through ``c`` (nested autodiff, :mod:`gdw_jax.bilevel`), one optimizer step
   on ``phi`` (``config.vnet``: Adam 1e-3, coupled L2 1e-4 by default);
4. real step with cotangent ``B * w / D`` where ``w = V_phi'(l)`` uses the *updated* net
   (``mwnet.real_weights='updated'``, official) or the pre-update ``v`` (``'initial'``), and
   ``D`` is ``N`` or the (detached) ``sum w``.
"""
from typing import Optional

import jax
import jax.numpy as jnp

from gdw_jax import bilevel, losses, options
from gdw_jax.methods import weight_net
from gdw_jax.methods.base import Method, MethodSpec, always
from gdw_jax.methods.weight_net import (NORMALISE, WeightNet, module_from, optimizer_from,
                                        real_coefficients, virtual_coefficients)

REAL_WEIGHTS = ("updated", "initial")


def check_options(opts, prefix="mwnet.") -> None:
  options.one_of(opts, "real_weights", REAL_WEIGHTS, prefix)
  options.one_of(opts, "normalise", NORMALISE, prefix)
  options.flag(opts, "live_input", prefix)


def mwnet(*, real_weights: str = "updated", normalise: str = "mean", live_input: bool = False,
          prob_clamp: Optional[float] = 0.999, weight_net=None, weight_optimizer=None,
          loss: Optional[losses.BaseLoss] = None, dtype=jnp.float32) -> Method:
  """MW-Net as ``MW-Net.py`` runs it (mean objective, detached net input, real step with the
  updated net); ``normalise`` / ``live_input`` select the other official scripts' objectives.

  ``weight_net``: a Flax module ``losses [N, 1] -> weights [N, 1]`` (default the 1-100-1 VNet);
  ``weight_optimizer``: its optax optimizer (default Adam 1e-3 + coupled L2 1e-4); ``loss``: the
  base loss (default plain CE); ``prob_clamp``: ``E = min(softmax, prob_clamp) - onehot`` (the GDW
  code's MW-Net; None or 1 for the exact CE gradient of the MW-Net scripts).
  """
  check_options(dict(real_weights=real_weights, normalise=normalise, live_input=live_input),
                prefix="")
  wnet = WeightNet(weight_net, weight_optimizer, dtype)
  clamp = prob_clamp
  live_input = bool(live_input)
  base = loss if loss is not None else losses.base_loss()
  meta_fn = None if base.logit_scale == 1.0 else bilevel.meta_loss_from(base.meta_loss)

  def init(rng, params=None, model_state=None):
    del params, model_state
    return wnet.init(rng)

  def update(ctx, state):
    b = base.logit_grad(ctx.logits, ctx.labels, ctx.step, clamp)
    loss = jax.lax.stop_gradient(base.per_sample(ctx.logits, ctx.labels, ctx.step))
    n = ctx.norm_size

    def coefficients(phi):
      return virtual_coefficients(lambda l: wnet.apply(phi, l), loss, normalise, live_input, n)

    c, pullback = jax.vjp(coefficients, state["params"])
    meta_loss, g = bilevel.meta_gradient(ctx, b, c, norm=1, meta_loss_fn=meta_fn)
    (dphi,) = pullback(g)
    params = state["params"] if real_weights == "initial" else None
    state = wnet.step(state, dphi)
    w = wnet.apply(params if params is not None else state["params"], loss[:, None])
    w = jax.lax.stop_gradient(w)
    return b * real_coefficients(w, normalise, n), state, {"meta_loss": meta_loss, "weights": w}

  def weight_fn(state, loss, labels):
    del labels
    return wnet.apply(state["params"], loss[:, None])[:, 0]

  return Method("mwnet", init, update, uses_meta=True, weight_fn=weight_fn,
                label_score="weight")


def from_config(config, info, dtype=None) -> Method:
  """:func:`mwnet` with ``config.mwnet``, ``config.vnet``, ``config.loss`` and ``prob_clamp``."""
  dtype = dtype or jnp.dtype(config.dtype)
  return mwnet(**options.values(config.mwnet, OPTIONS), prob_clamp=config.prob_clamp,
               weight_net=module_from(config.vnet, dtype),
               weight_optimizer=optimizer_from(config.vnet),
               loss=losses.make_base_loss(config, info.class_counts, info.steps_per_epoch),
               dtype=dtype)


OPTIONS = options.OptionGroup("mwnet", options.defaults_of(mwnet, "real_weights", "normalise",
                                                           "live_input"),
                              lambda config: check_options(config.mwnet))
SPECS = (MethodSpec("mwnet", from_config, groups=(weight_net.OPTIONS, OPTIONS),
                    needs_meta=always),)
