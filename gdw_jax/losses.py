"""Per-sample losses and their gradients with respect to the logits.

Every method's real update is a VJP of the logits with a cotangent ``G`` of shape ``[N, C]``;
for cross-entropy ``dCE_i / dz_i = softmax(z_i) - onehot(y_i)`` (the "label-wise error" E).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


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
