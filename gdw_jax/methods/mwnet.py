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
import jax

from gdw_jax import bilevel, losses
from gdw_jax.methods.base import Method
from gdw_jax.methods.weight_net import WeightNet, real_coefficients, virtual_coefficients

REAL_WEIGHTS = ("updated", "initial")


def make(config, info, dtype=None) -> Method:
  dtype = dtype or jax.numpy.dtype(config.get("dtype", "float32"))
  wnet = WeightNet(config.vnet, dtype)
  clamp = config.get("prob_clamp", 0.999)
  group = config.mwnet
  real_weights = group.real_weights
  normalise = group.get("normalise", "mean")
  live_input = bool(group.get("live_input", False))
  base = losses.make_base_loss(config, info.class_counts, info.steps_per_epoch, "mwnet")
  meta_fn = None if base.logit_scale == 1.0 else bilevel.meta_loss_from(base.meta_loss)

  def update(ctx, state):
    b = base.logit_grad(ctx.logits, ctx.labels, ctx.step, clamp)
    loss = jax.lax.stop_gradient(base.per_sample(ctx.logits, ctx.labels, ctx.step))
    n = ctx.batch_size

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

  return Method("mwnet", wnet.init, update, uses_meta=True, weight_fn=weight_fn,
                label_score="weight")
