"""PreAct ResNet-18 as CMW-Net's ``PreResNet_MWN.py`` builds it (``mwnet_cmwnet.md`` §4.3).

Stem: conv3x3(3 -> 64) -> BN -> ReLU. Four stages of two pre-activation blocks, widths 64, 128,
256, 512, first-block strides 1, 2, 2, 2. Block:

    a = ReLU(BN(x));  y = conv3x3_s(a);  y = conv3x3(ReLU(BN(y)));  out = y + shortcut

CMW-Net's block computes ``shortcut = self.shortcut(a)`` with an *empty* ``nn.Sequential`` when
shapes match, so its identity shortcut carries the activated ``a``, not ``x`` as in He et al.
(2016). That is the default here (``shortcut_input='activated'``); ``'input'`` gives the textbook
block. A shape change uses a 1x1 strided conv on ``a`` (no BN). Head: 4x4 average pool (global at
32x32 input) -> Linear(512 -> K); no final BN-ReLU.

Init: PyTorch defaults (no explicit init in that file): conv and linear weights
``U(+-1/sqrt(fan_in))`` (``kaiming_uniform(a=sqrt(5))``), linear bias ``U(+-1/sqrt(fan_in))``,
BN ``gamma = 1, beta = 0``, momentum 0.1 (Flax 0.9), eps 1e-5.
"""
from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.models import torch_init

SHORTCUT_INPUTS = ("activated", "input")


class PreActBlock(nn.Module):
  planes: int
  stride: int
  shortcut_input: str = "activated"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    bn = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                 dtype=self.dtype, param_dtype=self.dtype)
    conv = partial(nn.Conv, use_bias=False, kernel_init=torch_init.uniform_fan_in_kernel,
                   dtype=self.dtype, param_dtype=self.dtype)
    a = nn.relu(bn()(x))
    if self.stride != 1 or x.shape[-1] != self.planes:
      shortcut = conv(self.planes, (1, 1), strides=self.stride, padding="VALID")(a)
    else:
      shortcut = a if self.shortcut_input == "activated" else x
    y = conv(self.planes, (3, 3), strides=self.stride, padding=((1, 1), (1, 1)))(a)
    y = conv(self.planes, (3, 3), padding=((1, 1), (1, 1)))(nn.relu(bn()(y)))
    return y + shortcut


class PreActResNet18(nn.Module):
  num_classes: int
  shortcut_input: str = "activated"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.shortcut_input not in SHORTCUT_INPUTS:
      raise ValueError(f"unknown shortcut_input {self.shortcut_input!r}; valid: "
                       f"{', '.join(SHORTCUT_INPUTS)}")
    x = x.astype(self.dtype)
    x = nn.Conv(64, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=torch_init.uniform_fan_in_kernel, dtype=self.dtype,
                param_dtype=self.dtype)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=self.dtype, param_dtype=self.dtype)(x))
    for stage, stride in enumerate((1, 2, 2, 2)):
      for i in range(2):
        x = PreActBlock(64 * 2 ** stage, stride if i == 0 else 1, self.shortcut_input,
                        self.dtype)(x, train)
    x = jnp.mean(x, axis=(1, 2))  # F.avg_pool2d(out, 4) on the 4x4 map
    return nn.Dense(self.num_classes, kernel_init=torch_init.uniform_fan_in_kernel,
                    bias_init=torch_init.uniform_fan_in_bias(x.shape[-1]), dtype=self.dtype,
                    param_dtype=self.dtype)(x)
