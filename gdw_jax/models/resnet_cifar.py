"""ResNet-32 for CIFAR exactly as the official GDW / MW-Net ``resnet.py`` ("option A" shortcuts).

    conv3x3(3 -> 16) - BN - ReLU
    3 stages x 5 BasicBlocks, widths 16 / 32 / 64, stride 2 in the first block of stages 2 and 3
    global average pool - Linear(64 -> C)

BasicBlock: conv3x3(stride s) - BN - ReLU - conv3x3 - BN - (+ shortcut) - ReLU. The shortcut is
the identity, or, where the shape changes, the parameter-free option A: keep every other pixel
(``x[:, ::2, ::2]``) and zero-pad ``planes // 4`` channels on each side. 464,154 parameters for
10 classes.

Faithfulness details (``../shared/specs/gdw.md`` §2.1):
- every 3x3 conv pads ((1, 1), (1, 1)) explicitly: Flax's "SAME" pads (0, 1) for stride 2 on even
  inputs, which would sample different pixels than the ``::2`` shortcut and PyTorch;
- PyTorch init: conv / linear weights untruncated Kaiming-normal (fan_in, gain sqrt 2), linear
  bias U(+-1/sqrt(64)), BN scale 1 and bias 0;
- BN as ``torch.nn.BatchNorm2d`` (:class:`TorchBatchNorm`): eps 1e-5, running statistics moved by
  0.1 (PyTorch momentum) towards the batch statistics, the running variance from the *unbiased*
  batch variance (``bn_running_var='unbiased'``; Flax's BatchNorm uses the biased one).

``shortcut='B'`` (:func:`resnet32_proden`) is the PRODEN / CMW-Net partial-label ResNet-32
(``../shared/specs/partial_label.md`` §2): where the shape changes the shortcut is conv1x1(stride
s, no bias) + BN (``shortcut_0`` / ``shortcut_1``), every conv (the 1x1 ones too) is initialised
N(0, 2 / (k k out_channels)) (Kaiming fan_out), and the linear layer keeps PyTorch's default
U(+-1/sqrt(64)) for weight and bias. 466,906 parameters for 10 classes (option A: 464,154).

Module names follow the PyTorch state-dict names with ``.`` -> ``_`` (``layer2_0/conv1``), so
:mod:`gdw_jax.interop` converts checkpoints by name.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.models import torch_init
from gdw_jax.models.heads import classifier_head, head_kind

BN_RUNNING_VAR = ("unbiased", "biased")


class TorchBatchNorm(nn.Module):
  """``torch.nn.BatchNorm2d`` over the last axis (NHWC), in any dtype.

  Train mode normalises with the batch mean and biased variance and returns updated running
  statistics ``r <- (1 - momentum) r + momentum * s`` (PyTorch convention: ``momentum`` is the
  weight of the new batch), where ``s`` for the variance is the batch variance times
  ``n / (n - 1)`` (``running_var='unbiased'``, PyTorch) or the plain batch variance (``'biased'``,
  Flax). Eval mode normalises with the running statistics. Parameters ``scale`` / ``bias`` and
  statistics ``mean`` / ``var`` (collection ``batch_stats``) are named as in Flax.
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if self.running_var not in BN_RUNNING_VAR:
      raise ValueError(f"unknown running_var {self.running_var!r}; valid: "
                       f"{', '.join(BN_RUNNING_VAR)}")
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), self.dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.dtype)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), self.dtype)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), self.dtype)
    axes = tuple(range(x.ndim - 1))
    if train:
      mean = jnp.mean(x, axes)
      var = jnp.mean(jnp.square(x - mean), axes)  # two-pass, as PyTorch (no E[x^2] - E[x]^2)
      if not self.is_initializing():
        n = x.size // features
        stat_var = var * (n / max(n - 1, 1)) if self.running_var == "unbiased" else var
        m = self.momentum
        ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
        ra_var.value = (1.0 - m) * ra_var.value + m * stat_var
    else:
      mean, var = ra_mean.value, ra_var.value
    return (x - mean) * (scale / jnp.sqrt(var + self.epsilon)) + bias


SHORTCUTS = ("A", "B")


def conv3x3(features: int, stride: int, dtype, name: str,
            init=torch_init.kaiming_normal_fan_in) -> nn.Conv:
  return nn.Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
                 use_bias=False, kernel_init=init, dtype=dtype, param_dtype=dtype, name=name)


def _conv_init(shortcut: str):
  return torch_init.kaiming_normal_fan_out if shortcut == "B" else torch_init.kaiming_normal_fan_in


class BasicBlock(nn.Module):
  planes: int
  stride: int = 1
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32
  shortcut: str = "A"

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: TorchBatchNorm(running_var=self.bn_running_var, dtype=self.dtype, name=name)
    init = _conv_init(self.shortcut)
    out = nn.relu(bn("bn1")(conv3x3(self.planes, self.stride, self.dtype, "conv1", init)(x),
                            train))
    out = bn("bn2")(conv3x3(self.planes, 1, self.dtype, "conv2", init)(out), train)
    shortcut = x
    if (self.stride != 1 or x.shape[-1] != self.planes) and self.shortcut == "B":
      shortcut = nn.Conv(self.planes, (1, 1), strides=(self.stride, self.stride), use_bias=False,
                         kernel_init=init, dtype=self.dtype, param_dtype=self.dtype,
                         name="shortcut_0")(x)
      shortcut = bn("shortcut_1")(shortcut, train)
    elif self.stride != 1 or x.shape[-1] != self.planes:
      pad = self.planes // 4  # option A: subsample, then zero channels on both sides
      shortcut = jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (pad, pad)))
    return nn.relu(out + shortcut)


class CifarResNet(nn.Module):
  """ResNet-(6n+2) for 32x32 inputs (NHWC); ``blocks=5`` is ResNet-32."""
  num_classes: int
  blocks: int = 5
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32
  head: str = "linear"             # or "cosine": LDAM's NormedLinear (models/heads.py)
  shortcut: str = "A"              # "B": PRODEN's conv1x1 + BN shortcuts and init (see above)

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f"unknown shortcut {self.shortcut!r}; valid: {', '.join(SHORTCUTS)}")
    x = x.astype(self.dtype)
    x = conv3x3(16, 1, self.dtype, "conv1", _conv_init(self.shortcut))(x)
    x = nn.relu(TorchBatchNorm(running_var=self.bn_running_var, dtype=self.dtype,
                               name="bn1")(x, train))
    for stage, planes in enumerate((16, 32, 64)):
      for b in range(self.blocks):
        stride = 2 if stage > 0 and b == 0 else 1
        x = BasicBlock(planes, stride, self.bn_running_var, self.dtype, self.shortcut,
                       name=f"layer{stage + 1}_{b}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    kernel_init = (torch_init.uniform_fan_in_kernel if self.shortcut == "B" else
                   torch_init.kaiming_normal_fan_in)
    return classifier_head(self.head, self.num_classes, self.dtype, name="linear",
                           kernel_init=kernel_init,
                           bias_init=torch_init.uniform_fan_in_bias(x.shape[-1]))(x)


def resnet32(num_classes: int, config=None, dtype=jnp.float32) -> CifarResNet:
  """Registry factory; reads ``config.bn_running_var`` ('unbiased', the official default) and
  the classifier head (``config.classifier_head``; LDAM gets the cosine head)."""
  config = config or {}
  return CifarResNet(num_classes, blocks=5,
                     bn_running_var=config.get("bn_running_var", "unbiased"), dtype=dtype,
                     head=head_kind(config))


def resnet32_proden(num_classes: int, config=None, dtype=jnp.float32) -> CifarResNet:
  """Registry factory of the PRODEN / CMW-Net partial-label ResNet-32 (option-B shortcuts)."""
  config = config or {}
  return CifarResNet(num_classes, blocks=5,
                     bn_running_var=config.get("bn_running_var", "unbiased"), dtype=dtype,
                     head=head_kind(config), shortcut="B")
