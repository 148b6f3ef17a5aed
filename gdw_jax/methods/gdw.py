"""GDW: Generalized Data Weighting via class-level gradient manipulation (Chen et al., 2021).

Exactly the official ``--mode gdw`` step (``../shared/specs/gdw.md`` §1.3). With
``p = min(softmax(z), clamp)`` (detached), ``E = p - onehot(y)``, ``l`` the detached CE (for
another base loss, ``config.loss``: ``E = dl/dz = c (q - onehot)`` and ``p = q``):

1. ``v = V_phi(l)`` ``[N, 1]``; ``W = constraint(tile(v, C))`` ``[N, C]``.
2. Virtual step ``theta' = theta - lr J^T (E * W / N)``; meta CE at ``theta'``; one backward gives
   ``g = dL_meta/dW`` ``[N, C]`` and ``dL_meta/dphi`` (through the constraint and the tile);
   one optimizer step on ``phi``.
3. Class-level step: ``D = sum |g|`` (one scalar over the batch), ``U = clip(eta g / D, -k, k)``,
   ``W' = clamp(W - U, w_min, w_max)``, ``W* = constraint(W')``.
4. Real step with cotangent ``E * W* / N``.

The zero-mean constraint replaces the target entry of each row by
``w_{i,y} = sum_{j != y} w_{i,j} p_{i,j} / (1 - p_{i,y})`` so that ``sum_j W_ij E_ij = 0``: the
weighted class-level gradient keeps the zero-sum structure of the softmax-CE gradient. Only the
non-target entries of ``W*`` carry the class-level step; the target column of ``U`` is discarded
(but still counts in ``D``), as in the official code.
"""
import jax
import jax.numpy as jnp

from gdw_jax import bilevel, losses
from gdw_jax.methods.base import Method
from gdw_jax.methods.weight_net import WeightNet, detached_losses


def zero_mean_constraint(w, p, labels):
  """Replace ``w[i, y_i]`` by ``sum_{j != y_i} w[i, j] p[i, j] / (1 - p[i, y_i])``.

  ``p`` (probabilities, clamped so ``p < 1``) is treated as a constant; the result is a
  differentiable function of the non-target entries of ``w``.
  """
  p = jax.lax.stop_gradient(p)
  onehot = jax.nn.one_hot(labels, w.shape[-1], dtype=w.dtype)
  p_target = jnp.sum(p * onehot, axis=-1, keepdims=True)
  target = jnp.sum(w * p * (1.0 - onehot), axis=-1, keepdims=True) / (1.0 - p_target)
  return w * (1.0 - onehot) + target * onehot


def class_level_step(w, g, outer_lr, clip):
  """``W - clip(outer_lr * g / sum|g|, -clip, clip)``; no move where ``g`` is all zero."""
  total = jnp.sum(jnp.abs(g))
  step = jnp.where(total > 0, outer_lr * g / jnp.where(total > 0, total, 1.0), 0.0)
  return w - jnp.clip(step, -clip, clip)


def make(config, info, dtype=None) -> Method:
  wnet = WeightNet(config.vnet, dtype or jnp.dtype(config.get("dtype", "float32")))
  clamp = config.get("prob_clamp", 0.999)
  if clamp is None or not 0.0 < clamp < 1.0:
    raise ValueError("gdw needs 0 < prob_clamp < 1 (the zero-mean constraint divides by 1 - p_y)")
  outer_lr, clip = float(config.gdw.outer_lr), float(config.gdw.clip)
  w_min, w_max = float(config.gdw.weight_min), float(config.gdw.weight_max)
  base = losses.make_base_loss(config, info.class_counts, info.steps_per_epoch, "gdw")
  meta_fn = None if base.logit_scale == 1.0 else bilevel.meta_loss_from(base.meta_loss)

  def update(ctx, state):
    num_classes = ctx.logits.shape[-1]
    # Any base loss has B = c (q - onehot) with c > 0, so the constraint with q keeps sum_j W B = 0.
    p = base.probs(ctx.logits, ctx.labels, clamp)
    e = base.logit_grad(ctx.logits, ctx.labels, ctx.step, clamp)
    loss = detached_losses(base.per_sample(ctx.logits, ctx.labels, ctx.step))

    def class_weights(phi):
      v = wnet.apply(phi, loss)
      return zero_mean_constraint(jnp.tile(v, (1, num_classes)), p, ctx.labels)

    w, pullback = jax.vjp(class_weights, state["params"])
    meta_loss, g = bilevel.meta_gradient(ctx, e, w, meta_loss_fn=meta_fn)
    (dphi,) = pullback(g)
    state = wnet.step(state, dphi)

    w_new = jnp.clip(class_level_step(w, g, outer_lr, clip), w_min, w_max)
    w_star = jax.lax.stop_gradient(zero_mean_constraint(w_new, p, ctx.labels))
    aux = {"meta_loss": meta_loss, "weights": w_star,
           "instance_weight": jnp.mean(w[:, :1])}
    return e * w_star / ctx.batch_size, state, aux

  def weight_fn(state, loss, labels):
    del labels
    return wnet.apply(state["params"], loss[:, None])[:, 0]

  # Label issues by the final model's p(given label): on digits (40% uniform) it separates the
  # mislabelled samples better than the recorded W*[i, y] (docs/own_data.md, detect_benchmark).
  return Method("gdw", wnet.init, update, uses_meta=True, weight_fn=weight_fn,
                label_score="probability")
