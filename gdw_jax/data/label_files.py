"""Given noisy labels from a ``.npy`` file (``label_file=``), for any source.

One integer label per training-pool image, in the source's pool order. Used by the digits source
(e.g. the PMD labels ``experiments/make_pmd_noise.py`` writes) and by CIFAR (PLC's files, which
also accept their 45,000-image length, :func:`gdw_jax.data.cifar.load_label_file`).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def load(path: str, num_classes: int, lengths: Sequence[int], what: str = "") -> np.ndarray:
  """The int64 labels of ``path``; its length must be one of ``lengths`` (``what`` says what
  each length means, for the error) and every label in ``0..num_classes - 1``."""
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise ValueError(f"label file {path} does not exist")
  try:
    labels = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise ValueError(f"label file {path} is not a .npy array: {e}") from None
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"label file {path} must hold a 1-D integer array, got shape "
                     f"{labels.shape} dtype {labels.dtype}")
  if labels.shape[0] not in tuple(lengths):
    raise ValueError(f"label file {path} has {labels.shape[0]} labels; expected "
                     f"{what or ' or '.join(map(str, lengths))}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"label file {path} has labels in [{labels.min()}, {labels.max()}]; "
                     f"this dataset has {num_classes} classes (0..{num_classes - 1})")
  return labels.astype(np.int64)
