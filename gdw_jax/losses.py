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

Below the methods: this module knows no method. The settings a method's name implies (the loss
baselines' ``focal``, ``cb``, ``ldam_drw``) are declared in that method's file and passed in
(:func:`make_base_loss`'s ``overrides``).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gdw_jax import options

LOSS_NAMES = ("ce", "focal", "ldam", "sce", "tce")
CLASS_WEIGHTS = ("none", "cb")
REDUCTIONS = ("auto", "mean", "weighted_mean")

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


def base_loss(name: str = "ce", *, class_weights: str = "none", cb_beta: float = 0.9999,
              drw: bool = False, drw_epoch: int = 160, reduction: str = "auto",
              focal_gamma: float = 1.0, ldam_max_m: float = 0.5, ldam_s: float = 30.0,
              sce_alpha: float = 1.0, sce_beta: float = 1.0, tce_q: float = 0.7,
              tce_k: float = 0.5, logit_tau: float = 0.0,
              class_counts=None, steps_per_epoch: Optional[int] = None) -> BaseLoss:
  """The base loss every method weights (defaults: the LDAM-DRW / CB papers' settings).

  * ``name``: ``ce``, ``focal`` (``(1 - e^{-ce})^focal_gamma ce``, LDAM-DRW's form) or ``ldam``
    (``CE(ldam_s (z - m_y onehot(y)), y)``, margins ``m_j = ldam_max_m (n_min / n_j)^{1/4}``).
  * ``class_weights``: ``none`` or ``cb`` (effective number ``(1 - cb_beta) / (1 - cb_beta^n_j)``
    of the (noisy) training ``class_counts``, normalised to sum ``C``); with ``drw`` they switch
    on at epoch ``drw_epoch`` (``epoch = step // steps_per_epoch``), before that every weight is 1.
  * ``reduction`` (ERM's divisor): ``auto`` (the LDAM-DRW code: ``sum_i w_{y_i}`` for CE / LDAM,
    ``N`` for focal), ``mean`` (``N``) or ``weighted_mean``.
  * ABSGD's label-noise code: ``sce`` (``sce_alpha CE + sce_beta RCE``), ``tce`` (truncated GCE
    with ``tce_q``, ``tce_k``), and ``logit_tau > 0`` (logit normalisation ``z / ||z||^tau``).

  ``class_counts`` is needed by ``cb`` weights and LDAM margins, ``steps_per_epoch`` by DRW.
  """
  if name not in LOSS_NAMES:
    raise ValueError(f"unknown loss.name {name!r}; valid: {', '.join(LOSS_NAMES)}")
  if class_weights not in CLASS_WEIGHTS:
    raise ValueError(f"unknown loss.class_weights {class_weights!r}; valid: "
                     f"{', '.join(CLASS_WEIGHTS)}")
  if class_counts is None and (class_weights == "cb" or name == "ldam"):
    raise ValueError(f"loss {name!r} with class_weights {class_weights!r} needs class_counts")
  if drw and steps_per_epoch is None:
    raise ValueError("loss.drw (class weights deferred to drw_epoch) needs steps_per_epoch")
  if class_weights == "cb":
    cw = class_balanced_weights(class_counts, float(cb_beta))
  else:
    cw = None
  defer_steps = int(drw_epoch) * int(steps_per_epoch) if drw else 0
  margins = ldam_margins(class_counts, float(ldam_max_m)) if name == "ldam" else None
  scale = float(ldam_s) if name == "ldam" else 1.0
  gamma = float(focal_gamma)
  sce_ab = (float(sce_alpha), float(sce_beta))
  tce_qk = (float(tce_q), float(tce_k))
  tau = float(logit_tau)
  settings = dict(name=name, class_weights=class_weights, cb_beta=cb_beta, drw=drw,
                  drw_epoch=drw_epoch, reduction=reduction, focal_gamma=focal_gamma,
                  ldam_max_m=ldam_max_m, ldam_s=ldam_s, sce_alpha=sce_alpha, sce_beta=sce_beta,
                  tce_q=tce_q, tce_k=tce_k, logit_tau=logit_tau)
  if reduction == "auto":  # LDAM-DRW: F.cross_entropy(weight=) for CE/LDAM, plain mean for focal
    reduction = "mean" if name == "focal" else "weighted_mean"

  def class_weight(labels, step):
    if cw is None:
      return jnp.ones(labels.shape, jnp.float32)
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
                  scale, dict(settings, reduction=reduction))


LOSS_KEYS = ("name", "class_weights", "cb_beta", "drw", "drw_epoch", "reduction", "focal_gamma",
             "ldam_max_m", "ldam_s", "sce_alpha", "sce_beta", "tce_q", "tce_k", "logit_tau")


def default_settings() -> dict:
  """``config.loss``'s keys with their defaults: :func:`base_loss`'s keyword defaults."""
  return options.defaults_of(base_loss, *LOSS_KEYS)


def loss_settings(config, overrides: Mapping[str, Any] = MappingProxyType({})) -> dict:
  """``config.loss`` with ``overrides`` on top: the settings a method's name implies (e.g.
  ``ldam_drw`` forces ``name=ldam``), which the method declares in its own file
  (``MethodSpec.loss_overrides``) and passes here; :func:`gdw_jax.methods.loss_settings` is the
  run's (its ``config.method``'s overrides looked up)."""
  out = {k: config["loss"][k] for k in LOSS_KEYS}
  out.update(overrides)
  return out


def make_base_loss(config, class_counts, steps_per_epoch: int,
                   overrides: Mapping[str, Any] = MappingProxyType({})) -> BaseLoss:
  """:func:`base_loss` of :func:`loss_settings` (``config.loss`` + ``overrides``), with the
  (noisy) training ``class_counts`` and ``steps_per_epoch``."""
  return base_loss(**loss_settings(config, overrides), class_counts=class_counts,
                   steps_per_epoch=steps_per_epoch)
