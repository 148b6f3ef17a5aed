"""Inception-ResNet-v2 (Szegedy et al. 2017) in the layout of Cadene's ``pretrainedmodels``
(``inceptionresnetv2.py``), the network of the WebVision experiments (DivideMix's and the papers
that copy its ``InceptionResNetV2.py``, CMW-Net's full-WebVision transfer).

    stem: conv2d_1a 3x3/2 (32) - 2a 3x3 (32) - 2b 3x3 pad 1 (64) - maxpool 3/2 - 3b 1x1 (80) -
          4a 3x3 (192) - maxpool 3/2 - mixed_5b (320)
    repeat:   10 x Block35 (scale 0.17)      mixed_6a (reduction, 1088)
    repeat_1: 20 x Block17 (scale 0.10)      mixed_7a (reduction, 2080)
    repeat_2:  9 x Block8 (scale 0.20), block8 (scale 1, no ReLU), conv2d_7b 1x1 (1536)
    global average pool - last_linear (1536 -> C)

Every ``BasicConv2d`` is conv (no bias) - BN (eps 1e-3, momentum 0.1) - ReLU; a residual block
concatenates its branches, projects them back with a 1x1 conv *with* bias (``conv2d``), adds
``scale`` times that to its input and applies ReLU. 55,843,464 parameters and 60,544 BN running
statistics at 1000 classes (Keras' InceptionResNetV2, the same network with BN without a scale
parameter: 55,873,736 = 55,843,464 - 30,272 BN scales + 60,544 statistics; tested). Inputs of
299x299 in the papers (at least 75x75); Cadene's final ``AvgPool2d(8)`` is the global average at
299 px, so a global mean is used at any size.

Faithfulness: module names are the state-dict names with ``.<index>`` -> ``_<index>``
(``repeat_1.3.branch1.2.conv`` -> ``repeat_1_3/branch1_2/conv``), so Cadene / DivideMix
checkpoints load with ``--config.init_from`` (head ``last_linear``); PyTorch padding and pooling
(``AvgPool2d(3, 1, 1, count_include_pad=False)``; max-pools without padding); PyTorch's default
initialisation (conv and linear ``U(+-1/sqrt(fan_in))``), as the reference code has no own.
Mixed precision as the other ImageNet-size models (:mod:`gdw_jax.models.precision`).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.models import torch_init
from gdw_jax.models.heads import classifier_head, head_kind
from gdw_jax.models.precision import compute_dtype, torch_batch_norm

BN_EPS = 1e-3  # BasicConv2d's BatchNorm2d(eps=0.001)


class BasicConv(nn.Module):
  """``BasicConv2d``: conv (no bias) - BN - ReLU. ``kernel`` and ``pad`` are (H, W)."""
  features: int
  kernel: Tuple[int, int]
  stride: int = 1
  pad: Tuple[int, int] = (0, 0)
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(self.features, self.kernel, strides=(self.stride, self.stride),
                padding=tuple((p, p) for p in self.pad), use_bias=False,
                kernel_init=torch_init.uniform_fan_in_kernel, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(x)
    return nn.relu(torch_batch_norm(x, train, "bn", self.param_dtype, self.bn_running_var,
                                    epsilon=BN_EPS))


def _max_pool(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class _Block(nn.Module):
  """Shared by the blocks below: ``self.conv(features, kernel, stride, pad, name)``."""
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def conv(self, features, kernel, stride=1, pad=0, *, name):
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    return BasicConv(features, pair(kernel), stride, pair(pad), self.bn_running_var, self.dtype,
                     self.param_dtype, name=name)

  def branch(self, x, train, name, layers):
    """A ``nn.Sequential`` branch of BasicConv2d ``(features, kernel, stride, pad)`` layers,
    named ``name_<index>``."""
    for i, (features, kernel, stride, pad) in enumerate(layers):
      x = self.conv(features, kernel, stride, pad, name=f"{name}_{i}")(x, train)
    return x

  def project(self, x, features: int):
    """The residual blocks' ``conv2d``: a 1x1 conv with bias back to the input's width."""
    return nn.Conv(features, (1, 1), kernel_init=torch_init.uniform_fan_in_kernel,
                   bias_init=torch_init.uniform_fan_in_bias(x.shape[-1]), dtype=self.dtype,
                   param_dtype=self.param_dtype, name="conv2d")(x)


class Mixed5b(_Block):
  @nn.compact
  def __call__(self, x, train: bool):
    b0 = self.conv(96, 1, name="branch0")(x, train)
    b1 = self.branch(x, train, "branch1", [(48, 1, 1, 0), (64, 5, 1, 2)])
    b2 = self.branch(x, train, "branch2", [(64, 1, 1, 0), (96, 3, 1, 1), (96, 3, 1, 1)])
    pooled = nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                         count_include_pad=False)
    b3 = self.conv(64, 1, name="branch3_1")(pooled, train)  # branch3.0 is the pooling
    return jnp.concatenate([b0, b1, b2, b3], -1)


class Block35(_Block):
  scale: float = 0.17

  @nn.compact
  def __call__(self, x, train: bool):
    b0 = self.conv(32, 1, name="branch0")(x, train)
    b1 = self.branch(x, train, "branch1", [(32, 1, 1, 0), (32, 3, 1, 1)])
    b2 = self.branch(x, train, "branch2", [(32, 1, 1, 0), (48, 3, 1, 1), (64, 3, 1, 1)])
    out = self.project(jnp.concatenate([b0, b1, b2], -1), x.shape[-1])
    return nn.relu(out * self.scale + x)


class Mixed6a(_Block):
  @nn.compact
  def __call__(self, x, train: bool):
    b0 = self.conv(384, 3, 2, name="branch0")(x, train)
    b1 = self.branch(x, train, "branch1", [(256, 1, 1, 0), (256, 3, 1, 1), (384, 3, 2, 0)])
    return jnp.concatenate([b0, b1, _max_pool(x)], -1)


class Block17(_Block):
  scale: float = 0.10

  @nn.compact
  def __call__(self, x, train: bool):
    b0 = self.conv(192, 1, name="branch0")(x, train)
    b1 = self.branch(x, train, "branch1", [(128, 1, 1, 0), (160, (1, 7), 1, (0, 3)),
                                           (192, (7, 1), 1, (3, 0))])
    out = self.project(jnp.concatenate([b0, b1], -1), x.shape[-1])
    return nn.relu(out * self.scale + x)


class Mixed7a(_Block):
  @nn.compact
  def __call__(self, x, train: bool):
    b0 = self.branch(x, train, "branch0", [(256, 1, 1, 0), (384, 3, 2, 0)])
    b1 = self.branch(x, train, "branch1", [(256, 1, 1, 0), (288, 3, 2, 0)])
    b2 = self.branch(x, train, "branch2", [(256, 1, 1, 0), (288, 3, 1, 1), (320, 3, 2, 0)])
    return jnp.concatenate([b0, b1, b2, _max_pool(x)], -1)


class Block8(_Block):
  scale: float = 0.20
  relu: bool = True  # the last one (``block8``, scale 1) has none

  @nn.compact
  def __call__(self, x, train: bool):
    b0 = self.conv(192, 1, name="branch0")(x, train)
    b1 = self.branch(x, train, "branch1", [(192, 1, 1, 0), (224, (1, 3), 1, (0, 1)),
                                           (256, (3, 1), 1, (1, 0))])
    out = self.project(jnp.concatenate([b0, b1], -1), x.shape[-1]) * self.scale + x
    return nn.relu(out) if self.relu else out


class InceptionResNetV2(nn.Module):
  """NHWC input; ``repeats`` = the numbers of Block35 / Block17 / Block8 (10, 20, 9; smaller
  for tests)."""
  num_classes: int
  repeats: Sequence[int] = (10, 20, 9)
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32        # compute dtype
  param_dtype: jnp.dtype = jnp.float32
  head: str = "linear"

  @nn.compact
  def __call__(self, x, train: bool = True):
    kw = dict(bn_running_var=self.bn_running_var, dtype=self.dtype, param_dtype=self.param_dtype)
    conv = partial(BasicConv, **kw)
    x = x.astype(self.dtype)
    x = conv(32, (3, 3), 2, name="conv2d_1a")(x, train)
    x = conv(32, (3, 3), name="conv2d_2a")(x, train)
    x = conv(64, (3, 3), pad=(1, 1), name="conv2d_2b")(x, train)
    x = conv(80, (1, 1), name="conv2d_3b")(_max_pool(x), train)
    x = conv(192, (3, 3), name="conv2d_4a")(x, train)
    x = Mixed5b(**kw, name="mixed_5b")(_max_pool(x), train)
    for i in range(self.repeats[0]):
      x = Block35(**kw, name=f"repeat_{i}")(x, train)
    x = Mixed6a(**kw, name="mixed_6a")(x, train)
    for i in range(self.repeats[1]):
      x = Block17(**kw, name=f"repeat_1_{i}")(x, train)
    x = Mixed7a(**kw, name="mixed_7a")(x, train)
    for i in range(self.repeats[2]):
      x = Block8(**kw, name=f"repeat_2_{i}")(x, train)
    x = Block8(**kw, scale=1.0, relu=False, name="block8")(x, train)
    x = conv(1536, (1, 1), name="conv2d_7b")(x, train)
    x = jnp.mean(x.astype(self.param_dtype), axis=(1, 2))
    return classifier_head(self.head, self.num_classes, self.param_dtype, name="last_linear",
                           kernel_init=torch_init.uniform_fan_in_kernel,
                           bias_init=torch_init.uniform_fan_in_bias(x.shape[-1]))(x)


def inception_resnet_v2(num_classes: int, config=None, dtype=jnp.float32) -> InceptionResNetV2:
  """Registry factory, like ``resnet50``: parameters in ``dtype``, compute in
  ``config.compute_dtype``; reads ``config.bn_running_var`` and ``config.classifier_head``."""
  config = config or {}
  return InceptionResNetV2(num_classes, (10, 20, 9), config.get("bn_running_var", "unbiased"),
                           compute_dtype(config, dtype), jnp.dtype(dtype), head_kind(config))
