"""A user's own data: what the ``npz``, ``folder`` and ``tfds`` sources share.

Each of those sources reads its arrays (training images and labels, optionally a trusted set, a
test set, ids and class names) and hands them to :func:`make_source`, which checks them and
decides the mode:

* **research**: the labels are clean (``given_labels='clean'``) or the true labels come with
  the data (npz ``y_train_true``). The pool's labels are then the truth, and the corruption of
  :mod:`gdw_jax.data.corruption` (noise, long tail, a disjoint class-balanced meta set of
  ``meta_per_class``) applies exactly as for digits and CIFAR.
* **practitioner** (``given_labels='noisy'``, the default): the labels are used as given and the
  truth is unknown. The meta set is the user's trusted set (npz ``x_meta`` / ``y_meta``, folder
  ``meta_root``, tfds ``tfds_meta_split``, or ``trusted_ids``: a file of training ids whose
  labels were checked); :func:`gdw_jax.data.dataset.build` draws it from the given labels only
  with ``meta_from_train=true`` and says so.

Images are NHWC of any size; uint8 images stay uint8 on the host and are normalised on device
with the training pool's per-channel statistics (:func:`gdw_jax.data.augment.image_transforms`;
``image_normalize``, ``image_crop_pad``, ``image_flip``). Float images are normalised the same
way unless ``image_normalize=false`` and no augmentation is asked for: they are then used as
stored (no transform at all, exactly like the digits source).

Every check raises ``ValueError`` with a one-line message that names the file or config key, so
the trainer reports it before anything is written.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from gdw_jax.data import augment, host_transforms, partial, sources
from gdw_jax.data.image_table import ImageTable

SOURCES = ("npz", "folder", "tfds")
GIVEN_LABELS = ("noisy", "clean")
TRUSTED_SET_HOWTO = ("give a trusted set (npz: x_meta/y_meta; folder: meta_root; tfds: "
                     "tfds_meta_split; any source: trusted_ids=FILE with one training id per "
                     "line), or set meta_from_train=true to draw it from the given labels (then "
                     "it is not known to be clean); see docs/own_data.md")


def check_images(x, where: str) -> np.ndarray:
  """``x`` is ``[n, H, W, C]``, uint8 or float, and has no NaN / inf (an
  :class:`~gdw_jax.data.image_table.ImageTable` of streamed images is taken as it is)."""
  if isinstance(x, ImageTable):
    return x
  x = np.asarray(x)
  if x.ndim != 4:
    raise ValueError(f"{where} must be [n, H, W, C] (4-D), got shape {x.shape}"
                     + ("; add a channel axis (x[..., None])" if x.ndim == 3 else ""))
  if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"{where} must be uint8 or float, got {x.dtype}")
  if np.issubdtype(x.dtype, np.floating):
    bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
    if bad.any():
      raise ValueError(f"{where} has NaN or infinite pixels ({int(bad.sum())} images, the "
                       f"first is sample {int(np.argmax(bad))})")
  return x


def check_labels(y, where: str, n: Optional[int] = None,
                 num_classes: Optional[int] = None) -> np.ndarray:
  """``y`` is 1-D, integer-valued, of length ``n`` and in ``[0, num_classes)``; as int64."""
  y = np.asarray(y)
  if y.ndim != 1:
    raise ValueError(f"{where} must be 1-D (one label per image), got shape {y.shape}")
  if n is not None and y.shape[0] != n:
    raise ValueError(f"{where} has {y.shape[0]} labels for {n} images")
  if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
    raise ValueError(f"{where} must hold integer class labels, got dtype {y.dtype}")
  if np.issubdtype(y.dtype, np.floating):
    frac = ~np.isfinite(y) | (y != np.round(y))
    if frac.any():
      i = int(np.argmax(frac))
      raise ValueError(f"{where} holds labels that are not integers (sample {i}: {y[i]})")
  y = y.astype(np.int64)
  if y.size and y.min() < 0:
    raise ValueError(f"{where} has a negative label ({int(y.min())}); labels are class "
                     f"indices 0..num_classes-1")
  if num_classes is not None and y.size and y.max() >= num_classes:
    raise ValueError(f"{where} has label {int(y.max())}, outside [0, {num_classes}) "
                     f"(num_classes = {num_classes})")
  return y


def check_ids(ids, n: int, where: str) -> np.ndarray:
  """One unique id per image, as a str array."""
  ids = np.asarray(ids)
  if ids.shape != (n,):
    raise ValueError(f"{where} must hold one id per training image ({n}), got shape {ids.shape}")
  ids = ids.astype(str)
  uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
  if (counts > 1).any():
    dup = str(uniq[counts > 1][0])
    at = np.flatnonzero(ids == dup)[:2].tolist()
    raise ValueError(f"{where} has duplicate ids: {dup!r} at samples {at[0]} and {at[1]}")
  return ids


def resolve_num_classes(config, class_names: Optional[Sequence[str]], *labels) -> int:
  """``num_classes`` (config), else the number of class names, else the largest label + 1."""
  k = int(config.num_classes)
  if k:
    if class_names is not None and len(class_names) != k:
      raise ValueError(f"num_classes = {k} but the data names {len(class_names)} classes")
    return k
  if class_names is not None:
    return len(class_names)
  return int(max(int(y.max()) for y in labels if y is not None and y.size)) + 1


def channel_stats(config, x_pool) -> tuple:
  """Per-channel ``(mean, std)`` in the pool's pixel units: ``image_mean`` / ``image_std`` (given
  in [0, 1] units, times 255 for uint8 images) if set; else the pool's own statistics, or for
  streamed images (which are not all read) ImageNet's."""
  c = x_pool.shape[-1]
  scale = 255.0 if x_pool.dtype == np.uint8 else 1.0
  mean, std = tuple(config.image_mean), tuple(config.image_std)
  if not mean and isinstance(x_pool, ImageTable):
    if c != 3:
      raise ValueError("input_pipeline=stream with single-channel images: set image_mean and "
                       "image_std (the pool is not read up front to measure them)")
    mean, std = host_transforms.IMAGENET_MEAN, host_transforms.IMAGENET_STD
  if not mean:
    return augment.channel_stats(x_pool)
  if len(mean) != c or len(std) != c:
    raise ValueError(f"image_mean / image_std need one value per channel ({c}), got "
                     f"{len(mean)} / {len(std)}")
  return (np.asarray(mean, np.float32) * scale, np.asarray(std, np.float32) * scale)


def transforms(config, x_pool: np.ndarray):
  """``(augment, preprocess)`` of ``config``'s image options for this pool (None, None: float
  images used as stored). Streamed images arrive cropped and flipped by the host transforms
  (:mod:`gdw_jax.data.host_transforms`): on device they are only normalised."""
  crop, flip, norm = int(config.image_crop_pad), bool(config.image_flip), \
      bool(config.image_normalize)
  if isinstance(x_pool, ImageTable):
    crop, flip = 0, False
  if crop and crop >= min(x_pool.shape[1], x_pool.shape[2]):
    raise ValueError(f"image_crop_pad = {crop} must be smaller than the image "
                     f"({x_pool.shape[1]}x{x_pool.shape[2]})")
  if x_pool.dtype != np.uint8 and not (crop or flip or norm):
    return None, None
  c = x_pool.shape[-1]
  mean, std = (channel_stats(config, x_pool) if norm
               else (np.zeros(c, np.float32), np.ones(c, np.float32)))
  return augment.image_transforms(mean, std, crop, flip)


def _empty_like(x: np.ndarray) -> np.ndarray:
  if isinstance(x, ImageTable):
    return x.empty()
  return np.zeros((0,) + x.shape[1:], x.dtype)


def _as_dtype(x, dtype):
  return x if isinstance(x, ImageTable) else np.asarray(x).astype(dtype, copy=False)


def make_source(config, name: str, x, y, *, y_true=None, x_meta=None, y_meta=None, x_test=None,
                y_test=None, ids=None, class_names=None, where: str = "data",
                info: Optional[Dict[str, Any]] = None,
                extra_tests: Optional[Dict[str, Any]] = None,
                candidates=None) -> sources.Source:
  """Check a user's arrays and build the :class:`~gdw_jax.data.sources.Source` (see the module
  docstring for the modes). ``where``: how messages name the data (``data_path FILE``).
  ``extra_tests``: further test sets, ``name -> (x, y)``, checked like the test set.
  ``candidates``: given candidate sets ``[n, K]`` (each row must hold the given label and the
  known true one)."""
  if config.given_labels not in GIVEN_LABELS:
    raise ValueError(f"unknown given_labels {config.given_labels!r}; valid: "
                     f"{', '.join(GIVEN_LABELS)}")
  x = check_images(x, f"{where}: x_train")
  n = x.shape[0]
  if n == 0:
    raise ValueError(f"{where}: the training set is empty")
  y = check_labels(y, f"{where}: y_train", n)
  if y_true is not None:
    if config.given_labels == "clean":
      raise ValueError(f"{where} gives y_train_true, so y_train are the given noisy labels; "
                       f"drop given_labels=clean")
    y_true = check_labels(y_true, f"{where}: y_train_true", n)
  parts = {}
  for part, xs, ys in (("meta", x_meta, y_meta), ("test", x_test, y_test)):
    if xs is not None:
      xs = check_images(xs, f"{where}: x_{part}")
      if xs.shape[1:] != x.shape[1:]:
        raise ValueError(f"{where}: x_{part} images are {xs.shape[1:]}, training images "
                         f"{x.shape[1:]}")
      if (xs.dtype == np.uint8) != (x.dtype == np.uint8):
        raise ValueError(f"{where}: x_{part} is {xs.dtype} but x_train is {x.dtype}; store "
                         f"both as uint8 or both as float")
      parts[part] = check_labels(ys, f"{where}: y_{part}", xs.shape[0])
  k = resolve_num_classes(config, class_names, y, y_true, *parts.values())
  for what, labels in (("y_train", y), ("y_train_true", y_true),
                       *((f"y_{p}", v) for p, v in parts.items())):
    if labels is not None:
      check_labels(labels, f"{where}: {what}", num_classes=k)
  if x_meta is not None and not len(x_meta):
    raise ValueError(f"{where}: the trusted set (x_meta) is empty")
  ids = None if ids is None else check_ids(ids, n, f"{where}: ids_train")
  if x_test is None:
    x_test, y_test = _empty_like(x), np.zeros(0, np.int64)
    parts["test"] = y_test
  x_test = _as_dtype(x_test, x.dtype)
  if x_meta is not None:
    x_meta = _as_dtype(x_meta, x.dtype)
    y_meta = parts["meta"]
  extras = {}
  for name, (xe, ye) in (extra_tests or {}).items():
    xe = check_images(xe, f"{where}: {name} images")
    if xe.shape[1:] != x.shape[1:]:
      raise ValueError(f"{where}: {name} images are {xe.shape[1:]}, training images "
                       f"{x.shape[1:]}")
    extras[name] = (_as_dtype(xe, x.dtype),
                    check_labels(ye, f"{where}: {name} labels", xe.shape[0], k))
  if candidates is not None:
    candidates = partial.check_candidates(candidates, n, k, f"{where}: candidates", y)
    if y_true is not None:
      partial.check_candidates(candidates, n, k, f"{where}: candidates (vs y_train_true)", y_true)
  aug, pre = transforms(config, x)
  truth_known = y_true is not None or config.given_labels == "clean"
  return sources.Source(
      name, x, y if y_true is None else y_true, x_test, parts["test"], k,
      y_pool_noisy=None if y_true is None else y, augment=aug, preprocess=pre, ids=ids,
      x_meta=x_meta, y_meta=y_meta, truth_known=truth_known,
      class_names=None if class_names is None else tuple(str(c) for c in class_names),
      info=info, extra_tests=extras or None, candidates=candidates)
