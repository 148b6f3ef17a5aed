"""Per-sample losses and their gradients with respect to the logits.

Every method's real update is a VJP of the logits with a cotangent ``G`` of shape ``[N, C]``;
for cross-entropy ``dCE_i / dz_i = softmax(z_i) - onehot(y_i)`` (the "label-wise error" E).

The *base loss* (:func:`make_base_loss`) is the per-sample loss every method weights: plain CE,
focal, LDAM, or the noise-robust SCE / truncated GCE of ABSGD's label-noise code, optionally
times a class-balanced weight ``w_{y_i}`` that can be deferred (DRW). Its logit gradient has the
form ``B_i = c_i (q_i - onehot(y_i))`` with ``c_i > 0`` and ``q_i`` a probability vector
(``softmax`` of the effective logits), which is what GDW's zero-mean constraint needs
(``../shared/specs/absgd_and_imbalance_losses.md`` §2): SCE has ``c = alpha + beta A q_y``
(``A = -log 1e-4``, exact while no probability is below its 1e-7 clip), truncated GCE
``c = q_y^q``. ``loss.logit_tau > 0`` (ABSGD's logit normalisation) leaves that form.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

LOSS_NAMES = ("ce", "focal", "ldam", "sce", "tce")
CLASS_WEIGHTS = ("none", "cb")
REDUCTIONS = ("auto", "mean", "weighted_mean")

# Loss baselines are ERM with a loss / schedule; their names imply these settings of config.loss.
METHOD_LOSS_OVERRIDES = {
    "focal": {"name": "focal"},
    "cb": {"class_weights": "cb"},
    "ldam_drw": {"name": "ldam", "class_weights": "cb", "drw": True},
}


def cross_entropy(logits, labels):
  """Per-sample softmax cross-entropy ``[N]`` for integer labels."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def soft_cross_entropy(logits, targets):
  """Per-sample cross-entropy against probability vectors ``targets`` ``[N, C]``."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def clamped_probs(logits, prob_clamp: Optional[float]):
  """``min(softmax(z), prob_clamp)`` (the official GDW code clamps at 0.999).

  ``prob_clamp`` of None or >= 1 means no clamp.
  """
  p = jax.nn.softmax(logits, axis=-1)
  return p if prob_clamp is None or prob_clamp >= 1.0 else jnp.minimum(p, prob_clamp)


def ce_logit_grad(logits, labels, prob_clamp: Optional[float] = None):
  """``E = min(softmax(z), clamp) - onehot(y)``: the per-(sample, class) CE gradient, detached.

  With ``prob_clamp=None`` this is the exact gradient of ``CE_i`` with respect to ``z_i``.
  """
  p = clamped_probs(jax.lax.stop_gradient(logits), prob_clamp)
  return p - jax.nn.one_hot(labels, logits.shape[-1], dtype=p.dtype)


def accuracy(logits, labels):
  return jnp.mean(jnp.argmax(logits, -1) == labels)


# --------------------------------------------------------------------------------------------
# Imbalance losses (Cui et al. 2019; Cao et al. 2019; Lin et al. 2017).


def class_balanced_weights(class_counts, beta: float) -> np.ndarray:
  """``w_j = (1 - beta) / (1 - beta^{n_j})`` (inverse effective number), normalised to sum ``C``.

  ``beta = 0`` gives all ones; ``beta -> 1`` approaches inverse frequency. A class with no
  training sample gets weight 0 (it never appears as a label).
  """
  n = np.asarray(class_counts, np.float64)
  if beta == 0.0:
    return np.ones_like(n)
  eff = (1.0 - np.power(beta, n)) / (1.0 - beta)
  w = np.where(n > 0, 1.0 / np.where(n > 0, eff, 1.0), 0.0)
  return w / w.sum() * len(n)


def ldam_margins(class_counts, max_m: float) -> np.ndarray:
  """``m_j = max_m (n_min / n_j)^{1/4}``: margins ``∝ n_j^{-1/4}``, the largest equal to max_m."""
  n = np.asarray(class_counts, np.float64)
  inv = np.where(n > 0, 1.0 / np.sqrt(np.sqrt(np.maximum(n, 1))), 0.0)
  return inv * (max_m / inv.max())


def focal_from_ce(ce, gamma: float):
  """LDAM-DRW's focal loss on per-sample (possibly class-weighted) CE: ``(1 - e^{-ce})^g ce``.

  The modulating factor is differentiated too (``p = exp(-ce)`` is not detached in the code).
  """
  return (1.0 - jnp.exp(-ce)) ** gamma * ce


def ldam_logits(logits, labels, margins, scale: float):
  """``s (z - m_y onehot(y))``: only the true-class (cosine) logit is shifted."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return scale * (logits - jnp.asarray(margins, logits.dtype)[labels][:, None] * onehot)


# --------------------------------------------------------------------------------------------
# Noise-robust losses of ABSGD's label-noise code (``absgd_and_imbalance_losses.md`` §1.7).

RCE_LOG_CLIP = 1e-4   # SCE clips the one-hot target at 1e-4 before the log ...
RCE_PROB_CLIP = 1e-7  # ... and the prediction at 1e-7


def reverse_cross_entropy(logits, labels):
  """SCE's RCE: ``-sum_k clip(q_k, 1e-7, 1) log(clip(onehot_k, 1e-4, 1))`` with ``q = softmax``,
  i.e. ``-log(1e-4) sum_{k != y} max(q_k, 1e-7)`` (~ ``9.21 (1 - q_y)``)."""
  q = jnp.clip(jax.nn.softmax(logits, axis=-1), RCE_PROB_CLIP, 1.0)
  other = 1.0 - jax.nn.one_hot(labels, logits.shape[-1], dtype=q.dtype)
  return -jnp.log(jnp.asarray(RCE_LOG_CLIP, q.dtype)) * jnp.sum(q * other, axis=-1)


def symmetric_cross_entropy(logits, labels, alpha: float, beta: float):
  """SCE (Wang et al. 2019) per sample: ``alpha CE + beta RCE`` (ABSGD's ``ABSCE`` base loss)."""
  return alpha * cross_entropy(logits, labels) + beta * reverse_cross_entropy(logits, labels)


def truncated_gce(logits, labels, q: float, k: float):
  """ABSGD's ``TruncatedLoss`` per sample (``ABTCE``): ``L_q(p_y) - L_q(k)`` with the GCE
  ``L_q(p) = (1 - p^q) / q``, i.e. ``(k^q - p_y^q) / q`` (negative once ``p_y > k``). Its 0/1
  truncation weights are only refreshed for plain ``TCE`` in that code, so under ABSGD they
  stay 1 and there is no truncation. ``p_y^q = exp(q log p_y)`` keeps the gradient finite."""
  logp = -cross_entropy(logits, labels)
  return (k ** q - jnp.exp(q * logp)) / q


def logit_norm(logits, tau: float):
  """``z / ||z||_2^tau`` per sample (ABSGD's ``class_tau``; ``tau = 0``: unchanged)."""
  if not tau:
    return logits
  return logits / jnp.linalg.norm(logits, axis=-1, keepdims=True) ** tau


# --------------------------------------------------------------------------------------------
# The base loss a method weights.


class BaseLoss(NamedTuple):
  """The per-sample loss every method weights, as pure functions of (logits, labels, step).

  * ``per_sample(z, y, step) -> [N]``: ``l_i`` (class weight, margin, focal factor included).
  * ``logit_grad(z, y, step, prob_clamp=None) -> [N, C]``: ``dl_i/dz_i``, detached. For plain CE
    this is ``w_y (min(softmax, clamp) - onehot)`` (the official GDW / MW-Net ``E``).
  * ``probs(z, y) -> [N, C]``: the ``q`` in ``logit_grad = c (q - onehot)`` (clamped like
    ``logit_grad`` when asked).
  * ``class_weight(y, step) -> [N]``: ``w_{y_i}`` in force at ``step`` (ones without weights).
  * ``normaliser(y, step)``: ERM's divisor, ``N`` (mean) or ``sum_i w_{y_i}`` (PyTorch ``weight=``).
  * ``meta_loss(z, y) -> scalar``: the unweighted meta objective, mean CE of ``logit_scale * z``.
  """
  name: str
  per_sample: Callable[..., Any]
  logit_grad: Callable[..., Any]
  probs: Callable[..., Any]
  class_weight: Callable[..., Any]
  normaliser: Callable[..., Any]
  meta_loss: Callable[..., Any]
  logit_scale: float
  settings: dict


def loss_settings(config, method: Optional[str] = None) -> dict:
  """``config.loss`` with the overrides implied by the method name (e.g. ``ldam_drw``)."""
  group = config.get("loss", None)
  out = dict(name="ce", class_weights="none", cb_beta=0.9999, drw=False, drw_epoch=160,
             reduction="auto", focal_gamma=1.0, ldam_max_m=0.5, ldam_s=30.0, sce_alpha=1.0,
             sce_beta=1.0, tce_q=0.7, tce_k=0.5, logit_tau=0.0)
  if group is not None:
    out.update({k: group[k] for k in group.keys()})
  out.update(METHOD_LOSS_OVERRIDES.get(method or config.get("method", ""), {}))
  return out


def make_base_loss(config, class_counts, steps_per_epoch: int,
                   method: Optional[str] = None) -> BaseLoss:
  """Build the base loss of ``config.loss`` (+ the method's implied settings).

  Class-balanced weights use the (noisy) training counts; with ``drw`` they switch on at epoch
  ``drw_epoch`` (``epoch = step // steps_per_epoch``), before that every weight is 1.
  """
  s = loss_settings(config, method)
  name = s["name"]
  if name not in LOSS_NAMES:
    raise ValueError(f"unknown loss.name {name!r}; valid: {', '.join(LOSS_NAMES)}")
  num_classes = len(class_counts)
  if s["class_weights"] == "cb":
    cw = class_balanced_weights(class_counts, float(s["cb_beta"]))
  else:
    cw = np.ones(num_classes)
  defer_steps = int(s["drw_epoch"]) * int(steps_per_epoch) if s["drw"] else 0
  margins = ldam_margins(class_counts, float(s["ldam_max_m"])) if name == "ldam" else None
  scale = float(s["ldam_s"]) if name == "ldam" else 1.0
  gamma = float(s["focal_gamma"])
  sce_ab = (float(s["sce_alpha"]), float(s["sce_beta"]))
  tce_qk = (float(s["tce_q"]), float(s["tce_k"]))
  tau = float(s["logit_tau"])
  reduction = s["reduction"]
  if reduction == "auto":  # LDAM-DRW: F.cross_entropy(weight=) for CE/LDAM, plain mean for focal
    reduction = "mean" if name == "focal" else "weighted_mean"

  def class_weight(labels, step):
    w = jnp.asarray(cw, jnp.float32)[labels]
    if defer_steps:
      w = jnp.where(jnp.asarray(step) >= defer_steps, w, jnp.ones_like(w))
    return w

  def effective_logits(logits, labels):
    logits = logit_norm(logits, tau)
    return ldam_logits(logits, labels, margins, scale) if name == "ldam" else logits

  def per_sample(logits, labels, step):
    w = class_weight(labels, step).astype(logits.dtype)
    z = effective_logits(logits, labels)
    if name == "sce":
      return symmetric_cross_entropy(z, labels, *sce_ab) * w
    if name == "tce":
      return truncated_gce(z, labels, *tce_qk) * w
    ce = cross_entropy(z, labels) * w
    return focal_from_ce(ce, gamma) if name == "focal" else ce

  def probs(logits, labels, prob_clamp=None):
    z = jax.lax.stop_gradient(effective_logits(logits, labels))
    return clamped_probs(z, prob_clamp if name == "ce" else None)

  def logit_grad(logits, labels, step, prob_clamp=None):
    logits = jax.lax.stop_gradient(logits)
    if name == "ce" and not tau:  # keeps the official clamped E exactly
      w = class_weight(labels, step).astype(logits.dtype)
      return ce_logit_grad(logits, labels, prob_clamp) * w[:, None]
    _, vjp = jax.vjp(lambda z: per_sample(z, labels, step), logits)
    return vjp(jnp.ones(labels.shape, logits.dtype))[0]

  def normaliser(labels, step):
    if reduction == "weighted_mean":
      return jnp.sum(class_weight(labels, step))
    return jnp.asarray(labels.shape[0], jnp.float32)

  def meta_loss(logits, labels):
    return jnp.mean(cross_entropy(scale * logits if scale != 1.0 else logits, labels))

  return BaseLoss(name, per_sample, logit_grad, probs, class_weight, normaliser, meta_loss,
                  scale, dict(s, reduction=reduction))
