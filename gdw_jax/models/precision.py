"""Mixed precision for the ImageNet-size models: bfloat16 compute, float32 parameters.

A model built with ``dtype=bfloat16, param_dtype=float32`` keeps every parameter and BN running
statistic in float32 (so the optimizer, the meta step's virtual update ``theta - lr * g`` and the
weighting net all stay float32) and casts them to bfloat16 where they are used: convolutions and
the hidden dense layers run in bfloat16, which is what makes the step faster on accelerators.
Three places stay in the parameter dtype, because bfloat16's 8-bit mantissa is too coarse there:

* batch norm: statistics, normalisation and running-average updates (:func:`torch_batch_norm`);
* global pooling (a mean over up to 49 x 2048 values);
* the classifier head, so the logits are returned in the parameter dtype and every method sees
  float32 logits whatever the compute dtype.

Gradients reach the float32 parameters through the casts, so they are float32 too. bfloat16 has
float32's exponent range, so no loss scaling is needed (float16 would need it; not offered).
"""
from __future__ import annotations

import jax.numpy as jnp

from gdw_jax.models.resnet_cifar import TorchBatchNorm

COMPUTE_DTYPES = ("", "float32", "bfloat16")  # '' = the parameter dtype (config.dtype)


def compute_dtype(config, param_dtype) -> jnp.dtype:
  """``config.compute_dtype`` resolved: '' (or no config, for library use) is ``param_dtype``."""
  name = config["compute_dtype"] if config and "compute_dtype" in config else ""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"unknown compute_dtype {name!r}; valid: {', '.join(COMPUTE_DTYPES)}")
  return jnp.dtype(name) if name else jnp.dtype(param_dtype)


def torch_batch_norm(x, train: bool, name: str, param_dtype, running_var: str = "unbiased",
                     epsilon: float = 1e-5):
  """``torch.nn.BatchNorm2d`` (:class:`TorchBatchNorm`) computed in ``param_dtype``.

  The input is cast up to the parameter dtype, normalised there (batch mean and biased variance
  in train mode, running statistics in eval mode; running statistics updated with the unbiased
  variance, as PyTorch), and the result cast back to the input's (compute) dtype. Call it inside
  a compact module: the BN becomes the submodule ``name`` of the caller.
  """
  bn = TorchBatchNorm(epsilon=epsilon, running_var=running_var, dtype=param_dtype, name=name)
  return bn(x.astype(param_dtype), train).astype(x.dtype)
