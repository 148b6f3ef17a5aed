"""A CIFAR-shaped synthetic data source for the speed benchmarks (timing does not depend on
pixels): random uint8 32x32x3 images, 10 balanced classes, CIFAR's on-device augmentation and
normalisation. Registered as dataset ``cifar_shaped`` by :func:`cifar_config`.

The config keys ``synthetic_pool`` (training pool: meta set + training set) and
``synthetic_test`` (test images) size it; :func:`cifar_config` sets them.
"""
from __future__ import annotations

import numpy as np

from gdw_jax.data import augment, sources

NAME = "cifar_shaped"


def _cifar_shaped(config) -> sources.Source:
  rng = np.random.default_rng(1234)  # the same images for every seed and process
  n, n_test = int(config.synthetic_pool), int(config.synthetic_test)
  x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  y = rng.permutation(np.arange(n) % 10).astype(np.int64)
  x_test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
  y_test = (np.arange(n_test) % 10).astype(np.int64)
  return sources.Source(NAME, x, y, x_test, y_test, 10, augment=augment.cifar_train_transform,
                        preprocess=augment.normalize)


def register() -> None:
  if NAME not in sources.names():
    sources.register(NAME)(_cifar_shaped)


def cifar_config(pool: int = 50_000, test: int = 10_000, method: str = "gdw",
                 model: str = "resnet32", epochs: int = 1, meta_per_class: int = 100):
  """configs/cifar.py's recipe for ``method`` (ResNet-32, batch 100) on ``pool`` synthetic
  CIFAR-shaped images, ``meta_per_class`` of them per class in the meta set (CIFAR: 100, so a
  50,000 pool gives CIFAR's 49,000 training images, 490 steps per epoch)."""
  from configs import cifar
  register()
  c = cifar.get_config(f"dataset=cifar10,noise=uniform,rate=0.4,method={method}")
  with c.unlocked():
    c.dataset = NAME
    c.synthetic_pool, c.synthetic_test = int(pool), int(test)
  c.model, c.num_epochs = model, int(epochs)
  c.meta_per_class = int(meta_per_class)
  c.progress, c.report = False, False
  return c
