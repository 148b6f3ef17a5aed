"""Deterministic batch order: a pure function of (seed, epoch, step), so runs can resume exactly.

Training batches: one seeded permutation per epoch, consecutive slices of ``batch_size`` (the
last batch may be smaller unless ``drop_last``). Meta batches follow the official code: a
shuffled loader over the meta set, re-created at every epoch start and whenever exhausted.
"""
from __future__ import annotations

import functools
import math

import numpy as np


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
  return n // batch_size if drop_last else math.ceil(n / batch_size)


def _perm(seed: int, *keys: int, n: int) -> np.ndarray:
  return _cached_perm(int(seed), tuple(map(int, keys)), int(n))


@functools.lru_cache(maxsize=8)
def _cached_perm(seed: int, keys: tuple, n: int) -> np.ndarray:
  # Drawing a 50k permutation costs ~1 ms, more than the rest of a CIFAR batch's input path;
  # every step of an epoch reuses it. Read-only, so no caller can change a cached order.
  perm = np.random.default_rng([seed, *keys]).permutation(n)
  perm.flags.writeable = False
  return perm


def train_batch_indices(n: int, batch_size: int, seed: int, epoch: int, step: int) -> np.ndarray:
  """Positions of the ``step``-th training batch of ``epoch``."""
  perm = _perm(seed, 0, epoch, n=n)
  return perm[step * batch_size:(step + 1) * batch_size]


def meta_batch_indices(n_meta: int, batch_size: int, seed: int, epoch: int,
                       step: int) -> np.ndarray:
  """Positions of the meta batch drawn at training step ``step`` of ``epoch``."""
  per_pass = math.ceil(n_meta / batch_size)
  restart, j = divmod(step, per_pass)
  perm = _perm(seed, 1, epoch, restart, n=n_meta)
  return perm[j * batch_size:(j + 1) * batch_size]
