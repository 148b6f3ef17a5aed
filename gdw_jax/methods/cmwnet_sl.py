"""CMW-Net-SL: CMW-Net with soft-label correction (``../shared/specs/mwnet_cmwnet.md`` §4.4).

Per step (after ``cmwnet_sl.warmup_epochs`` of plain base-loss ERM on un-mixed inputs):

1. EMA teacher: ``ema <- d ema + (1 - d) theta`` after every classifier step (decay
   ``ema_decay``, 1 from ``ema_freeze_epoch`` on if > 0). Only parameters are averaged; the
   teacher's BN statistics come from its own train-mode forward on each (un-mixed) batch.
   The update is applied lazily at the start of the next step (same sequence of values).
2. Pseudo-labels ``p_i = softmax(EMA(x_i))`` on the un-mixed batch (``pseudo_momentum`` m > 0:
   a per-sample memory ``p <- m p + (1 - m) softmax``, started at the first visit after warm-up).
3. Mixup (``transform_input``): ``x~ = lam x + (1 - lam) x[pi]``, ``lam ~ Beta(a, a)``,
   ``lam = max(lam, 1 - lam)``; the classifier is run and differentiated on ``x~``.
4. Loss (mean over the batch): ``lam [v l(x~, y) + (1 - v) CE(x~, p)] + (1 - lam) [v' l(x~, y_pi)
   + (1 - v') CE(x~, p_pi)]`` with ``v = V(l(x~, y), c[y])`` and ``v' = V(l(x~, y_pi), c[y_pi])``
   (``second_weight='own'``, the feature-dependent and ANIMAL scripts) or ``v' = v[pi]``
   (``'permuted'``, the slip in ``cmwn.py``). The logit cotangent is affine in ``(v, v')``.
5. Every ``meta_every`` iterations of an epoch (``i % 10 == 0``): the meta step of the weighting
   net through a virtual step on that loss; the meta loss is mixup CE on the meta batch
   (``meta_mixup``, ``lam' ~ Beta(meta_mixup_alpha, .)``, ``cmwn.py``) or plain CE.
6. Meta set: ``meta_source`` as in CMW-Net, by default ``small_loss``: every epoch the
   ``select_per_class`` (10) smallest-loss samples of each noisy class under the EMA teacher
   (eval mode, no augmentation), with their noisy labels.

With ``cmwnet.transfer`` the weighting net is loaded and frozen (no meta step, no meta set), as
in the official plug-in experiments. Families and the net are CMW-Net's (``config.cmwnet``).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from gdw_jax import bilevel, losses, options
from gdw_jax.methods import cmwnet, weight_net
from gdw_jax.methods.base import Method, MethodSpec

SECOND_WEIGHTS = ("own", "permuted")


def mixup_lambda(rng, alpha: float, dtype):
  """``max(lam, 1 - lam)`` with ``lam ~ Beta(alpha, alpha)``."""
  lam = jax.random.beta(rng, alpha, alpha).astype(dtype)
  return jnp.maximum(lam, 1.0 - lam)


def mixup_meta_loss(alpha: float, scale: float):
  """Mixup CE of the (virtual) classifier on the meta batch: ``(ctx, params) -> scalar``."""

  def fn(ctx, params):
    k1, k2 = jax.random.split(jax.random.fold_in(ctx.rng, 7))
    x, y = ctx.meta_x, ctx.meta_y
    lam = mixup_lambda(k1, alpha, x.dtype)
    perm = jax.random.permutation(k2, x.shape[0])
    logits, _ = ctx.apply_fn(params, ctx.model_state, lam * x + (1.0 - lam) * x[perm], True)
    logits = logits * scale if scale != 1.0 else logits
    return (lam * jnp.mean(losses.cross_entropy(logits, y))
            + (1.0 - lam) * jnp.mean(losses.cross_entropy(logits, y[perm])))

  return fn


def ema_decay_at(step, decay: float, freeze_epoch: int, steps_per_epoch: int):
  """Decay of the EMA update that follows classifier step ``step``."""
  if freeze_epoch <= 0:
    return jnp.asarray(decay, jnp.float32)
  return jnp.where(step // steps_per_epoch >= freeze_epoch, 1.0, decay).astype(jnp.float32)


def ema_step(ema_params, params, d):
  return jax.tree.map(lambda e, p: (d.astype(e.dtype) * e + (1 - d).astype(e.dtype) * p),
                      ema_params, params)


def check_options(g, p="cmwnet_sl.") -> None:
  options.number(g, "ema_decay", 0.0, 1.0, prefix=p)
  options.number(g, "ema_freeze_epoch", 0, integer=True, prefix=p)
  options.number(g, "mixup_alpha", 0.0, lo_open=True, prefix=p)
  options.flag(g, "meta_mixup", p)
  options.number(g, "meta_mixup_alpha", 0.0, lo_open=True, prefix=p)
  options.number(g, "pseudo_momentum", 0.0, 1.0, hi_open=True, prefix=p)
  options.one_of(g, "second_weight", SECOND_WEIGHTS, p)
  cmwnet.check_schedule(g, p)


def cmwnet_sl(*, class_counts, steps_per_epoch: int, num_train: Optional[int] = None,
              ema_decay: float = 0.997, ema_freeze_epoch: int = 0, mixup_alpha: float = 1.0,
              meta_mixup: bool = True, meta_mixup_alpha: float = 1.0,
              pseudo_momentum: float = 0.0, second_weight: str = "own", warmup_epochs: int = 10,
              meta_every: int = 10, meta_source: str = "small_loss", select_per_class: int = 10,
              loss: Optional[losses.BaseLoss] = None, dtype=jnp.float32,
              **net_options) -> Method:
  """CMW-Net-SL with ``cmwn.py``'s defaults on (noisy) training ``class_counts``,
  ``steps_per_epoch`` steps an epoch; ``num_train`` (training-set size) is needed for the
  per-sample pseudo-label memory (``pseudo_momentum > 0``). ``net_options``: CMW-Net's
  :func:`gdw_jax.methods.cmwnet.family_net` keywords (families, ``weight_net``,
  ``weight_optimizer``, ``transfer``). ``init`` needs the classifier (EMA teacher): ``init(rng,
  params, model_state)``.
  """
  check_options(dict(ema_decay=ema_decay, ema_freeze_epoch=ema_freeze_epoch,
                     mixup_alpha=mixup_alpha, meta_mixup=meta_mixup,
                     meta_mixup_alpha=meta_mixup_alpha, pseudo_momentum=pseudo_momentum,
                     second_weight=second_weight, warmup_epochs=warmup_epochs,
                     meta_every=meta_every, meta_source=meta_source,
                     select_per_class=select_per_class), "")
  if pseudo_momentum > 0 and num_train is None:
    raise ValueError("cmwnet_sl with pseudo_momentum > 0 needs num_train (per-sample memory)")
  num_classes = len(class_counts)
  wnet, families = cmwnet.family_net(class_counts, dtype=dtype, **net_options)
  fam_table = jnp.asarray(families, jnp.int32)
  spe = int(steps_per_epoch)
  warmup_epochs = int(warmup_epochs)
  warmup_steps = warmup_epochs * spe
  meta_every = int(meta_every)
  decay, freeze = float(ema_decay), int(ema_freeze_epoch)
  alpha = float(mixup_alpha)
  momentum = float(pseudo_momentum)
  second = second_weight
  base = loss if loss is not None else losses.base_loss()
  scale = base.logit_scale
  if meta_mixup:
    meta_fn = mixup_meta_loss(float(meta_mixup_alpha), scale)
  else:
    meta_fn = None if scale == 1.0 else bilevel.meta_loss_from(base.meta_loss)
  can_meta = not wnet.frozen

  def init(rng, params=None, model_state=None):
    """The teacher starts as a copy of the classifier; ``params=None`` gives a template whose
    ``ema`` entries are None (enough to restore a saved state, e.g. for analysis)."""
    state = {"net": wnet.init(rng), "meta_loss": jnp.zeros((), dtype),
             # copies: the train state is donated to the step, and must not alias the teacher
             "ema": jax.tree.map(lambda a: jnp.array(a, copy=True),
                                 {"params": params, "model_state": model_state})}
    if momentum > 0:
      state["pseudo"] = jnp.zeros((num_train, num_classes), dtype)
    return state

  def transform_input(state, rng, x, labels, step):
    del state, labels
    k1, k2 = jax.random.split(rng)
    lam = jnp.where(step < warmup_steps, 1.0, mixup_lambda(k1, alpha, x.dtype)).astype(x.dtype)
    perm = jax.random.permutation(k2, x.shape[0])
    return lam * x + (1.0 - lam) * x[perm], {"x": x, "lam": lam, "perm": perm}

  def teacher(ctx, state):
    """EMA update for the previous step, teacher forward, pseudo-labels ``[N, C]``."""
    ema = state["ema"]
    d = ema_decay_at(ctx.step - 1, decay, freeze, spe)
    params = jax.tree.map(lambda e, u: jnp.where(ctx.step > 0, u, e), ema["params"],
                          ema_step(ema["params"], ctx.params, d))
    logits, model_state = ctx.apply_fn(params, ema["model_state"], ctx.input_info["x"], True)
    q = jax.nn.softmax(jax.lax.stop_gradient(logits) * scale, axis=-1).astype(ctx.logits.dtype)
    new = dict(state, ema={"params": params, "model_state": model_state})
    if momentum > 0:
      if ctx.index is None:
        raise ValueError("cmwnet_sl.pseudo_momentum > 0 needs the batch's sample positions")
      rows = state["pseudo"][ctx.index]
      seen = jnp.sum(rows, axis=-1, keepdims=True) > 0
      upd = jnp.where(seen, momentum * rows + (1.0 - momentum) * q, q)
      upd = jnp.where(ctx.step < warmup_steps, rows, upd)
      new["pseudo"] = state["pseudo"].at[ctx.index].set(upd)
      q = jnp.where(ctx.step < warmup_steps, q, upd)
    return q, new

  def update(ctx, state):
    p, state = teacher(ctx, state)
    lam, perm = ctx.input_info["lam"], ctx.input_info["perm"]
    z, y, step = ctx.logits, ctx.labels, ctx.step
    yp, pp = y[perm], p[perm]
    b_y = base.logit_grad(z, y, step, None)
    b_yp = base.logit_grad(z, yp, step, None)
    q = jax.nn.softmax(jax.lax.stop_gradient(z) * scale, axis=-1)
    soft_y, soft_yp = scale * (q - p), scale * (q - pp)
    l_y = jax.lax.stop_gradient(base.per_sample(z, y, step))[:, None]
    l_yp = jax.lax.stop_gradient(base.per_sample(z, yp, step))[:, None]
    n = ctx.norm_size
    lam_ = lam.astype(z.dtype)

    def cotangent(w):  # affine in w = [v, v'] (N x 2)
      v, v2 = w[:, :1], w[:, 1:]
      return (lam_ * (v * b_y + (1 - v) * soft_y)
              + (1 - lam_) * (v2 * b_yp + (1 - v2) * soft_yp)) / n

    def weights(params):
      v = wnet.apply(params, l_y, fam_table[y])
      v2 = v[perm] if second == "permuted" else wnet.apply(params, l_yp, fam_table[yp])
      return jnp.concatenate([v, v2], axis=-1).astype(z.dtype)

    def warmup(net):
      return b_y / n, net, state["meta_loss"], jnp.ones((y.shape[0], 2), z.dtype)

    def reweight(net):
      w = jax.lax.stop_gradient(weights(net["params"]))
      return cotangent(w), net, state["meta_loss"], w

    def meta_then_reweight(net):
      w0, pullback = jax.vjp(weights, net["params"])
      meta_loss, gw = bilevel.meta_gradient(ctx, cotangent, w0, meta_loss_fn=meta_fn)
      net = wnet.step(net, pullback(gw)[0])
      w = jax.lax.stop_gradient(weights(net["params"]))
      return cotangent(w), net, meta_loss.astype(dtype), w

    branches = [warmup, reweight] + ([meta_then_reweight] if can_meta else [])
    (g_out, net, meta_loss, w), idx = cmwnet.run_phase(
        ctx, branches, cmwnet.phase(step, spe, warmup_steps, meta_every, can_meta), state["net"])
    state = dict(state, net=net, meta_loss=meta_loss)
    aux = {"meta_loss": meta_loss, "weights": w[:, :1], "meta_step": (idx == 2).astype(jnp.float32),
           "mix_lambda": lam.astype(jnp.float32),
           "pseudo_label_agreement": jnp.mean(jnp.argmax(p, -1) == y).astype(jnp.float32)}
    return jax.lax.stop_gradient(g_out), state, aux

  def weight_fn(state, loss, labels):
    return wnet.apply(state["net"]["params"], loss[:, None], fam_table[labels])[:, 0]

  def ema_losses(ectx, state):
    ema = state["ema"]
    params = ema["params"]
    if ectx.epoch > 0:  # the lazy EMA update for the last step of the previous epoch
      d = ema_decay_at(ectx.epoch * spe - 1, decay, freeze, spe)
      params = ema_step(params, ectx.params, d)
    return ectx.train_losses(params, ema["model_state"])

  epoch_start = (cmwnet.make_epoch_start(meta_source, select_per_class, warmup_epochs,
                                         ema_losses) if can_meta else None)

  def host_phase(step):
    return cmwnet.phase(int(step), spe, warmup_steps, meta_every, can_meta)

  return Method("cmwnet_sl", init, update, uses_meta=can_meta, weight_fn=weight_fn,
                phase=host_phase, epoch_start=epoch_start, transform_input=transform_input,
                label_score="weight")


def from_config(config, info, dtype=None) -> Method:
  """:func:`cmwnet_sl` with ``config.cmwnet_sl``, ``config.cmwnet`` (families, net, transfer),
  ``config.vnet`` and ``config.loss``."""
  dtype = dtype or jnp.dtype(config.dtype)
  return cmwnet_sl(class_counts=info.class_counts, steps_per_epoch=info.steps_per_epoch,
                   num_train=info.num_train, **options.values(config.cmwnet_sl, OPTIONS),
                   loss=losses.make_base_loss(config, info.class_counts, info.steps_per_epoch),
                   dtype=dtype, **cmwnet.net_from_config(config, dtype))


def _validate(config) -> None:
  options.before_last_epoch(config, "cmwnet_sl.warmup_epochs", config.cmwnet_sl.warmup_epochs)


OPTIONS = options.OptionGroup(
    "cmwnet_sl", options.defaults_of(
        cmwnet_sl, "ema_decay", "ema_freeze_epoch", "mixup_alpha", "meta_mixup",
        "meta_mixup_alpha", "pseudo_momentum", "second_weight", *cmwnet.SCHEDULE_KEYS),
    lambda config: check_options(config.cmwnet_sl),
    epoch_switches={"warmup_epochs": (10, 300)})
SPECS = (MethodSpec("cmwnet_sl", from_config,
                    groups=(weight_net.OPTIONS, cmwnet.OPTIONS, OPTIONS), validate=_validate,
                    needs_meta=cmwnet.needs_meta("cmwnet_sl")),)
