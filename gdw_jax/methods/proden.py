"""PRODEN (Lv et al., ICML 2020): progressive identification of true labels from candidate sets.

Each training sample ``i`` has a candidate set ``S_i`` (``DataInfo.candidates``, a bool
``[n, C]`` mask) and a row ``w_i`` of the per-sample *confidence table* ``W`` ``[n, C]`` kept in
the method state (on the device with the state, checkpointed and resumed with it; never copied to
the host per step). ``W`` starts uniform over each set: ``w_ij = 1/|S_i|`` on ``S_i``, 0 off it.

Step on a batch with logits ``z`` and ``p = softmax(z)`` (``../shared/specs/partial_label.md``
§3):

* loss ``L = -(1/B) sum_i sum_{j in S_i} w_ij log p_ij`` (a batch mean; rows of ``w`` sum to
  one), so the logit cotangent is ``G = (p - w) / B``;
* update, from the same (pre-step) forward, detached: ``w'_ij = 1[j in S_i] p_ij /
  sum_{k in S_i} p_ik``, i.e. the softmax of the candidate logits alone (computed so, stably:
  no probability underflows to a dropped candidate). It is written into ``W`` at the batch's
  dataset positions after the step, so a sample's new row is first used when it is next seen (the
  next epoch).

Named quirks of the official code (off by default):

* ``log_of_softmax``: the loss as ``log(softmax(z))`` (Q1): a probability that underflows to 0
  gives ``0 * -inf = NaN``; the cotangent is then the autodiff gradient of that expression.
* ``zero_sticks``: the candidate mask is ``w > 0`` and the update ``mask p / sum(mask p)`` in
  probabilities (Q2): a candidate whose probability underflows is dropped for good, and a row
  whose candidates all underflow becomes 0/0.

Per step it reports ``proden_loss`` and a ``label_estimate`` (argmax of the updated rows), which
the trainer turns into the ``disambiguation_acc`` metric against the true labels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gdw_jax import options
from gdw_jax.methods.base import Method, MethodSpec


def initial_confidence(candidates) -> np.ndarray:
  """``w_ij = 1/|S_i|`` on the candidates, exactly 0 elsewhere (float32 ``[n, C]``)."""
  mask = np.asarray(candidates, bool)
  return (mask / mask.sum(axis=1, keepdims=True)).astype(np.float32)


def candidate_softmax(logits, mask):
  """Softmax of each row's candidate logits (``-inf`` elsewhere): rows sum to one, exactly 0
  off the candidates, invariant to a constant added to the logits."""
  z = jnp.where(mask, logits, -jnp.inf)
  z = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  e = jnp.where(mask, jnp.exp(z), 0.0)
  return e / jnp.sum(e, axis=-1, keepdims=True)


def proden_loss(logits, w, log_of_softmax: bool = False):
  """``-(1/B) sum_ij w_ij log p_ij``; masked ``log_softmax`` (0 off the support of ``w``), or
  the official ``log(softmax)`` (NaN where a probability underflows)."""
  if log_of_softmax:
    return -jnp.sum(w * jnp.log(jax.nn.softmax(logits, axis=-1))) / logits.shape[0]
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.where(w > 0, w * logp, 0.0)) / logits.shape[0]


def updated_confidence(logits, w, mask, zero_sticks: bool = False):
  """The new confidence rows from the pre-step logits (detached)."""
  logits = jax.lax.stop_gradient(logits)
  if zero_sticks:
    kept = (w > 0).astype(logits.dtype)
    p = kept * jax.nn.softmax(logits, axis=-1)
    return p / jnp.sum(p, axis=-1, keepdims=True)
  return candidate_softmax(logits, mask)


def proden(*, candidates, log_of_softmax: bool = False, zero_sticks: bool = False) -> Method:
  """PRODEN on the candidate sets ``candidates`` (bool ``[n, C]``, one row per training sample;
  the step needs the batch's positions, ``ctx.index``)."""
  if candidates is None:
    raise ValueError("proden needs candidate sets (partial_rate, or given candidates)")
  mask0 = np.asarray(candidates, bool)
  if not mask0.any(axis=1).all():
    raise ValueError("proden: every candidate set needs at least one class")
  log_of_softmax, zero_sticks = bool(log_of_softmax), bool(zero_sticks)

  def init(rng, params=None, model_state=None):
    del rng, params, model_state
    return {"confidence": jnp.asarray(initial_confidence(mask0)),
            "candidates": jnp.asarray(mask0)}

  def update(ctx, state):
    if ctx.index is None:
      raise ValueError("proden needs the batch's training-set positions (batch['index'])")
    idx = ctx.index
    w = state["confidence"][idx].astype(ctx.logits.dtype)
    mask = state["candidates"][idx]
    if log_of_softmax:
      loss, cot = jax.value_and_grad(proden_loss)(ctx.logits, w, True)
      cot = cot * ctx.batch_size / ctx.norm_size
    else:
      loss = proden_loss(ctx.logits, w)
      cot = (jax.nn.softmax(ctx.logits, axis=-1) - w) / ctx.norm_size
    w_new = updated_confidence(ctx.logits, w, mask, zero_sticks)
    table = state["confidence"].at[idx].set(w_new.astype(state["confidence"].dtype))
    aux = {"proden_loss": jax.lax.stop_gradient(loss), "weights": w_new,
           "label_estimate": jnp.argmax(w_new, axis=-1)}
    return cot, {**state, "confidence": table}, aux

  return Method("proden", init, update, uses_meta=False)


def from_config(config, info, dtype=None) -> Method:
  del dtype
  return proden(candidates=info.candidates, **options.values(config.proden, OPTIONS))


def _check(config) -> None:
  options.flag(config.proden, "log_of_softmax", "proden.")
  options.flag(config.proden, "zero_sticks", "proden.")


OPTIONS = options.OptionGroup(
    "proden", options.defaults_of(proden, "log_of_softmax", "zero_sticks"), _check)
SPECS = (MethodSpec("proden", from_config, groups=(OPTIONS,), candidates="required"),)
