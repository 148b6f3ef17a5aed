"""A user-defined weighting method in one file, run by the package's trainer and CLI.

The small-loss trick: each step trains on the ``keep`` fraction of the batch with the smallest
cross-entropy (noisy labels tend to have large losses) and drops the rest::

    python -m gdw_jax.main --config=configs/digits.py --config.plugins=examples.my_method \
        --config.method=small_loss --config.small_loss.keep=0.6 --workdir=runs/small_loss

``--config.plugins`` imports this module before the config is read: the ``register_method`` call
below makes ``small_loss`` a valid ``config.method`` and adds its option group (``keep``, with the
constructor's default) to every config. In your own loop, use ``small_loss(keep=0.6)`` like any
built-in method with ``gdw_jax.reweighted_grads``.
"""
import jax
import jax.numpy as jnp

import gdw_jax
from gdw_jax import losses, options


def check(opts, prefix="small_loss.") -> None:
  options.number(opts, "keep", 0.0, 1.0, lo_open=True, prefix=prefix)


def small_loss(*, keep: float = 0.6) -> gdw_jax.Method:
  """Logit cotangent ``G_i = m_i (softmax(z_i) - onehot(y_i)) / sum_j m_j`` with ``m_i = 1``
  for the ``round(keep N)`` samples of smallest CE in the batch, else 0 (the gradient of the
  mean CE over the kept samples)."""
  check(dict(keep=keep), prefix="")

  def init(rng, params=None, model_state=None):
    del rng, params, model_state
    return {}  # no state

  def update(ctx, state):
    ce = jax.lax.stop_gradient(losses.cross_entropy(ctx.logits, ctx.labels))
    k = max(1, round(keep * ctx.batch_size))
    kept = (jnp.argsort(jnp.argsort(ce)) < k).astype(ce.dtype)[:, None]
    grad_ce = losses.ce_logit_grad(ctx.logits, ctx.labels)
    return grad_ce * kept / jnp.sum(kept), state, {"weights": kept}

  return gdw_jax.Method("small_loss", init, update)


OPTIONS = gdw_jax.OptionGroup("small_loss", options.defaults_of(small_loss, "keep"),
                              lambda config: check(config.small_loss))


def from_config(config, info, dtype=None):
  del info, dtype
  return small_loss(**options.values(config.small_loss, OPTIONS))


gdw_jax.register_method(gdw_jax.MethodSpec("small_loss", from_config, groups=(OPTIONS,)))
