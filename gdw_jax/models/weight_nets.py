"""Weighting networks: MW-Net's VNet (loss -> weight in (0, 1))."""
import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.models import torch_init


class VNet(nn.Module):
  """Linear(1 -> hidden) -> ReLU -> Linear(hidden -> 1) -> sigmoid, PyTorch-default init.

  Input: per-sample losses ``[N, 1]`` (detached by the caller). Output: weights ``[N, 1]``.
  With PyTorch's ``nn.Linear`` init the first layer is U(-1, 1) and the second U(-1/sqrt(hidden),
  1/sqrt(hidden)), so the initial output is about 0.5 for every loss.
  """
  hidden: int = 100
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, loss):
    loss = loss.astype(self.dtype)
    h = nn.Dense(self.hidden, kernel_init=torch_init.uniform_fan_in_kernel,
                 bias_init=torch_init.uniform_fan_in_bias(1), dtype=self.dtype,
                 param_dtype=self.dtype, name="linear1")(loss)
    h = nn.relu(h)
    out = nn.Dense(1, kernel_init=torch_init.uniform_fan_in_kernel,
                   bias_init=torch_init.uniform_fan_in_bias(self.hidden), dtype=self.dtype,
                   param_dtype=self.dtype, name="linear2")(h)
    return nn.sigmoid(out)


class CMWNet(nn.Module):
  """CMW-Net's weighting net: a shared ``Linear(1 -> hidden) -> ReLU`` trunk and one
  ``Linear(hidden -> 1) -> sigmoid`` head per task family; each sample uses the head of its
  (noisy) label's family (``../shared/specs/mwnet_cmwnet.md`` §4.1).

  ``__call__(loss [N, 1], family [N] int) -> weights [N, 1]``. Initialisation is PyTorch's
  ``nn.Linear`` default for every layer (trunk U(-1, 1), heads U(-1/sqrt(hidden), ..)), so with
  one head it is MW-Net's VNet. The per-sample head choice of the official loop is a gather of
  the head parameters here.
  """
  hidden: int = 100
  num_heads: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, loss, family):
    loss = loss.astype(self.dtype)
    h = nn.Dense(self.hidden, kernel_init=torch_init.uniform_fan_in_kernel,
                 bias_init=torch_init.uniform_fan_in_bias(1), dtype=self.dtype,
                 param_dtype=self.dtype, name="trunk")(loss)
    h = nn.relu(h)
    init = torch_init.uniform_fan_in_bias(self.hidden)
    kernel = self.param("heads_kernel", init, (self.num_heads, self.hidden), self.dtype)
    bias = self.param("heads_bias", init, (self.num_heads,), self.dtype)
    out = jnp.sum(h * kernel[family], axis=-1, keepdims=True) + bias[family][:, None]
    return nn.sigmoid(out)
