"""ABSGD: attentional-biased SGD (Qi et al., TMLR 2023), as the official code computes it
(``../shared/specs/absgd_and_imbalance_losses.md`` §1.2-1.3).

Per mini-batch of size ``B`` with base losses ``l_i`` (class weight inside, ``config.loss``):

    u   <- (1 - gamma) u + gamma * abAlpha * mean_i exp(l_i / lambda)      (u_0 = 0)
    p_i  = stopgrad( exp(l_i / lambda) / (u B) )        (+ 1/B with ``uniform_floor``)
    G    = p_i * dl_i/dz_i                              (the gradient of sum_i p_i l_i)

``lambda > 0`` up-weights large losses (imbalance), ``lambda < 0`` down-weights them (noise).
At steady state ``u ≈ abAlpha E[exp(l/lambda)]``, so ``sum_i p_i ≈ 1 / abAlpha`` (the official
code's extra gradient scale; ``ab_alpha = 1`` gives the paper's estimator).

Two stages by epoch (``epoch = step // steps_per_epoch``): ``lambda = init_lam`` before
``absgd.start_epoch`` and ``lam`` from then on. As in the code, any ``lambda >= 200`` is a
sentinel for the plain mean ``p_i = 1/B`` and leaves ``u`` untouched (the README runs pass
``init_lam 200``, i.e. SGD pre-training then ABSGD).

Stability: ``u`` is kept as ``log u`` (no autograd chain across steps, as it would be in the
official code) and ``p_i = exp(l_i/lambda - log u - log B)``, so ``exp(l/lambda)`` never has
to be formed (it overflows float32 for ``l/lambda > 88``, e.g. LDAM's s = 30 logits).
"""
from typing import Optional

import jax
import jax.numpy as jnp

from gdw_jax import losses, options
from gdw_jax.methods.base import Method, MethodSpec

UNIFORM_SENTINEL = 200.0


def log_mean_exp(a):
  return jax.nn.logsumexp(a) - jnp.log(a.shape[0])


def absgd_weights(loss, log_u, lam, gamma, ab_alpha, uniform_floor=False):
  """One ABSGD step for ``lambda < 200``: ``(p [B], new log u)`` from losses ``[B]``.

  ``log_u = -inf`` is the official ``u = 0`` start.
  """
  loss = jax.lax.stop_gradient(loss)
  b = loss.shape[0]
  a = loss / lam
  log_u = jnp.logaddexp(jnp.log1p(-gamma) + log_u,
                        jnp.log(gamma * ab_alpha) + log_mean_exp(a))
  p = jnp.exp(a - log_u - jnp.log(b))
  if uniform_floor:
    p = p + 1.0 / b
  return p, log_u


def check_options(a, p="absgd.") -> None:
  for key in ("lam", "init_lam"):
    options.number(a, key, prefix=p)
    options.check(a[key] != 0, f"{p}{key} must be non-zero (> 0 imbalance, < 0 noise)")
  options.number(a, "start_epoch", 0, integer=True, prefix=p)
  options.number(a, "gamma", 0.0, 1.0, lo_open=True, prefix=p)
  options.number(a, "ab_alpha", 0.0, lo_open=True, prefix=p)
  options.flag(a, "uniform_floor", p)


def absgd(*, steps_per_epoch: int, lam: float = 5.0, init_lam: float = 200.0,
          start_epoch: int = 160, gamma: float = 0.7, ab_alpha: float = 0.5,
          uniform_floor: bool = False, loss: Optional[losses.BaseLoss] = None,
          dtype=jnp.float32) -> Method:
  """ABSGD with the README's CIFAR-10-LT settings (lambda 5 from epoch 160, before that the plain
  mean; gamma 0.7, abAlpha 0.5); ``steps_per_epoch`` places ``start_epoch``. ``loss``: the base
  loss (default plain CE; the README recipe uses CB weights deferred to the same epoch)."""
  check_options(dict(lam=lam, init_lam=init_lam, start_epoch=start_epoch, gamma=gamma,
                     ab_alpha=ab_alpha, uniform_floor=uniform_floor), "")
  lam, init_lam = float(lam), float(init_lam)
  gamma, ab_alpha = float(gamma), float(ab_alpha)
  floor = bool(uniform_floor)
  start_step = int(start_epoch) * int(steps_per_epoch)
  base = loss if loss is not None else losses.base_loss()

  def init(rng, params=None, model_state=None):
    del rng, params, model_state
    # u = 0 until the first weighted step ("started"); log u is kept finite in the state so the
    # trainer's non-finite guard can tell a blow-up from the official zero start.
    return {"log_u": jnp.zeros((), dtype), "started": jnp.asarray(False)}

  def stage(lam_e, loss, log_u):
    """p and the new log u for one (static) lambda."""
    if lam_e >= UNIFORM_SENTINEL:
      return jnp.full_like(loss, 1.0 / loss.shape[0]), log_u
    return absgd_weights(loss, log_u.astype(loss.dtype), lam_e, gamma, ab_alpha, floor)

  def update(ctx, state):
    b = base.logit_grad(ctx.logits, ctx.labels, ctx.step, None)
    loss = jax.lax.stop_gradient(base.per_sample(ctx.logits, ctx.labels, ctx.step))
    log_u = jnp.where(state["started"], state["log_u"], -jnp.inf)
    p1, u1 = stage(init_lam, loss, log_u)
    p2, u2 = stage(lam, loss, log_u)
    late = jnp.asarray(ctx.step) >= start_step
    p = jnp.where(late, p2, p1)
    started = state["started"] | jnp.where(late, lam < UNIFORM_SENTINEL,
                                           init_lam < UNIFORM_SENTINEL)
    new_log_u = jnp.where(started, jnp.where(late, u2, u1), 0.0).astype(dtype)
    n = loss.shape[0]
    aux = {"weights": (p * n)[:, None], "absgd_log_u": new_log_u, "absgd_weight_sum": jnp.sum(p),
           "absgd_lambda": jnp.where(late, lam, init_lam)}
    return b * p[:, None], {"log_u": new_log_u, "started": started}, aux

  def weight_fn(state, loss, labels):
    """``p B = exp(l/lambda - log u)`` (+ 1 with the floor) of the second stage at the saved u."""
    del labels
    if lam >= UNIFORM_SENTINEL:
      return jnp.ones_like(loss)
    return jnp.exp(loss / lam - state["log_u"]) + (1.0 if floor else 0.0)

  return Method("absgd", init, update, uses_meta=False, weight_fn=weight_fn)


def from_config(config, info, dtype=None) -> Method:
  """:func:`absgd` with ``config.absgd`` and ``config.loss``."""
  return absgd(steps_per_epoch=info.steps_per_epoch, **options.values(config.absgd, OPTIONS),
               loss=losses.make_base_loss(config, info.class_counts, info.steps_per_epoch),
               dtype=dtype or jnp.dtype(config.dtype))


def _validate(config) -> None:
  options.before_last_epoch(config, "absgd.start_epoch", config.absgd.start_epoch)


OPTIONS = options.OptionGroup(
    "absgd", options.defaults_of(absgd, "lam", "init_lam", "start_epoch", "gamma", "ab_alpha",
                                 "uniform_floor"),
    lambda config: check_options(config.absgd), epoch_switches={"start_epoch": (160, 200)})
SPECS = (MethodSpec("absgd", from_config, groups=(OPTIONS,), validate=_validate),)
