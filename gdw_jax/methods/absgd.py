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
import jax
import jax.numpy as jnp

from gdw_jax import losses
from gdw_jax.methods.base import Method

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


def make(config, info) -> Method:
  dtype = jnp.dtype(config.get("dtype", "float32"))
  g = config.absgd
  lam, init_lam = float(g.lam), float(g.init_lam)
  gamma, ab_alpha = float(g.gamma), float(g.ab_alpha)
  floor = bool(g.uniform_floor)
  start_step = int(g.start_epoch) * int(info.steps_per_epoch)
  base = losses.make_base_loss(config, info.class_counts, info.steps_per_epoch, "absgd")

  def init(rng):
    del rng
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
