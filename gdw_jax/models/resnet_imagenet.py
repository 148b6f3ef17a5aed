"""ResNet-50 in torchvision's layout, for ImageNet-size inputs and pretrained weights.

    conv7x7/2 (3 -> 64, pad 3) - BN - ReLU - maxpool 3x3/2 (pad 1)
    layer1..4: 3, 4, 6, 3 Bottleneck blocks, widths 64, 128, 256, 512 (x 4 out), first-block
               strides 1, 2, 2, 2
    global average pool - fc (2048 -> C)

Bottleneck (torchvision's "ResNet v1.5"): conv1x1 - BN - ReLU - conv3x3 (**stride here**) - BN -
ReLU - conv1x1 (x 4) - BN, plus the shortcut, then ReLU. The shortcut is the identity, or on the
first block of each layer a projection ``downsample.0`` (conv1x1, stride s) + ``downsample.1``
(BN). 25,557,032 parameters at 1000 classes. CMW-Net's mini-WebVision ResNet-50 (``SupCEResNet``
with ``pool=True``) and ABSGD's Clothing1M backbone are this network.

Faithfulness (so torchvision checkpoints load by name, :mod:`gdw_jax.interop`): module names are
the state-dict names with ``.<index>`` -> ``_<index>`` (``layer2_0/downsample_0``); every conv
pads explicitly as PyTorch does (Flax "SAME" pads (0, 1) at stride 2 on even inputs); BN is
``torch.nn.BatchNorm2d`` (eps 1e-5, momentum 0.1, unbiased running variance; ``TorchBatchNorm``);
torchvision's init: conv kernels ``N(0, 2 / fan_out)`` untruncated, BN 1 / 0, ``fc`` the
PyTorch ``nn.Linear`` default ``U(+-1/sqrt(2048))`` for weight and bias.

Mixed precision (:mod:`gdw_jax.models.precision`): ``dtype`` is the compute dtype,
``param_dtype`` the parameters'; BN, the pooling and ``fc`` run in ``param_dtype``, so the logits
come back in ``param_dtype``.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.models import torch_init
from gdw_jax.models.heads import classifier_head, head_kind
from gdw_jax.models.precision import compute_dtype, torch_batch_norm

# torchvision's kaiming_normal_(mode='fan_out', nonlinearity='relu'): N(0, 2 / (kh kw out)).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(features, kernel, stride, pad, dtype, param_dtype, name):
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False, kernel_init=conv_init,
                 dtype=dtype, param_dtype=param_dtype, name=name)


class Bottleneck(nn.Module):
  """torchvision's ``Bottleneck``: 1x1 -> 3x3 (stride) -> 1x1 (x 4), projection if needed."""
  planes: int
  stride: int = 1
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = partial(_conv, dtype=self.dtype, param_dtype=self.param_dtype)
    bn = partial(torch_batch_norm, train=train, param_dtype=self.param_dtype,
                 running_var=self.bn_running_var)
    out = nn.relu(bn(conv(self.planes, 1, 1, 0, name="conv1")(x), name="bn1"))
    out = nn.relu(bn(conv(self.planes, 3, self.stride, 1, name="conv2")(out), name="bn2"))
    out = bn(conv(4 * self.planes, 1, 1, 0, name="conv3")(out), name="bn3")
    shortcut = x
    if self.stride != 1 or x.shape[-1] != 4 * self.planes:
      shortcut = bn(conv(4 * self.planes, 1, self.stride, 0, name="downsample_0")(x),
                    name="downsample_1")
    return nn.relu(out + shortcut)


class ResNet(nn.Module):
  """torchvision's bottleneck ResNet (NHWC input); ``stages=(3, 4, 6, 3)`` is ResNet-50."""
  num_classes: int
  stages: Sequence[int] = (3, 4, 6, 3)
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32        # compute dtype
  param_dtype: jnp.dtype = jnp.float32
  head: str = "linear"                  # or "cosine" (LDAM's NormedLinear)

  @nn.compact
  def __call__(self, x, train: bool = True):
    bn = partial(torch_batch_norm, train=train, param_dtype=self.param_dtype,
                 running_var=self.bn_running_var)
    x = x.astype(self.dtype)
    x = _conv(64, 7, 2, 3, self.dtype, self.param_dtype, "conv1")(x)
    x = nn.relu(bn(x, name="bn1"))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, blocks in enumerate(self.stages):
      for b in range(blocks):
        stride = 2 if stage > 0 and b == 0 else 1
        x = Bottleneck(64 * 2 ** stage, stride, self.bn_running_var, self.dtype,
                       self.param_dtype, name=f"layer{stage + 1}_{b}")(x, train)
    x = jnp.mean(x.astype(self.param_dtype), axis=(1, 2))
    return classifier_head(self.head, self.num_classes, self.param_dtype, name="fc",
                           kernel_init=torch_init.uniform_fan_in_kernel,
                           bias_init=torch_init.uniform_fan_in_bias(x.shape[-1]))(x)


def resnet50(num_classes: int, config=None, dtype=jnp.float32) -> ResNet:
  """Registry factory: parameters in ``dtype``, compute in ``config.compute_dtype``; reads
  ``config.bn_running_var`` and ``config.classifier_head`` like ``resnet32``."""
  config = config or {}
  return ResNet(num_classes, (3, 4, 6, 3), config.get("bn_running_var", "unbiased"),
                compute_dtype(config, dtype), jnp.dtype(dtype), head_kind(config))
