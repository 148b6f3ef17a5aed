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

**With candidate sets** (partial labels, ``DataInfo.candidates``; beyond the paper): the mask
``S`` ``[n, C]`` lives in the method state. ``candidate_target`` picks the label ``y`` of ``E``:
``estimate`` (default) the argmax of the current logits over the sample's candidates (detached,
per step: self-training disambiguation), ``given`` the single label the learner sees.
``candidate_step`` = ``restricted`` (default) moves only the candidate classes: ``g`` is masked
to ``S`` before ``D = sum|g|`` and the clip, so a non-candidate class, certainly wrong, keeps its
full push-down ``v p_j``, and the meta step may only lower (or raise) the push-down of plausible
alternatives; ``all`` is the paper's step on every class. The step reports ``label_estimate``
(``y``), which the trainer logs as ``disambiguation_acc``.
"""
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gdw_jax import bilevel, losses, options
from gdw_jax.methods import weight_net
from gdw_jax.methods.base import Method, MethodSpec, always
from gdw_jax.methods.weight_net import WeightNet, detached_losses, module_from, optimizer_from


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


def class_level_step(w, g, outer_lr, clip, mask=None):
  """``W - clip(outer_lr * g / sum|g|, -clip, clip)``; no move where ``g`` is all zero. With
  ``mask`` (candidate sets) only the masked entries move, normalised by their own ``sum|g|``."""
  if mask is not None:
    g = jnp.where(mask, g, 0.0)
  total = jnp.sum(jnp.abs(g))
  step = jnp.where(total > 0, outer_lr * g / jnp.where(total > 0, total, 1.0), 0.0)
  return w - jnp.clip(step, -clip, clip)


def check_options(opts, prefix="gdw.") -> None:
  """The class-level step's options (a config group or the constructor's arguments)."""
  options.number(opts, "outer_lr", 0.0, prefix=prefix)
  options.number(opts, "clip", 0.0, lo_open=True, prefix=prefix)
  options.check(0 < opts["weight_min"] <= opts["weight_max"],
                f"{prefix}weight_min must be > 0 and <= {prefix}weight_max")
  options.one_of(opts, "candidate_step", CANDIDATE_STEPS, prefix=prefix)
  options.one_of(opts, "candidate_target", CANDIDATE_TARGETS, prefix=prefix)


CANDIDATE_STEPS = ("restricted", "all")
CANDIDATE_TARGETS = ("estimate", "given")


def candidate_targets(ctx, candidates, target: str):
  """``(labels of E, the batch's candidate mask)``: the argmax of the detached logits over each
  sample's candidates (``estimate``), or the seen label (``given``)."""
  if ctx.index is None:
    raise ValueError("gdw with candidate sets needs the batch's positions (batch['index'])")
  mask = candidates[ctx.index]
  if target == "given":
    return ctx.labels, mask
  z = jnp.where(mask, jax.lax.stop_gradient(ctx.logits), -jnp.inf)
  return jnp.argmax(z, axis=-1).astype(ctx.labels.dtype), mask


def gdw(*, outer_lr: float = 100.0, clip: float = 0.2, weight_min: float = 1e-6,
        weight_max: float = 1e6, prob_clamp: float = 0.999, weight_net=None,
        weight_optimizer=None, loss: Optional[losses.BaseLoss] = None,
        dtype=jnp.float32, candidates=None, candidate_step: str = "restricted",
        candidate_target: str = "estimate") -> Method:
  """GDW with the paper's defaults (CIFAR-10: ``outer_lr`` 100, CIFAR-100: 1000; clip 0.2).

  ``weight_net``: a Flax module ``losses [N, 1] -> weights [N, 1]`` (default MW-Net's VNet,
  1-100-1); ``weight_optimizer``: its optax optimizer (default Adam 1e-3 + coupled L2 1e-4);
  ``loss``: the base loss (:func:`gdw_jax.losses.base_loss`, default plain CE); ``prob_clamp``:
  ``p = min(softmax, prob_clamp)`` in ``E`` and the constraint (must be < 1); ``dtype``: the
  weight net's. ``candidates``: bool ``[n, C]`` candidate sets (partial labels; the step then
  needs ``ctx.index``) with ``candidate_step`` / ``candidate_target`` (module docstring).
  """
  check_options(dict(outer_lr=outer_lr, clip=clip, weight_min=weight_min, weight_max=weight_max,
                     candidate_step=candidate_step, candidate_target=candidate_target),
                prefix="")
  if prob_clamp is None or not 0.0 < prob_clamp < 1.0:
    raise ValueError("gdw needs 0 < prob_clamp < 1 (the zero-mean constraint divides by 1 - p_y)")
  wnet = WeightNet(weight_net, weight_optimizer, dtype)
  clamp = float(prob_clamp)
  outer_lr, clip = float(outer_lr), float(clip)
  w_min, w_max = float(weight_min), float(weight_max)
  base = loss if loss is not None else losses.base_loss()
  meta_fn = None if base.logit_scale == 1.0 else bilevel.meta_loss_from(base.meta_loss)

  sets = None if candidates is None else np.asarray(candidates, bool)

  def init(rng, params=None, model_state=None):
    del params, model_state
    state = wnet.init(rng)
    return state if sets is None else {**state, "candidates": jnp.asarray(sets)}

  def update(ctx, state):
    num_classes = ctx.logits.shape[-1]
    labels, mask = ctx.labels, None
    if sets is not None:
      labels, mask = candidate_targets(ctx, state["candidates"], candidate_target)
    # Any base loss has B = c (q - onehot) with c > 0, so the constraint with q keeps sum_j W B = 0.
    p = base.probs(ctx.logits, labels, clamp)
    e = base.logit_grad(ctx.logits, labels, ctx.step, clamp)
    loss = detached_losses(base.per_sample(ctx.logits, labels, ctx.step))

    def class_weights(phi):
      v = wnet.apply(phi, loss)
      return zero_mean_constraint(jnp.tile(v, (1, num_classes)), p, labels), v

    w, pullback, v = jax.vjp(class_weights, state["params"], has_aux=True)
    meta_loss, g = bilevel.meta_gradient(ctx, e, w, meta_loss_fn=meta_fn)
    (dphi,) = pullback(g)
    state = wnet.step(state, dphi)

    step_mask = mask if candidate_step == "restricted" else None
    w_new = jnp.clip(class_level_step(w, g, outer_lr, clip, step_mask), w_min, w_max)
    w_star = jax.lax.stop_gradient(zero_mean_constraint(w_new, p, labels))
    # The first-stage instance weight v = V_phi(l) (before the constraint replaces each row's
    # target entry and the class-level step moves the others).
    aux = {"meta_loss": meta_loss, "weights": w_star,
           "instance_weight": jnp.mean(jax.lax.stop_gradient(v))}
    if mask is not None:
      aux["label_estimate"] = labels
    return e * w_star / ctx.norm_size, state, aux

  def weight_fn(state, loss, labels):
    del labels
    return wnet.apply(state["params"], loss[:, None])[:, 0]

  # Label issues by the final model's p(given label): on digits (40% uniform) it separates the
  # mislabelled samples better than the recorded W*[i, y] (docs/own_data.md, detect_benchmark).
  return Method("gdw", init, update, uses_meta=True, weight_fn=weight_fn,
                label_score="probability")


def from_config(config, info, dtype=None) -> Method:
  """:func:`gdw` with ``config.gdw``, ``config.vnet``, ``config.loss`` and ``prob_clamp``."""
  dtype = dtype or jnp.dtype(config.dtype)
  return gdw(**options.values(config.gdw, OPTIONS), prob_clamp=config.prob_clamp,
             candidates=info.candidates,
             weight_net=module_from(config.vnet, dtype),
             weight_optimizer=optimizer_from(config.vnet),
             loss=losses.make_base_loss(config, info.class_counts, info.steps_per_epoch),
             dtype=dtype)


def _validate(config) -> None:
  options.check(config.prob_clamp < 1.0,
                "gdw needs prob_clamp < 1 (the constraint divides by 1 - p_y)")


OPTIONS = options.OptionGroup(
    "gdw", options.defaults_of(gdw, "outer_lr", "clip", "weight_min", "weight_max",
                               "candidate_step", "candidate_target"),
    lambda config: check_options(config.gdw))
SPECS = (MethodSpec("gdw", from_config, groups=(weight_net.OPTIONS, OPTIONS), validate=_validate,
                    needs_meta=always, candidates="optional"),)
