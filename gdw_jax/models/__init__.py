"""Classifiers looked up by name, behind one functional signature.

Every model is used through :class:`ModelFns`::

    params, model_state = fns.init(rng, x)
    logits, new_model_state = fns.apply(params, model_state, x, train)

``model_state`` holds the non-trainable collections (BatchNorm running statistics under
``batch_stats``); it is ``{}`` for models without any. In train mode BN uses batch statistics
and the returned state carries the updated running statistics; callers decide whether to keep
it (only the real forward of a training step does). :class:`ModelFns` and the wrapping
(:func:`functional`) come from :mod:`gdw_jax.adapters`, the layer below, which a user's own
model goes through too.
"""
from __future__ import annotations

from typing import Callable, Dict

import flax.linen as nn
import jax.numpy as jnp

from gdw_jax.adapters import ModelFns, from_linen
from gdw_jax.models.heads import HEADS, NormedLinear, classifier_head, head_kind
from gdw_jax.models.mlp import MLP, SmallCNN
from gdw_jax.models.resnet_cifar import resnet32, resnet32_proden
from gdw_jax.models.weight_nets import CMWNet, VNet


def functional(module: nn.Module) -> ModelFns:
  """Wrap a Linen module whose ``__call__(x, train)`` returns logits (no rng streams; see
  :func:`gdw_jax.adapters.from_linen` for dropout)."""
  return from_linen(module)


_MODELS: Dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda num_classes, config, dtype: MLP(
        num_classes, hidden=tuple(config.get("mlp_hidden", (256, 256))),
        batch_norm=bool(config.get("mlp_batch_norm", False)), dtype=dtype,
        head=head_kind(config)),
    "cnn": lambda num_classes, config, dtype: SmallCNN(num_classes, dtype=dtype,
                                                       head=head_kind(config)),
    "resnet32": resnet32,
    "resnet32_proden": resnet32_proden,  # option-B shortcuts (PRODEN, partial_label.md §2)
}


# Models whose factory honours config.compute_dtype (bfloat16 compute, parameters in `dtype`).
_MIXED_PRECISION = set()


# Models that need inputs of at least this many pixels a side (their strided stages run out).
_MIN_IMAGE_SIZE: Dict[str, int] = {}


def register(name: str, factory: Callable[..., nn.Module], mixed_precision: bool = False,
             min_image_size: int = 0) -> None:
  """``factory(num_classes, config, dtype) -> nn.Module``; ``mixed_precision``: the factory
  reads ``config.compute_dtype`` (:mod:`gdw_jax.models.precision`); ``min_image_size``: the
  smallest input side the network takes (checked against the data before a run starts)."""
  _MODELS[name] = factory
  if mixed_precision:
    _MIXED_PRECISION.add(name)
  if min_image_size:
    _MIN_IMAGE_SIZE[name] = int(min_image_size)


def min_image_size(name: str) -> int:
  """The smallest image side model ``name`` takes (0: any)."""
  return _MIN_IMAGE_SIZE.get(name, 0)


def supports_compute_dtype(name: str) -> bool:
  """Whether model ``name`` can compute in another dtype than its parameters'."""
  return name in _MIXED_PRECISION


def names():
  return tuple(sorted(_MODELS))


def get(name: str, num_classes: int, config=None, dtype=jnp.float32) -> ModelFns:
  """Model ``name``. ``config`` may be None (library use, ``models.get('resnet32', 10)``) or a
  config without one model's keys (``mlp_hidden`` is digits', ``wrn_depth`` CIFAR's): the
  factories read their options with ``config.get(key, default)`` for that reason."""
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; valid: {', '.join(names())}")
  return functional(_MODELS[name](num_classes, config or {}, dtype))


# CIFAR models (../shared/specs/mwnet_cmwnet.md §3): MW-Net's WRN-28-10 ('wrn' takes
# wrn_depth / wrn_widen from the config) and CMW-Net's PreAct ResNet-18.
from gdw_jax.models.preact_resnet import PreActResNet18  # noqa: E402
from gdw_jax.models.wrn import WideResNet  # noqa: E402

register("wrn28_10", lambda num_classes, config, dtype: WideResNet(num_classes, 28, 10, dtype))
register("wrn", lambda num_classes, config, dtype: WideResNet(
    num_classes, int(config.get("wrn_depth", 28)), int(config.get("wrn_widen", 10)), dtype))
register("preact_resnet18", lambda num_classes, config, dtype: PreActResNet18(
    num_classes, config.get("preact_shortcut", "activated"), dtype))
# ResNet-34 of the PMD / ABSGD label-noise code and CMW-Net's padding-0 one; ABSGD's SCE-CNN.
from gdw_jax.models import resnet34 as _r34  # noqa: E402
register("resnet34", _r34.resnet34)
register("resnet34_cmwnet", _r34.resnet34_cmwnet)
register("sce_cnn", _r34.sce_cnn)

# ImageNet-size models for the real-noise datasets (docs/real_noise.md): torchvision layouts, so
# torchvision / CMW-Net checkpoints load by name (--config.init_from, gdw_jax.interop).
from gdw_jax.models.resnet_imagenet import resnet50  # noqa: E402
from gdw_jax.models.vgg import vgg19_bn  # noqa: E402
from gdw_jax.models.inception_resnet_v2 import inception_resnet_v2  # noqa: E402

register("resnet50", resnet50, mixed_precision=True)
register("vgg19_bn", vgg19_bn, mixed_precision=True)
register("inception_resnet_v2", inception_resnet_v2, mixed_precision=True,  # WebVision
         min_image_size=75)

__all__ = ["ModelFns", "functional", "get", "names", "register", "supports_compute_dtype",
           "min_image_size", "MLP",
           "SmallCNN", "VNet", "CMWNet", "NormedLinear", "classifier_head", "head_kind", "HEADS"]
