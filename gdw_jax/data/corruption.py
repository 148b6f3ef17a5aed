"""Label corruption, long-tailed subsampling and the clean meta split.

One implementation for every dataset (digits, CIFAR-10/100, ...): everything here works on
integer label arrays and a NumPy random generator, never on images.

Noise models (row-stochastic corruption matrix ``C``, ``K`` classes, rate ``r``), following
``load_corrupted_data.py`` of the official MW-Net / GDW repositories:

* ``uniform``: ``C = (1 - r) I + (r / K) 1 1^T``. The corrupted label *may equal the true
  label*, so the expected fraction of changed labels is ``r (1 - 1/K)``.
* ``flip``: ``C = (1 - r) I`` plus ``r`` on one random off-diagonal class per row.
* ``flip2``: ``C = (1 - r) I`` plus ``r / 2`` on two distinct random off-diagonal classes.
* ``uniform_other`` (PLC's ``noise.py``): ``C = (1 - r) I`` plus ``r / (K - 1)`` off the diagonal.

Every training label ``y`` is then replaced by a draw from ``C[y]``. The generators of the other
papers (``sym_exact``, ``sym_other``, ``asym`` with its class maps) draw exact counts or follow a
class map; they live in :mod:`gdw_jax.data.noise` and are dispatched by :func:`add_noise`.

Long-tailed subsampling keeps ``n_c`` images of class ``c`` (by true label):
``exp``: ``n_c = int(n_max * f ** (c / (K - 1)))``; ``step``: ``n_max`` for the first ``K // 2``
classes and ``int(n_max * f)`` for the rest, where ``f`` = imbalance factor = n_min / n_max.

Two random-number orders draw these same operations (``split_rng``):

* ``numpy`` (default): one ``np.random.default_rng(seed)`` for split, matrix, labels, imbalance.
* ``legacy``: replays the official code's legacy NumPy / Python ``random`` calls one for one, so
  that with the images in the official (python archive) order the exact official meta set, noisy
  labels and long-tailed subset come out (:func:`legacy_split` and the ``legacy_*`` helpers).

Independently, ``meta_seed`` draws the meta set with its own seed, as the official GDW / MW-Net
scripts do (their meta-set constructor always uses seed 1, the training one ``--seed``): the
training set is then the complement of a *different* split and mostly contains the meta images
(``../shared/specs/gdw.md`` §3.1). Default (``None``): one split, meta and training disjoint.

Noisy labels can also be given per pool image (feature-dependent label files, human noise): they
replace the sampling step; the split and the imbalance are drawn as above. With
``noise_on_given_labels`` the synthetic noise is then applied *on top of* the given labels (the
source class of a flip is the given label), as CMW-Net's ``mwn.py`` builds its hybrid noise
(PMD labels + 30% symmetric / asymmetric noise).
"""
from __future__ import annotations

import random
from typing import Dict, NamedTuple, Optional

import numpy as np

from gdw_jax.data import noise

MATRIX_NOISE_TYPES = ("none", "uniform", "uniform_other", "flip", "flip2")
NOISE_TYPES = MATRIX_NOISE_TYPES + ("sym_exact", "sym_other", "asym")
ASYM_GENERATORS = noise.ASYM_GENERATORS
IMBALANCE_TYPES = ("exp", "step")
SPLIT_RNGS = ("numpy", "legacy")


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
  """The ``[K, K]`` row-stochastic matrix of ``noise_type`` (one of MATRIX_NOISE_TYPES) at
  ``rate``."""
  if noise_type not in MATRIX_NOISE_TYPES:
    raise ValueError(f"unknown noise type {noise_type!r}; valid: {', '.join(NOISE_TYPES)}")
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"noise rate must be in [0, 1], got {rate}")
  if noise_type == "none" or rate == 0.0:
    return np.eye(num_classes)
  if noise_type == "uniform":
    return uniform_matrix(num_classes, rate)
  if noise_type == "uniform_other":
    return noise.uniform_other_matrix(num_classes, rate)
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


def add_noise(labels, noise_type: str, rate: float, num_classes: int, rng: np.random.Generator,
              class_map: Optional[Dict[int, int]] = None, asym_generator: str = "dividemix"):
  """``(noisy labels, matrix)``: ``labels`` corrupted by ``noise_type`` at ``rate``.

  Matrix types draw each label from ``C[y]`` (the matrix is ``C``); ``sym_exact``, ``sym_other``
  and ``asym`` (:mod:`gdw_jax.data.noise`) return their expected transition matrix (``asym``
  needs ``class_map``).
  """
  labels = np.asarray(labels, np.int64)
  if noise_type in MATRIX_NOISE_TYPES:
    matrix = corruption_matrix(noise_type, num_classes, rate, rng)
    return sample_labels(labels, matrix, rng), matrix
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"noise rate must be in [0, 1], got {rate}")
  if noise_type == "sym_exact":
    return noise.sym_exact(labels, rate, num_classes, rng)[0], uniform_matrix(num_classes, rate)
  if noise_type == "sym_other":
    return (noise.sym_other(labels, rate, num_classes, rng)[0],
            noise.uniform_other_matrix(num_classes, rate))
  if noise_type == "asym":
    if class_map is None:
      raise ValueError("noise_type asym needs a class map (class_map='src:dst,...')")
    return (noise.asym(labels, rate, class_map, asym_generator, rng),
            noise.asym_matrix(class_map, num_classes, rate))
  raise ValueError(f"unknown noise type {noise_type!r}; valid: {', '.join(NOISE_TYPES)}")


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


def _check_meta_size(counts, per_class: int) -> None:
  if per_class < 0:
    raise ValueError(f"meta images per class must be >= 0, got {per_class}")
  if per_class > counts.min():
    c = int(counts.argmin())
    raise ValueError(f"meta set of {per_class} per class is larger than class {c} "
                     f"({counts[c]} images)")


def split_meta(labels, per_class: int, rng: np.random.Generator):
  """Split positions into (meta, rest): ``per_class`` random samples of every class to meta.

  The two index sets are disjoint and cover ``labels``; both are returned sorted.
  """
  labels = np.asarray(labels)
  k = int(labels.max()) + 1
  _check_meta_size(np.bincount(labels, minlength=k), per_class)
  meta = []
  for c in range(k):
    idx = np.flatnonzero(labels == c)
    rng.shuffle(idx)
    meta.append(idx[:per_class])
  meta = np.sort(np.concatenate(meta)).astype(np.int64)
  rest = np.setdiff1d(np.arange(labels.shape[0]), meta)
  return meta, rest


def empirical_matrix(true, noisy, num_classes: int) -> np.ndarray:
  """Row-normalised transition counts ``P(noisy = j | true = i)`` (identity rows where empty)."""
  m = np.zeros((num_classes, num_classes))
  np.add.at(m, (np.asarray(true), np.asarray(noisy)), 1.0)
  rows = m.sum(axis=1, keepdims=True)
  return np.where(rows > 0, m / np.where(rows > 0, rows, 1.0), np.eye(num_classes))


# ---- Legacy replay of the official ``load_corrupted_data.py`` (MW-Net, GDW) -----------------
# Each helper makes the same legacy NumPy / Python ``random`` calls, in the same order, as the
# official dataset constructor, so the draws (not just their distribution) are the official ones.


def legacy_split(labels, num_classes: int, per_class: int, seed: int):
  """``(meta, train, rs)`` as ``CIFAR10.__init__(seed=seed)`` of the official code builds them.

  ``np.random.seed(seed)``; then for each class ``c`` in order: the positions of ``c`` in dataset
  order are shuffled with ``np.random.shuffle`` and the first ``per_class`` go to the meta set,
  the rest to the training set. Both are returned in the official order (grouped by class, in
  shuffled order), with the ``RandomState`` positioned where the constructor continues.
  """
  labels = np.asarray(labels)
  _check_meta_size(np.bincount(labels, minlength=num_classes), per_class)
  rs = np.random.RandomState(seed)
  meta, train = [], []
  for c in range(num_classes):
    ids = np.flatnonzero(labels == c)
    rs.shuffle(ids)  # same permutation as shuffling the official Python list of ids
    meta.append(ids[:per_class])
    train.append(ids[per_class:])
  return np.concatenate(meta), np.concatenate(train), rs


def legacy_flip_matrix(noise_type: str, num_classes: int, rate: float,
                       rs: np.random.RandomState) -> np.ndarray:
  """``flip_labels_C`` / ``flip_labels_C_two``: ``rs`` must be freshly seeded with 1 (the helpers
  call ``np.random.seed(1)``), which is why official flip targets never depend on ``--seed``."""
  c = np.eye(num_classes) * (1.0 - rate)
  rows = np.arange(num_classes)
  for i in range(num_classes):
    if noise_type == "flip":
      c[i][rs.choice(rows[rows != i])] = rate
    else:
      c[i][rs.choice(rows[rows != i], 2, replace=False)] = rate / 2
  return c


def legacy_sample_labels(labels, matrix, rs: np.random.RandomState) -> np.ndarray:
  """``np.random.choice(K, p=matrix[y])`` for each label in order, vectorised.

  Legacy ``choice`` draws one ``random_sample()`` per call and returns
  ``searchsorted(cdf / cdf[-1], u, side='right')``; drawing all ``u`` at once gives the same
  stream, and the cdf arithmetic below is the same.
  """
  labels = np.asarray(labels)
  u = rs.random_sample(labels.shape[0])
  out = np.empty(labels.shape[0], np.int64)
  for c in np.unique(labels):
    cdf = np.asarray(matrix[c], np.float64).cumsum()
    cdf /= cdf[-1]
    sel = labels == c
    out[sel] = cdf.searchsorted(u[sel], side="right")
  return out


def legacy_long_tailed(true_labels, num_classes: int, factor: float, kind: str,
                       seed: int = 1) -> np.ndarray:
  """Positions kept by the GDW code's long-tailed step, on the training set in official order.

  Per class ``c`` in order: its positions (by true label) are shuffled with Python's
  ``random.shuffle`` and the first ``n_c`` kept. Python ``random`` was last seeded with 1 by the
  test-set constructor, which runs just before (``../shared/specs/gdw.md`` §3.3).
  """
  true_labels = np.asarray(true_labels)
  counts = long_tailed_counts(np.bincount(true_labels, minlength=num_classes), factor, kind)
  r = random.Random(seed)
  kept = []
  for c in range(num_classes):
    pos = np.flatnonzero(true_labels == c).tolist()
    r.shuffle(pos)
    kept.extend(pos[:counts[c]])
  return np.sort(np.asarray(kept, np.int64))


class Corruption(NamedTuple):
  """Result of :func:`make_biased_split`; all indices refer to the source's training pool."""
  train_indices: np.ndarray   # positions of the (possibly long-tailed) training set, sorted
  noisy_labels: np.ndarray    # labels the learner sees, aligned with train_indices
  true_labels: np.ndarray     # clean labels, aligned with train_indices
  meta_indices: np.ndarray    # positions of the clean, class-balanced meta set, sorted
  matrix: np.ndarray          # the corruption matrix used (empirical for given noisy labels)
  realised_noise_rate: float  # fraction of training labels that differ from the truth
  class_counts: np.ndarray    # per-class training counts by true label


def make_biased_split(labels, *, num_classes: int, noise_type: str, noise_rate: float,
                      imbalance_factor: float = 1.0, imbalance_type: str = "exp",
                      meta_per_class: int = 10, seed: int = 0, split_rng: str = "numpy",
                      meta_seed: Optional[int] = None,
                      noisy_labels: Optional[np.ndarray] = None,
                      noise_on_given_labels: bool = False,
                      class_map: Optional[Dict[int, int]] = None,
                      asym_generator: str = "dividemix") -> Corruption:
  """Meta split, label noise and long-tailed subsampling of a clean labelled pool.

  Order (as in the official GDW code): the balanced clean meta set is taken out first; the
  rest is corrupted; long-tailed subsampling (by true label) is applied last.

  ``split_rng='numpy'``: everything from ``np.random.default_rng(seed)``. ``'legacy'``: the
  official code's calls replayed (see the module docstring). ``meta_seed``: draw the meta set from
  its own split with that seed (``None``: the same split, so meta and training are disjoint).
  ``noisy_labels``: one given noisy label per pool image, used instead of sampling (needs
  ``noise_type='none'``, or ``noise_on_given_labels`` to add the synthetic noise on top of them:
  hybrid noise); the returned matrix is then the empirical transition matrix (clean -> final
  label) of the final training set. ``class_map`` / ``asym_generator``: for ``asym`` noise
  (:mod:`gdw_jax.data.noise`).
  """
  labels = np.asarray(labels, dtype=np.int64)
  if split_rng not in SPLIT_RNGS:
    raise ValueError(f"unknown split_rng {split_rng!r}; valid: {', '.join(SPLIT_RNGS)}")
  if noisy_labels is not None:
    noisy_labels = np.asarray(noisy_labels, dtype=np.int64)
    if noisy_labels.shape != labels.shape:
      raise ValueError(f"{noisy_labels.shape[0]} given noisy labels for {labels.shape[0]} images")
    if noise_type != "none" and noise_rate > 0 and not noise_on_given_labels:
      raise ValueError(f"noisy labels are given (label file or human labels), so noise_type "
                       f"must be 'none', got {noise_type!r} at rate {noise_rate} (set "
                       f"noise_on_given_labels=True to add it on top of them: hybrid noise)")
  synthetic = noise_type != "none" and noise_rate > 0
  if split_rng == "legacy" and synthetic and (
      noise_type not in MATRIX_NOISE_TYPES or noisy_labels is not None):
    raise ValueError(f"split_rng=legacy replays the MW-Net / GDW code, which has no "
                     f"{'hybrid noise' if noisy_labels is not None else noise_type + ' noise'}; "
                     f"use split_rng=numpy")

  if split_rng == "numpy":
    rng = np.random.default_rng(seed)
    meta_idx, rest = split_meta(labels, meta_per_class, rng)
    if meta_seed is not None:
      meta_idx = split_meta(labels, meta_per_class, np.random.default_rng(meta_seed))[0]
  else:
    meta_idx, rest, rs = legacy_split(labels, num_classes, meta_per_class, seed)
    if meta_seed is not None and meta_seed != seed:
      meta_idx = legacy_split(labels, num_classes, meta_per_class, meta_seed)[0]
  true = labels[rest]

  if noisy_labels is not None:
    noisy, matrix = noisy_labels[rest], None  # empirical, on the final training set below
    if synthetic:  # hybrid: the given label is the source class of the synthetic noise
      noisy = add_noise(noisy, noise_type, noise_rate, num_classes, rng, class_map,
                        asym_generator)[0]
  elif split_rng == "numpy":
    noisy, matrix = add_noise(true, noise_type, noise_rate, num_classes, rng, class_map,
                              asym_generator)
  else:
    if noise_type in ("flip", "flip2") and noise_rate > 0:
      if noise_type == "flip2" and num_classes < 3:
        raise ValueError(f"flip2 noise needs at least 3 classes, got {num_classes}")
      rs = np.random.RandomState(1)
      matrix = legacy_flip_matrix(noise_type, num_classes, noise_rate, rs)
    else:  # uniform / uniform_other / none: no random draw in the matrix
      matrix = corruption_matrix(noise_type, num_classes, noise_rate, None)
    noisy = legacy_sample_labels(true, matrix, rs)

  if imbalance_factor < 1.0:
    if split_rng == "numpy":
      keep = subsample_long_tailed(true, imbalance_factor, imbalance_type, rng)
    else:
      keep = legacy_long_tailed(true, num_classes, imbalance_factor, imbalance_type)
    rest, true, noisy = rest[keep], true[keep], noisy[keep]
  order = np.argsort(rest, kind="stable")  # legacy lists are class-grouped; store sorted
  rest, true, noisy = rest[order], true[order], noisy[order]
  if matrix is None:
    matrix = empirical_matrix(true, noisy, num_classes)
  return Corruption(
      train_indices=rest, noisy_labels=noisy, true_labels=true,
      meta_indices=np.sort(meta_idx).astype(np.int64), matrix=matrix,
      realised_noise_rate=float(np.mean(noisy != true)) if len(true) else 0.0,
      class_counts=np.bincount(true, minlength=num_classes))
