"""PMD (poly-margin diminishing) feature-dependent label noise of PLC (Zhang et al., ICLR 2021).

From the class probabilities ``eta(x)`` of a model trained on the clean labels
(``../shared/specs/mwnet_cmwnet.md`` §5; PLC ``utils.py: label_noise``): with ``u``, ``s`` the
top-1 and top-2 classes and ``d = eta_u - eta_s``,

* Type-I:   ``f = 1/2 - d^2 / 2``,                ``q = max(1 - f, 1/2)``
* Type-II:  ``f = 1 - |d|^3``,                    ``q = 1 - f``
* Type-III: ``f = 1 - (|d|^3 + d^2 + |d|) / 3``,  ``q = 1 - f``

and the noisy label is ``u`` with probability ``q / factor``, else ``s``: always one of the
model's two most likely classes, whatever the true label. ``factor`` sets the noise level; PLC
publishes the factors (and clean-model epochs) that give 35% and 70% on CIFAR
(:data:`PUBLISHED`). For other data :func:`calibrate_factor` solves for the factor whose
*expected* disagreement with the clean labels is the target rate.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

PMD_TYPES = (1, 2, 3)
# (dataset, type, rate) -> (factor, clean-model epochs), PLC cifar/readme.md.
PUBLISHED: Dict[Tuple[str, int, float], Tuple[float, int]] = {
    ("cifar10", 1, 0.35): (1.43, 25), ("cifar10", 1, 0.70): (3.40, 25),
    ("cifar10", 2, 0.35): (1.32, 25), ("cifar10", 2, 0.70): (3.10, 25),
    ("cifar10", 3, 0.35): (1.35, 25), ("cifar10", 3, 0.70): (3.20, 25),
    ("cifar100", 1, 0.35): (1.08, 25), ("cifar100", 1, 0.70): (1.80, 10),
    ("cifar100", 2, 0.35): (1.02, 35), ("cifar100", 2, 0.70): (2.58, 35),
    ("cifar100", 3, 0.35): (1.12, 35), ("cifar100", 3, 0.70): (1.20, 10),
}


def published(dataset: str, pmd_type: int, rate: float):
  """``(factor, epochs)`` PLC used for this cell, or None."""
  return PUBLISHED.get((dataset, int(pmd_type), round(float(rate), 2)))


def top2(probs):
  """``(u, s, eta_u, eta_s)``: the two most likely classes per row and their probabilities."""
  probs = np.asarray(probs, np.float64)
  order = np.argsort(-probs, axis=1, kind="stable")[:, :2]
  rows = np.arange(probs.shape[0])
  u, s = order[:, 0], order[:, 1]
  return u, s, probs[rows, u], probs[rows, s]


def keep_probability(eta_u, eta_s, pmd_type: int):
  """``q``: before division by the factor, the probability of keeping the top-1 class."""
  d = np.asarray(eta_u, np.float64) - np.asarray(eta_s, np.float64)
  if pmd_type == 1:
    return np.maximum(1.0 - (0.5 - 0.5 * d ** 2), 0.5)
  if pmd_type == 2:
    return np.abs(d) ** 3
  if pmd_type == 3:
    return (np.abs(d) ** 3 + d ** 2 + np.abs(d)) / 3.0
  raise ValueError(f"unknown PMD type {pmd_type!r}; valid: 1, 2, 3")


def _check_factor(factor: float) -> None:
  if not factor >= 1.0:
    raise ValueError(f"PMD factor must be >= 1 (q / factor is a probability), got {factor}")


def draw_labels(probs, pmd_type: int, factor: float, rng: np.random.Generator) -> np.ndarray:
  """One PMD label per row of ``probs``: top-1 with probability ``q / factor``, else top-2."""
  _check_factor(factor)
  u, s, eta_u, eta_s = top2(probs)
  keep = rng.random(u.shape[0]) < keep_probability(eta_u, eta_s, pmd_type) / factor
  return np.where(keep, u, s).astype(np.int64)


def expected_rate(probs, labels, pmd_type: int, factor: float) -> float:
  """Expected fraction of PMD labels that differ from ``labels``."""
  _check_factor(factor)
  labels = np.asarray(labels)
  u, s, eta_u, eta_s = top2(probs)
  p_u = keep_probability(eta_u, eta_s, pmd_type) / factor
  return float(np.mean(np.where(u != labels, p_u, 0.0) + np.where(s != labels, 1.0 - p_u, 0.0)))


def calibrate_factor(probs, labels, pmd_type: int, rate: float, max_factor: float = 1e4,
                     tol: float = 1e-6) -> float:
  """The factor in ``[1, max_factor]`` whose :func:`expected_rate` is ``rate`` (bisection on a
  bracket; the rate grows with the factor wherever the clean model's top-1 is the true class)."""
  lo, hi = 1.0, float(max_factor)
  f_lo = expected_rate(probs, labels, pmd_type, lo) - rate
  f_hi = expected_rate(probs, labels, pmd_type, hi) - rate
  if f_lo > 0 or f_hi < 0:
    reach = sorted([f_lo + rate, f_hi + rate])
    raise ValueError(f"PMD type {pmd_type} cannot reach rate {rate} with this clean model: "
                     f"factors 1..{max_factor:g} give {reach[0]:.3f}..{reach[1]:.3f}")
  while hi - lo > tol * lo:
    mid = 0.5 * (lo + hi)
    if expected_rate(probs, labels, pmd_type, mid) < rate:
      lo = mid
    else:
      hi = mid
  return 0.5 * (lo + hi)
