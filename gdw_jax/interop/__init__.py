"""PyTorch interop without PyTorch: safe checkpoint reading and name / layout converters."""
from gdw_jax.interop.convert import (flax_to_torch, resnet32_from_torch, resnet32_to_torch,
                                     torch_to_flax, vnet_from_torch, vnet_to_torch)
from gdw_jax.interop.torch_checkpoint import (CheckpointError, UnsafeCheckpointError,
                                              load_torch_state_dict)

__all__ = ["CheckpointError", "UnsafeCheckpointError", "load_torch_state_dict", "torch_to_flax",
           "flax_to_torch", "resnet32_from_torch", "resnet32_to_torch", "vnet_from_torch",
           "vnet_to_torch"]
