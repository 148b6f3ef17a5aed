"""PyTorch's default initialisers, as Flax initialisers.

``nn.Linear`` default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
``kaiming_normal_`` (fan_in, gain sqrt(2)): N(0, 2 / fan_in), untruncated.
The ResNet papers' conv init ``normal_(0, sqrt(2 / (k * k * out_channels)))``: fan_out.
"""
import jax
import jax.numpy as jnp


def _fan_in(shape):
  # Flax kernels are [..., in, out]; fan_in = prod of all but the last axis.
  fan_in = 1
  for d in shape[:-1]:
    fan_in *= d
  return fan_in


def uniform_fan_in_kernel(key, shape, dtype=jnp.float32):
  bound = 1.0 / jnp.sqrt(_fan_in(shape))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def uniform_fan_in_bias(fan_in):
  def init(key, shape, dtype=jnp.float32):
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def kaiming_normal_fan_in(key, shape, dtype=jnp.float32):
  std = jnp.sqrt(2.0 / _fan_in(shape))
  return std * jax.random.normal(key, shape, dtype)


def kaiming_normal_fan_out(key, shape, dtype=jnp.float32):
  """N(0, 2 / fan_out) with fan_out = k * k * out_channels (Flax conv kernels ``[k, k, in, out]``)."""
  fan_out = shape[-1]
  for d in shape[:-2]:
    fan_out *= d
  return jnp.sqrt(2.0 / fan_out) * jax.random.normal(key, shape, dtype)
