"""CIFAR augmentation and normalisation as jittable functions of uint8 NHWC batches.

The official MW-Net / GDW / CMW-Net training transform (``../shared/specs/gdw.md`` §3.4) is

    ToTensor -> reflect-pad 4 -> RandomCrop 32 -> RandomHorizontalFlip(0.5) -> Normalize

with ``mean = (125.3, 123.0, 113.9) / 255`` and ``std = (63.0, 62.1, 66.7) / 255``; evaluation
only normalises. Padding, cropping and flipping only move pixels (the float -> PIL round trip of
the official code is exact for uint8 values), so they are done here on the uint8 images as one
gather, and the conversion to float happens once, after the crop:

    out[n, r, c] = x[n, R(r + dy_n - 4), R(c' + dx_n - 4)],  c' = 31 - c if flip_n else c

where ``R`` reflects an index into ``[0, 31]`` without repeating the edge (PyTorch / NumPy
``reflect``: ``-1 -> 1``, ``32 -> 30``) and ``dy_n, dx_n`` are uniform in ``{0, ..., 8}`` (every
32x32 window of the 40x40 padded image), drawn per example, as is ``flip_n``.

The same gather serves a user's own images of any ``H, W, C`` (:func:`image_transforms`):
normalisation with the training set's per-channel mean and std (:func:`channel_stats`), and, as
options, the random crop with reflect padding and the horizontal flip (off by default: a flipped
digit or X-ray is not the same class).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

CIFAR_MEAN = np.array([125.3, 123.0, 113.9], np.float32) / 255.0
CIFAR_STD = np.array([63.0, 62.1, 66.7], np.float32) / 255.0
PAD = 4


def normalize(x, mean=CIFAR_MEAN, std=CIFAR_STD):
  """uint8 (or [0, 255]) images -> ``(x / 255 - mean) / std`` in float32."""
  x = jnp.asarray(x).astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _reflect(i, size):
  """Reflect indices in ``[-size + 1, 2 size - 2]`` into ``[0, size - 1]`` (edge not repeated)."""
  i = jnp.abs(i)
  return jnp.where(i > size - 1, 2 * (size - 1) - i, i)


def crop_flip(x, dy, dx, flip, pad: int = PAD):
  """The ``[N, H, W, C]`` crops at offsets ``(dy, dx)`` (each ``[N]``, in ``[0, 2 pad]``) of the
  reflect-padded images, horizontally flipped where ``flip`` (``[N]`` bool). Same dtype as ``x``."""
  n, h, w = x.shape[0], x.shape[1], x.shape[2]
  r = jnp.arange(h)[None, :] + dy[:, None] - pad                     # [N, H]
  c = jnp.arange(w)[None, :]
  c = jnp.where(flip[:, None], w - 1 - c, c) + dx[:, None] - pad     # [N, W]
  rows = _reflect(r, h)[:, :, None]
  cols = _reflect(c, w)[:, None, :]
  return x[jnp.arange(n)[:, None, None], rows, cols]


def random_crop_flip(rng, x, pad: int = PAD, flip: bool = True):
  """Per-example random crop (reflect padding ``pad``) and, if ``flip``, horizontal flip with
  probability 1/2."""
  n = x.shape[0]
  k_dy, k_dx, k_flip = jax.random.split(rng, 3)
  dy = jax.random.randint(k_dy, (n,), 0, 2 * pad + 1)
  dx = jax.random.randint(k_dx, (n,), 0, 2 * pad + 1)
  flips = (jax.random.bernoulli(k_flip, 0.5, (n,)) if flip else jnp.zeros((n,), bool))
  return crop_flip(x, dy, dx, flips, pad)


def cifar_train_transform(rng, x):
  """Training / meta transform: random crop + flip, then normalise."""
  return normalize(random_crop_flip(rng, x))


def cifar_no_augment(rng, x):
  """The official ``--no-augment``: normalise only (the rng is unused)."""
  del rng
  return normalize(x)


def channel_stats(x, chunk: int = 4096):
  """Per-channel ``(mean, std)`` of ``x`` ``[n, H, W, C]`` in its own units (uint8: 0..255), as
  float32; accumulated in float64 chunk by chunk. A constant channel gets std 1."""
  x = np.asarray(x)
  c = x.shape[-1]
  total, total_sq, count = np.zeros(c), np.zeros(c), 0
  for start in range(0, x.shape[0], chunk):
    b = x[start:start + chunk].astype(np.float64).reshape(-1, c)
    total += b.sum(0)
    total_sq += (b * b).sum(0)
    count += b.shape[0]
  mean = total / max(count, 1)
  std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 0.0))
  std = np.where(std > 0, std, 1.0)
  return mean.astype(np.float32), std.astype(np.float32)


def image_transforms(mean, std, crop_pad: int = 0, flip: bool = False):
  """``(augment, preprocess)`` for images of any shape: ``preprocess(x) = (x - mean) / std`` per
  channel (uint8 is first cast to float32; a float input keeps its precision); ``augment(rng,
  x)`` first crops at a random offset of the ``crop_pad``-reflect-padded image and flips with
  probability 1/2 if asked, then preprocesses. Pass ``mean=0, std=1`` for no normalisation."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)

  def preprocess(x):
    x = jnp.asarray(x)
    x = x.astype(jnp.float32) if not jnp.issubdtype(x.dtype, jnp.floating) else x
    return (x - mean.astype(x.dtype)) / std.astype(x.dtype)

  def augment(rng, x):
    if crop_pad or flip:
      x = random_crop_flip(rng, x, crop_pad, flip)
    return preprocess(x)

  return augment, preprocess
