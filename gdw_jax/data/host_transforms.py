"""ImageNet-style image transforms on the host (Pillow + NumPy), for the streaming input path.

The in-memory path keeps decoded uint8 images of one size and augments them on device
(:mod:`gdw_jax.data.augment`). Data that do not fit in memory are decoded per batch in worker
processes (:mod:`gdw_jax.data.stream`), and there the torchvision transforms of the real-noise
recipes run, on each decoded ``PIL.Image``, before the images are stacked into a uint8 batch
(normalisation stays on device, so a batch travels as uint8):

* training: ``Resize(resize)`` (shorter side; ``resize = 0``: straight to ``size x size``), then
  ``RandomCrop(size)`` (``crop='random'``) or ``CenterCrop(size)`` (``'center'``), or instead of
  both ``RandomResizedCrop(size, scale=(scale_min, 1), ratio=(3/4, 4/3))``
  (``'random_resized'``); then ``RandomHorizontalFlip`` (``flip``) and ``ColorJitter(j, j, j)``
  (``jitter = j > 0``: brightness, contrast and saturation factors uniform in ``[1 - j, 1 + j]``,
  applied in a random order; no hue jitter);
* evaluation: ``Resize(resize)`` + ``CenterCrop(size)`` (``resize = 0``: ``size x size``).

Every random choice of an image comes from ``numpy.random.default_rng(key)`` with ``key =
(seed, stream, epoch, step, position)`` (:func:`image_key`), so a transformed image is a pure
function of where it sits in the run, whatever worker process or host makes it. The geometry
follows torchvision's definitions (``RandomResizedCrop.get_params``' ten tries and its
centre-crop fallback; ``CenterCrop``'s rounding); resizing is Pillow's bilinear (antialiased),
as torchvision's PIL backend.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageEnhance

CROPS = ("random", "center", "random_resized")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Random streams of a step: the training batch and the meta batch draw independently.
TRAIN, META = 0, 1


def image_key(seed: int, stream: int, epoch: int, step: int, position: int) -> Tuple[int, ...]:
  """The RNG key of the image at ``position`` of ``stream``'s batch at ``(epoch, step)``."""
  return (int(seed), int(stream), int(epoch), int(step), int(position))


@dataclasses.dataclass(frozen=True)
class Transform:
  """One image transform (see the module docstring). ``train=False``: evaluation (no
  randomness; ``crop``, ``flip``, ``jitter`` and ``scale_min`` are unused)."""
  size: int                    # output size (square)
  resize: int = 0              # shorter side before the crop; 0: resize to size x size
  crop: str = "random"         # training: random | center | random_resized
  flip: bool = False
  jitter: float = 0.0
  scale_min: float = 0.08
  channels: int = 3            # 1 (grayscale) or 3 (RGB)
  train: bool = True

  def __call__(self, im, key: Optional[Sequence[int]] = None) -> np.ndarray:
    """``[size, size, channels]`` uint8 from a ``PIL.Image`` (any mode)."""
    im = im.convert("L" if self.channels == 1 else "RGB")
    rng = np.random.default_rng(list(key)) if self.train else None
    if self.train and self.crop == "random_resized":
      top, left, h, w = random_resized_box(rng, im.height, im.width, self.scale_min)
      im = im.resize((self.size, self.size), Image.Resampling.BILINEAR,
                     box=(left, top, left + w, top + h))
    else:
      im = resize_shorter(im, self.resize) if self.resize else \
          im.resize((self.size, self.size), Image.Resampling.BILINEAR)
      if im.size != (self.size, self.size):
        if self.train and self.crop == "random":
          top, left = random_crop_corner(rng, im.height, im.width, self.size)
        else:
          top, left = center_crop_corner(im.height, im.width, self.size)
        im = im.crop((left, top, left + self.size, top + self.size))
    if self.train and self.flip and rng.random() < 0.5:
      im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if self.train and self.jitter > 0:
      im = color_jitter(rng, im, self.jitter)
    a = np.asarray(im, np.uint8)
    return a[..., None] if a.ndim == 2 else a


def resize_shorter(im, size: int):
  """torchvision ``Resize(size)``: the shorter side to ``size``, the longer one
  ``int(size * long / short)`` (bilinear)."""
  w, h = im.size
  if min(w, h) == size:
    return im
  if w <= h:
    new = (size, int(size * h / w))
  else:
    new = (int(size * w / h), size)
  return im.resize(new, Image.Resampling.BILINEAR)


def center_crop_corner(h: int, w: int, size: int) -> Tuple[int, int]:
  """``(top, left)`` of torchvision's ``CenterCrop(size)`` (the image must be >= size)."""
  if h < size or w < size:
    raise ValueError(f"image of {h}x{w} is smaller than the crop {size}; set image_resize >= "
                     f"image_size")
  return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def random_crop_corner(rng, h: int, w: int, size: int) -> Tuple[int, int]:
  """``(top, left)`` uniform over every ``size x size`` window (``RandomCrop``)."""
  if h < size or w < size:
    raise ValueError(f"image of {h}x{w} is smaller than the crop {size}; set image_resize >= "
                     f"image_size")
  return int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))


def random_resized_box(rng, h: int, w: int, scale_min: float = 0.08,
                       ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> Tuple[int, int, int, int]:
  """``(top, left, height, width)`` of ``RandomResizedCrop.get_params``: up to ten tries of an
  area fraction ``U(scale_min, 1)`` and a log-uniform aspect ratio, else a centre crop of the
  whole image clamped to the ratio range."""
  area = h * w
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(scale_min, 1.0)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw = int(round(math.sqrt(target * aspect)))
    ch = int(round(math.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
  in_ratio = w / h
  if in_ratio < ratio[0]:
    cw, ch = w, int(round(w / ratio[0]))
  elif in_ratio > ratio[1]:
    ch, cw = h, int(round(h * ratio[1]))
  else:
    cw, ch = w, h
  return (h - ch) // 2, (w - cw) // 2, ch, cw


def color_jitter(rng, im, strength: float):
  """Brightness, contrast and saturation, each by a factor ``U(max(0, 1 - s), 1 + s)``, in a
  random order (Pillow's ``ImageEnhance``, as torchvision's PIL path)."""
  ops = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
  lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
  factors = rng.uniform(lo, hi, size=3)
  for i in rng.permutation(3):
    if ops[i] is ImageEnhance.Color and im.mode == "L":
      continue  # saturation of a grayscale image is a no-op
    im = ops[i](im).enhance(float(factors[i]))
  return im


def from_config(config, channels: int = 3) -> Tuple[Transform, Transform]:
  """``(train, eval)`` transforms of ``config``'s ``image_*`` keys (streaming input)."""
  size, resize = int(config.image_size), int(config.image_resize)
  common = dict(size=size, resize=resize, channels=channels)
  train = Transform(crop=config.image_train_crop, flip=bool(config.image_flip),
                    jitter=float(config.image_color_jitter),
                    scale_min=float(config.image_scale_min), train=True, **common)
  return train, Transform(train=False, **common)
