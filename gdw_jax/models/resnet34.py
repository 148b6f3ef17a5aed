"""ResNet-34 for CIFAR as the PMD-noise and ABSGD label-noise codes define it.

The "kuangliu" CIFAR ResNet (post-activation BasicBlocks, 1x1-conv + BN projection shortcuts,
no max-pool):

    conv3x3(3 -> 64, stride 1, padding p) - BN - ReLU
    4 stages of BasicBlocks, [3, 4, 6, 3] blocks, widths 64 / 128 / 256 / 512, strides 1 / 2 / 2 / 2
    global average pool - Linear(512 -> K)

BasicBlock: conv3x3(stride s) - BN - ReLU - conv3x3 - BN - (+ shortcut) - ReLU; the shortcut is
the identity, or conv1x1(stride s) - BN where the shape changes. 21,282,122 parameters for 10
classes (``tests/test_resnet34.py`` counts them from the PyTorch definitions).

Three official files hold it (``../shared/specs/mwnet_cmwnet.md`` §4.3, §5;
``absgd_and_imbalance_losses.md`` §1.7):

* PLC ``networks/preact_resnet.py: preact_resnet34`` (the PMD clean model): despite the file and
  function names its blocks are the post-activation ones above; stem padding 1, ``avg_pool2d(4)``
  on the 4x4 map. Registered as ``resnet34``.
* ABSGD ``noisy_label/model.py: ResNet34`` (CIFAR-100 label noise): the same definition,
  ``resnet34``.
* CMW-Net ``section4/Feature-dependent_Label_Noise/resnet.py: ResNet34`` (its PMD tables): stem
  padding **0** (32x32 -> 30x30, then 15, 8, 4) and adaptive average pooling; same parameters.
  Registered as ``resnet34_cmwnet``.

Init: none of the three files initialises explicitly (PLC's ``initialize_weights`` is never
called), so PyTorch's defaults: conv and linear weights ``U(+-1/sqrt(fan_in))``
(``kaiming_uniform(a=sqrt(5))``), linear bias ``U(+-1/sqrt(fan_in))``, BN ``gamma = 1,
beta = 0``. BN is :class:`~gdw_jax.models.resnet_cifar.TorchBatchNorm` (PyTorch momentum 0.1,
eps 1e-5, running variance from the unbiased batch variance). Module names follow the PyTorch
state-dict names with ``.`` -> ``_`` (``layer2_0/shortcut_0``).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.models import torch_init
from gdw_jax.models.heads import classifier_head, head_kind
from gdw_jax.models.resnet_cifar import TorchBatchNorm


def _conv(features, kernel, stride, padding, dtype, name):
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), use_bias=False,
                 kernel_init=torch_init.uniform_fan_in_kernel, dtype=dtype, param_dtype=dtype,
                 name=name)


class ProjectionBlock(nn.Module):
  """Post-activation BasicBlock with a conv1x1 + BN shortcut where the shape changes."""
  planes: int
  stride: int = 1
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: TorchBatchNorm(running_var=self.bn_running_var, dtype=self.dtype, name=name)
    out = nn.relu(bn("bn1")(_conv(self.planes, 3, self.stride, 1, self.dtype, "conv1")(x), train))
    out = bn("bn2")(_conv(self.planes, 3, 1, 1, self.dtype, "conv2")(out), train)
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.planes:
      shortcut = bn("shortcut_1")(
          _conv(self.planes, 1, self.stride, 0, self.dtype, "shortcut_0")(x), train)
    return nn.relu(out + shortcut)


class CifarResNetProj(nn.Module):
  """The kuangliu CIFAR ResNet with ``blocks`` BasicBlocks per stage (``(3, 4, 6, 3)``: 34)."""
  num_classes: int
  blocks: Sequence[int] = (3, 4, 6, 3)
  stem_padding: int = 1
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32
  head: str = "linear"

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.astype(self.dtype)
    x = _conv(64, 3, 1, self.stem_padding, self.dtype, "conv1")(x)
    x = nn.relu(TorchBatchNorm(running_var=self.bn_running_var, dtype=self.dtype,
                               name="bn1")(x, train))
    for stage, n in enumerate(self.blocks):
      for b in range(n):
        stride = 2 if stage > 0 and b == 0 else 1
        x = ProjectionBlock(64 * 2 ** stage, stride, self.bn_running_var, self.dtype,
                            name=f"layer{stage + 1}_{b}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return classifier_head(self.head, self.num_classes, self.dtype, name="linear",
                           kernel_init=torch_init.uniform_fan_in_kernel,
                           bias_init=torch_init.uniform_fan_in_bias(x.shape[-1]))(x)


def resnet34(num_classes: int, config=None, dtype=jnp.float32) -> CifarResNetProj:
  """PLC's / ABSGD's CIFAR ResNet-34 (stem padding 1)."""
  config = config or {}
  return CifarResNetProj(num_classes, stem_padding=1,
                         bn_running_var=config.get("bn_running_var", "unbiased"), dtype=dtype,
                         head=head_kind(config))


def resnet34_cmwnet(num_classes: int, config=None, dtype=jnp.float32) -> CifarResNetProj:
  """CMW-Net's feature-dependent-noise ResNet-34 (stem padding 0)."""
  config = config or {}
  return CifarResNetProj(num_classes, stem_padding=0,
                         bn_running_var=config.get("bn_running_var", "unbiased"), dtype=dtype,
                         head=head_kind(config))


class SCECNN(nn.Module):
  """The 8-layer CNN of the SCE paper that ABSGD trains on noisy CIFAR-10 (``SCEModel``).

      [conv3x3(+bias) - BN - ReLU] x 2, max-pool 2     widths 64, 128, 196 for the 3 blocks
      flatten (C, H, W order, as PyTorch's view) - fc1: Linear(3136 -> 256) - BN1d - ReLU
      fc2: Linear(256 -> K)

  PyTorch default init (weights and biases ``U(+-1/sqrt(fan_in))``, BN 1 / 0). ``fc1`` and
  ``fc1_bn`` are the parameters ABSGD's code gives weight decay 0.01
  (``weight_decay_overrides='fc1:0.01'``). 1,639,794 parameters for 10 classes.
  """
  num_classes: int
  widths: Sequence[int] = (64, 128, 196)
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.astype(self.dtype)
    bn = lambda name: TorchBatchNorm(running_var=self.bn_running_var, dtype=self.dtype, name=name)
    for b, w in enumerate(self.widths):
      for i in range(2):
        conv = nn.Conv(w, (3, 3), padding=((1, 1), (1, 1)),
                       kernel_init=torch_init.uniform_fan_in_kernel,
                       bias_init=torch_init.uniform_fan_in_bias(9 * x.shape[-1]),
                       dtype=self.dtype, param_dtype=self.dtype, name=f"block{b + 1}_{i}_conv")
        x = nn.relu(bn(f"block{b + 1}_{i}_bn")(conv(x), train))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
    dense = lambda n, name: nn.Dense(
        n, kernel_init=torch_init.uniform_fan_in_kernel,
        bias_init=torch_init.uniform_fan_in_bias(x.shape[-1] if name == "fc1" else 256),
        dtype=self.dtype, param_dtype=self.dtype, name=name)
    x = nn.relu(bn("fc1_bn")(dense(256, "fc1")(x), train))
    return dense(self.num_classes, "fc2")(x)


def sce_cnn(num_classes: int, config=None, dtype=jnp.float32) -> SCECNN:
  config = config or {}
  return SCECNN(num_classes, bn_running_var=config.get("bn_running_var", "unbiased"),
                dtype=dtype)
