"""Label corruption, long-tailed subsampling and the clean meta split.

One implementation for every dataset (digits, CIFAR-10/100, ...): everything here works on
integer label arrays and a NumPy random generator, never on images.

Noise models (row-stochastic corruption matrix ``C``, ``K`` classes, rate ``r``), following
``load_corrupted_data.py`` of the official MW-Net / GDW repositories:

* ``uniform``: ``C = (1 - r) I + (r / K) 1 1^T``. The corrupted label *may equal the true
  label*, so the expected fraction of changed labels is ``r (1 - 1/K)``.
* ``flip``: ``C = (1 - r) I`` plus ``r`` on one random off-diagonal class per row.
* ``flip2``: ``C = (1 - r) I`` plus ``r / 2`` on two distinct random off-diagonal classes.

Every training label ``y`` is then replaced by a draw from ``C[y]``.

Long-tailed subsampling keeps ``n_c`` images of class ``c`` (by true label):
``exp``: ``n_c = int(n_max * f ** (c / (K - 1)))``; ``step``: ``n_max`` for the first ``K // 2``
classes and ``int(n_max * f)`` for the rest, where ``f`` = imbalance factor = n_min / n_max.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

NOISE_TYPES = ("none", "uniform", "flip", "flip2")
IMBALANCE_TYPES = ("exp", "step")


def uniform_matrix(num_classes: int, rate: float) -> np.ndarray:
  """``(1 - r) I + r / K``: the official 'unif' matrix (the true label can be kept)."""
  k = num_classes
  return (1.0 - rate) * np.eye(k) + rate * np.full((k, k), 1.0 / k)


def flip_matrix(num_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
  """Diagonal ``1 - r``; each row sends ``r`` to one random other class."""
  k = num_classes
  c = (1.0 - rate) * np.eye(k)
  for i in range(k):
    others = [j for j in range(k) if j != i]
    c[i, others[rng.integers(len(others))]] = rate
  return c


def flip2_matrix(num_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
  """Diagonal ``1 - r``; each row sends ``r / 2`` to two distinct random other classes."""
  k = num_classes
  if k < 3:
    raise ValueError(f"flip2 noise needs at least 3 classes, got {k}")
  c = (1.0 - rate) * np.eye(k)
  for i in range(k):
    others = np.array([j for j in range(k) if j != i])
    a, b = rng.choice(others, size=2, replace=False)
    c[i, a] = rate / 2
    c[i, b] = rate / 2
  return c


def corruption_matrix(noise_type: str, num_classes: int, rate: float,
                      rng: np.random.Generator) -> np.ndarray:
  """The ``[K, K]`` row-stochastic matrix of ``noise_type`` at ``rate``."""
  if noise_type not in NOISE_TYPES:
    raise ValueError(f"unknown noise type {noise_type!r}; valid: {', '.join(NOISE_TYPES)}")
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"noise rate must be in [0, 1], got {rate}")
  if noise_type == "none" or rate == 0.0:
    return np.eye(num_classes)
  if noise_type == "uniform":
    return uniform_matrix(num_classes, rate)
  if noise_type == "flip":
    return flip_matrix(num_classes, rate, rng)
  return flip2_matrix(num_classes, rate, rng)


def sample_labels(labels: np.ndarray, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Replace each label ``y`` by a draw from row ``matrix[y]`` (one uniform draw per sample)."""
  labels = np.asarray(labels)
  cum = np.cumsum(matrix, axis=1)
  cum[:, -1] = 1.0  # guard against rounding: the last bucket closes the row
  u = rng.random(labels.shape[0])
  return (u[:, None] >= cum[labels]).sum(axis=1).astype(np.int64)


def long_tailed_counts(class_counts, factor: float, kind: str = "exp") -> np.ndarray:
  """Per-class counts to keep; class 0 is the head. ``factor`` = n_min / n_max in (0, 1]."""
  class_counts = np.asarray(class_counts)
  if kind not in IMBALANCE_TYPES:
    raise ValueError(f"unknown imbalance type {kind!r}; valid: {', '.join(IMBALANCE_TYPES)}")
  if not 0.0 < factor <= 1.0:
    raise ValueError(f"imbalance factor must be in (0, 1], got {factor}")
  k = len(class_counts)
  n_max = int(class_counts.max())
  if kind == "exp":
    target = np.array([int(n_max * factor ** (c / max(k - 1, 1))) for c in range(k)])
  else:
    target = np.array([n_max if c < k // 2 else int(n_max * factor) for c in range(k)])
  counts = np.minimum(target, class_counts)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise ValueError(
        f"imbalance factor {factor} ({kind}) leaves class(es) {empty.tolist()} with no "
        f"training image (largest class has {n_max}); use a larger factor")
  return counts


def subsample_long_tailed(labels, factor: float, kind: str,
                          rng: np.random.Generator) -> np.ndarray:
  """Positions (sorted) of the samples kept to make ``labels`` long-tailed."""
  labels = np.asarray(labels)
  k = int(labels.max()) + 1
  counts = np.bincount(labels, minlength=k)
  keep_counts = long_tailed_counts(counts, factor, kind)
  kept = []
  for c in range(k):
    idx = np.flatnonzero(labels == c)
    rng.shuffle(idx)
    kept.append(idx[:keep_counts[c]])
  return np.sort(np.concatenate(kept))


def split_meta(labels, per_class: int, rng: np.random.Generator):
  """Split positions into (meta, rest): ``per_class`` random samples of every class to meta.

  The two index sets are disjoint and cover ``labels``; both are returned sorted.
  """
  labels = np.asarray(labels)
  k = int(labels.max()) + 1
  counts = np.bincount(labels, minlength=k)
  if per_class < 0:
    raise ValueError(f"meta images per class must be >= 0, got {per_class}")
  if per_class > counts.min():
    c = int(counts.argmin())
    raise ValueError(f"meta set of {per_class} per class is larger than class {c} "
                     f"({counts[c]} images)")
  meta = []
  for c in range(k):
    idx = np.flatnonzero(labels == c)
    rng.shuffle(idx)
    meta.append(idx[:per_class])
  meta = np.sort(np.concatenate(meta)).astype(np.int64)
  rest = np.setdiff1d(np.arange(labels.shape[0]), meta)
  return meta, rest


class Corruption(NamedTuple):
  """Result of :func:`make_biased_split`; all indices refer to the source's training pool."""
  train_indices: np.ndarray   # positions of the (possibly long-tailed) training set
  noisy_labels: np.ndarray    # labels the learner sees, aligned with train_indices
  true_labels: np.ndarray     # clean labels, aligned with train_indices
  meta_indices: np.ndarray    # positions of the clean, class-balanced meta set
  matrix: np.ndarray          # the corruption matrix used
  realised_noise_rate: float  # fraction of training labels that differ from the truth
  class_counts: np.ndarray    # per-class training counts by true label


def make_biased_split(labels, *, num_classes: int, noise_type: str, noise_rate: float,
                      imbalance_factor: float = 1.0, imbalance_type: str = "exp",
                      meta_per_class: int = 10, seed: int = 0) -> Corruption:
  """Meta split, label noise and long-tailed subsampling of a clean labelled pool.

  Order (as in the official GDW code): the balanced clean meta set is taken out first; the
  rest is corrupted; long-tailed subsampling (by true label) is applied last. Everything is
  drawn from ``np.random.default_rng(seed)``.
  """
  labels = np.asarray(labels, dtype=np.int64)
  rng = np.random.default_rng(seed)
  meta_idx, rest = split_meta(labels, meta_per_class, rng)
  true = labels[rest]
  matrix = corruption_matrix(noise_type, num_classes, noise_rate, rng)
  noisy = sample_labels(true, matrix, rng)
  if imbalance_factor < 1.0:
    keep = subsample_long_tailed(true, imbalance_factor, imbalance_type, rng)
    rest, true, noisy = rest[keep], true[keep], noisy[keep]
  return Corruption(
      train_indices=rest, noisy_labels=noisy, true_labels=true, meta_indices=meta_idx,
      matrix=matrix, realised_noise_rate=float(np.mean(noisy != true)) if len(true) else 0.0,
      class_counts=np.bincount(true, minlength=num_classes))
