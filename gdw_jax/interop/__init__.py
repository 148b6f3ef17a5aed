"""PyTorch interop without PyTorch: safe checkpoint reading, name / layout converters, and
pretrained weights as a run's starting point (``--config.init_from``).

Above the models (a converter checks a checkpoint against the model's own variables) and below
the methods (CMW-Net's transferred weighting net, :mod:`gdw_jax.methods.transfer`)."""
from gdw_jax.interop.convert import (flax_to_torch, resnet32_from_torch, resnet32_to_torch,
                                     torch_to_flax, vnet_from_torch, vnet_to_torch)
from gdw_jax.interop.pretrained import HEADS, check_init_from, init_from, read_state_dict
from gdw_jax.interop.torch_checkpoint import (CheckpointError, UnsafeCheckpointError,
                                              load_torch_state_dict)

__all__ = ["CheckpointError", "UnsafeCheckpointError", "load_torch_state_dict", "torch_to_flax",
           "flax_to_torch", "resnet32_from_torch", "resnet32_to_torch", "vnet_from_torch",
           "vnet_to_torch", "HEADS", "check_init_from", "init_from", "read_state_dict"]
