"""MW-Net (Shu et al., NeurIPS 2019), as run by the official GDW code in ``--mode mw-net``.

Per step, with ``E = min(softmax(z), clamp) - onehot(y)`` and ``l`` the detached per-sample CE:

1. ``v = V_phi(l)`` ``[N, 1]`` (1-100-1 MLP, sigmoid);
2. virtual step ``theta' = theta - lr J^T (E * v / N)``; meta CE on the clean meta batch;
3. ``dL_meta/dphi`` through ``v`` (nested autodiff, :mod:`gdw_jax.bilevel`), one optimizer step on
   ``phi`` (Adam 1e-3, coupled L2 1e-4);
4. real step with cotangent ``E * w / N`` where ``w = V_phi'(l)`` uses the *updated* net
   (``mwnet.real_weights='updated'``, official) or the pre-update ``v`` (``'initial'``).
"""
import jax
import jax.numpy as jnp

from gdw_jax import bilevel, losses
from gdw_jax.methods.base import Method
from gdw_jax.methods.weight_net import WeightNet, detached_losses

REAL_WEIGHTS = ("updated", "initial")


def make(config, info, dtype=None) -> Method:
  del info
  wnet = WeightNet(config.vnet, dtype or jnp.dtype(config.get("dtype", "float32")))
  clamp = config.get("prob_clamp", 0.999)
  real_weights = config.mwnet.real_weights

  def update(ctx, state):
    e = losses.ce_logit_grad(ctx.logits, ctx.labels, clamp)
    loss = detached_losses(losses.cross_entropy(ctx.logits, ctx.labels))
    v, pullback = jax.vjp(lambda phi: wnet.apply(phi, loss), state["params"])
    meta_loss, g = bilevel.meta_gradient(ctx, e, v)
    (dphi,) = pullback(g)
    state = wnet.step(state, dphi)
    w = wnet.apply(state["params"], loss) if real_weights == "updated" else v
    w = jax.lax.stop_gradient(w)
    return e * w / ctx.batch_size, state, {"meta_loss": meta_loss, "weights": w}

  def weight_fn(state, loss, labels):
    del labels
    return wnet.apply(state["params"], loss[:, None])[:, 0]

  return Method("mwnet", wnet.init, update, uses_meta=True, weight_fn=weight_fn)
