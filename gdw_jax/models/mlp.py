"""Small classifiers for the embedded digits data."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.models.heads import classifier_head


class MLP(nn.Module):
  """Flatten -> [Dense -> (BN) -> ReLU] * len(hidden) -> head (Dense, or cosine for LDAM)."""
  num_classes: int
  hidden: Sequence[int] = (256, 256)
  batch_norm: bool = False
  dtype: jnp.dtype = jnp.float32
  head: str = "linear"

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for h in self.hidden:
      x = nn.Dense(h, dtype=self.dtype, param_dtype=self.dtype)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, param_dtype=self.dtype)(x)
      x = nn.relu(x)
    return classifier_head(self.head, self.num_classes, self.dtype)(x)


class SmallCNN(nn.Module):
  """conv3x3(32)-BN-ReLU -> conv3x3(64)-BN-ReLU -> 2x2 max-pool -> Dense(128)-ReLU -> head."""
  num_classes: int
  width: int = 32
  dtype: jnp.dtype = jnp.float32
  head: str = "linear"

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = x.astype(self.dtype)
    for w in (self.width, 2 * self.width):
      x = nn.Conv(w, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, dtype=self.dtype,
                  param_dtype=self.dtype)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype, param_dtype=self.dtype)(x)
      x = nn.relu(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(128, dtype=self.dtype, param_dtype=self.dtype)(x))
    return classifier_head(self.head, self.num_classes, self.dtype)(x)
