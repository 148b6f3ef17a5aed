"""Wide ResNet (Zagoruyko & Komodakis 2016) as in MW-Net's ``wideresnet.py``: WRN-28-10.

``../shared/specs/mwnet_cmwnet.md`` §3.2. Depth ``d = 6 n + 4`` (``n`` blocks per stage), widths
``16 -> 16k, 32k, 64k`` (``k`` = widen factor), first-block strides 1, 2, 2. Pre-activation block:

    a = ReLU(BN(x));  y = conv3x3_s(a);  y = conv3x3(ReLU(BN(y)));  out = y + shortcut

with ``shortcut = x`` when the width is unchanged, else ``conv1x1_s(a)`` (the projection takes the
*activated* input, as the official code does). Head: BN -> ReLU -> global average pool (8x8) ->
Linear. Dropout: the MW-Net runs use rate 0, so there is none.

Init (official): conv kernels ``N(0, 2 / (k * k * out_channels))`` (fan_out, untruncated); BN
``gamma = 1, beta = 0``; linear weight PyTorch default ``U(+-1/sqrt(fan_in))``, bias 0.
BN momentum 0.1 in PyTorch terms (0.9 in Flax), eps 1e-5.
"""
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.models import torch_init

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # untruncated


class WideBlock(nn.Module):
  out_planes: int
  stride: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    bn = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                 dtype=self.dtype, param_dtype=self.dtype)
    conv = partial(nn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype,
                   param_dtype=self.dtype)
    a = nn.relu(bn()(x))
    y = conv(self.out_planes, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)))(a)
    y = nn.relu(bn()(y))
    y = conv(self.out_planes, (3, 3), padding=((1, 1), (1, 1)))(y)
    if x.shape[-1] == self.out_planes:
      return x + y
    return conv(self.out_planes, (1, 1), strides=self.stride, padding="VALID")(a) + y


class WideResNet(nn.Module):
  num_classes: int
  depth: int = 28
  widen: int = 10
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    if (self.depth - 4) % 6:
      raise ValueError(f"WRN depth must be 6n + 4, got {self.depth}")
    n = (self.depth - 4) // 6
    x = x.astype(self.dtype)
    x = nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, kernel_init=_conv_init,
                dtype=self.dtype, param_dtype=self.dtype)(x)
    for stage, stride in enumerate((1, 2, 2)):
      for i in range(n):
        x = WideBlock(16 * 2 ** stage * self.widen, stride if i == 0 else 1, self.dtype)(x, train)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     param_dtype=self.dtype)(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=torch_init.uniform_fan_in_kernel,
                    bias_init=nn.initializers.zeros, dtype=self.dtype, param_dtype=self.dtype)(x)
