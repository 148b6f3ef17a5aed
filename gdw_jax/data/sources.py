"""Clean data sources, looked up by name.

A source returns a :class:`Source`: a clean training pool (from which the meta set and the
noisy training set are drawn) and a clean test split, with images as NHWC arrays.

Sources that store raw images (uint8) also give the transforms that run on device: ``augment``
(``(rng, x) -> x``, inside the jitted train step, on training and meta batches) and
``preprocess`` (``x -> x``, for evaluation). Both are None for data stored ready to use.

A user's own data (``npz``, ``folder``, ``tfds``: :mod:`gdw_jax.data.own`) may come with labels
that are *not* known to be clean (``truth_known=False``: the practitioner's case, where ``y_pool``
holds the labels as given), with a trusted set apart from the pool (``x_meta`` / ``y_meta``) and
with one id per image (``ids``: file paths, the user's own ids), which the end-of-run list of
likely label errors reports. Images may be an :class:`~gdw_jax.data.image_table.ImageTable`
(``input_pipeline=stream``: decoded batch by batch). ``extra_tests`` are further clean test sets
by name (mini-WebVision's ILSVRC12 validation classes), evaluated like the test set.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

from gdw_jax.data import label_files


class Source(NamedTuple):
  name: str
  x_pool: np.ndarray      # [n, H, W, C] training pool (float32 normalised, or uint8 raw)
  y_pool: np.ndarray      # [n] int64 clean labels (truth_known=False: the labels as given)
  x_test: np.ndarray      # [m, H, W, C]; m = 0 when there is no test set
  y_test: np.ndarray
  num_classes: int
  y_pool_noisy: Optional[np.ndarray] = None  # given noisy labels (label file, human noise)
  augment: Optional[Callable] = None         # (rng, x) -> x, train and meta batches, on device
  preprocess: Optional[Callable] = None      # x -> x, evaluation, on device
  ids: Optional[np.ndarray] = None           # [n] str: one id per pool image (default: position)
  x_meta: Optional[np.ndarray] = None        # a trusted set given apart from the pool
  y_meta: Optional[np.ndarray] = None
  truth_known: bool = True                   # False: y_pool are given labels, maybe noisy
  class_names: Optional[Tuple[str, ...]] = None
  info: Optional[Dict[str, Any]] = None      # what data.json should say (e.g. skipped files)
  extra_tests: Optional[Dict[str, Tuple[Any, np.ndarray]]] = None  # more test sets, by name
  candidates: Optional[np.ndarray] = None    # [n, C] bool given candidate sets (data/partial.py)


_SOURCES: Dict[str, Callable[..., Source]] = {}


def register(name: str):
  def deco(fn):
    _SOURCES[name] = fn
    return fn
  return deco


def names():
  return tuple(sorted(_SOURCES))


def load(name: str, config) -> Source:
  if name not in _SOURCES:
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(names())}")
  return _SOURCES[name](config)


@register("digits")
def digits(config) -> Source:
  """scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes), shipped in-package.

  A fixed stratified test split (``digits_test_size`` images, split seed fixed at 0 so every run
  and seed is evaluated on the same clean images); pixels scaled to [0, 1] and standardised with
  the pool's mean and std. ``label_file``: given noisy labels, one per pool image (1,297 with
  the default test split), e.g. the PMD labels of ``experiments/make_pmd_noise.py``.
  """
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  d = load_digits()
  x = (d.images.astype(np.float32) / 16.0)[..., None]
  y = d.target.astype(np.int64)
  # configs/digits.py's key; a config built from base_config gets the digits recipe's 500
  test_size = int(config.get("digits_test_size", 500))
  x_pool, x_test, y_pool, y_test = train_test_split(
      x, y, test_size=test_size, stratify=y, random_state=0)
  mean, std = x_pool.mean(), x_pool.std()
  x_pool = (x_pool - mean) / std
  x_test = (x_test - mean) / std
  noisy = (label_files.load(config.label_file, 10, (y_pool.shape[0],),
                            f"{y_pool.shape[0]} (one per digits pool image)")
           if config.label_file else None)
  return Source("digits", x_pool, y_pool, x_test, y_test, 10, y_pool_noisy=noisy)
