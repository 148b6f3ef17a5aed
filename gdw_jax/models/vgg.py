"""VGG-19-BN as CMW-Net trains it on ANIMAL-10N (torchvision's ``vgg19_bn``, from scratch).

CMW-Net's ``section5/ANIMAL-10N/vgg_mwn.py`` (and ``section6``) is torchvision's VGG with meta
layers: ``vgg19_bn(num_classes=10, pretrained=False)`` on 64x64 ANIMAL-10N images.

    features: [conv3x3 (pad 1, bias) - BN - ReLU] x n, 2x2 max-pool after each group:
              64 x2, M, 128 x2, M, 256 x4, M, 512 x4, M, 512 x4, M          (configuration 'E')
    avgpool:  AdaptiveAvgPool2d(7, 7)
    classifier: Linear(512*7*7 -> 4096) - ReLU - Dropout - Linear(4096 -> 4096) - ReLU - Dropout
                - Linear(4096 -> C)

Module names are torchvision's ``nn.Sequential`` indices (``features_0`` conv, ``features_1``
BN, ... ``classifier_0/3/6``), so a ``vgg19_bn`` state dict loads by name
(:mod:`gdw_jax.interop`). 143,678,248 parameters at 1000 classes (139,622,218 at 10, most of them
in ``classifier_0``).

Faithfulness details:
- the adaptive pool is PyTorch's: output cell ``i`` averages input rows
  ``floor(i h / 7) .. ceil((i + 1) h / 7) - 1``; on ANIMAL-10N's 2x2 feature map that *repeats*
  each value into a 7x7 grid (it does not shrink anything), as in the official runs;
- the flatten before ``classifier_0`` is in PyTorch's NCHW order (channel-major), so the
  checkpoint's ``[4096, 25088]`` weight is used as it is (transposed);
- init (torchvision ``_initialize_weights``): conv ``N(0, 2 / fan_out)`` untruncated, conv bias 0,
  BN 1 / 0, linear ``N(0, 0.01)``, bias 0;
- **dropout**: torchvision has ``Dropout(0.5)`` after both hidden linear layers. The trainer's
  ``ModelFns.apply`` passes no random key, so the registered ``vgg19_bn`` runs with
  ``dropout_rate=0`` (a documented difference, docs/real_noise.md); the module applies dropout
  when built with a rate and called with ``rngs={'dropout': key}`` in train mode.

Mixed precision as in :mod:`gdw_jax.models.resnet_imagenet`: convs and the hidden linear layers
compute in ``dtype``; BN, the pooling and the last layer in ``param_dtype``.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from gdw_jax.models.heads import classifier_head, head_kind
from gdw_jax.models.precision import compute_dtype, torch_batch_norm
from gdw_jax.models.resnet_imagenet import conv_init

VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M")
_linear_init = nn.initializers.normal(0.01)


def _pool_matrix(size_in: int, size_out: int) -> np.ndarray:
  """``[size_out, size_in]`` averaging weights of PyTorch's 1-D adaptive average pool."""
  m = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x, size: int):
  """``nn.AdaptiveAvgPool2d((size, size))`` on NHWC ``x``: one averaging matrix per axis."""
  rows = jnp.asarray(_pool_matrix(x.shape[1], size), x.dtype)
  cols = jnp.asarray(_pool_matrix(x.shape[2], size), x.dtype)
  return jnp.einsum("ih,jw,nhwc->nijc", rows, cols, x)


class VGG(nn.Module):
  """torchvision's VGG with batch norm; ``layers=VGG19`` is VGG-19-BN (NHWC input)."""
  num_classes: int
  layers: Sequence[Union[int, str]] = VGG19
  hidden: int = 4096
  pool_size: int = 7
  dropout_rate: float = 0.0
  bn_running_var: str = "unbiased"
  dtype: jnp.dtype = jnp.float32        # compute dtype
  param_dtype: jnp.dtype = jnp.float32
  head: str = "linear"                  # or "cosine" (LDAM's NormedLinear)

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.astype(self.dtype)
    index = 0  # position in torchvision's `features` nn.Sequential
    for v in self.layers:
      if v == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        index += 1
        continue
      x = nn.Conv(int(v), (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init,
                  bias_init=nn.initializers.zeros, dtype=self.dtype,
                  param_dtype=self.param_dtype, name=f"features_{index}")(x)
      x = torch_batch_norm(x, train, f"features_{index + 1}", self.param_dtype,
                           self.bn_running_var)
      x = nn.relu(x)
      index += 3  # conv, BN, ReLU
    x = adaptive_avg_pool(x.astype(self.param_dtype), self.pool_size)
    x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1).astype(self.dtype)  # NCHW flatten
    dense = partial(nn.Dense, self.hidden, kernel_init=_linear_init,
                    bias_init=nn.initializers.zeros, dtype=self.dtype,
                    param_dtype=self.param_dtype)
    for index in (0, 3):
      x = nn.relu(dense(name=f"classifier_{index}")(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)(x)
    return classifier_head(self.head, self.num_classes, self.param_dtype, name="classifier_6",
                           kernel_init=_linear_init,
                           bias_init=nn.initializers.zeros)(x.astype(self.param_dtype))


def vgg19_bn(num_classes: int, config=None, dtype=jnp.float32) -> VGG:
  """Registry factory (no dropout: see the module docstring); parameters in ``dtype``, compute
  in ``config.compute_dtype``; reads ``bn_running_var`` and ``classifier_head``."""
  config = config or {}
  return VGG(num_classes, VGG19, bn_running_var=config.get("bn_running_var", "unbiased"),
             dtype=compute_dtype(config, dtype), param_dtype=jnp.dtype(dtype),
             head=head_kind(config))
