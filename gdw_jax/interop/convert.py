"""PyTorch state dicts <-> Flax variable trees: names and layouts.

Names: a PyTorch name ``layer1.0.conv1.weight`` is the Flax path ``layer1_0 / conv1 / kernel``:
a numeric component (an ``nn.Sequential`` index) joins the name before it with ``_``; our models
name their submodules this way (:mod:`gdw_jax.models.resnet_cifar`, ``VNet``'s linear1/linear2).

Leaves:

=====================================  ======================================  ===================
PyTorch                                Flax                                    layout
=====================================  ======================================  ===================
conv ``weight`` ``[O, I, kh, kw]``     ``params`` ``kernel`` ``[kh, kw, I, O]``  transpose (2,3,1,0)
linear ``weight`` ``[out, in]``        ``params`` ``kernel`` ``[in, out]``       transpose
BN ``weight`` ``[C]`` (1-D)            ``params`` ``scale``
``bias``                               ``params`` ``bias``
BN ``running_mean`` / ``running_var``  ``batch_stats`` ``mean`` / ``var``
BN ``num_batches_tracked``             dropped (momentum BN never reads it)
=====================================  ======================================  ===================

The model-specific converters check every name and shape against the model's own variables, so a
checkpoint of another architecture fails with the list of differing names instead of silently
loading.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from gdw_jax import models
from gdw_jax.interop.torch_checkpoint import CheckpointError
from gdw_jax.models.weight_nets import VNet

_LEAF_TO_FLAX = {"bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
                 "running_var": ("batch_stats", "var")}
_LEAF_TO_TORCH = {("params", "bias"): "bias", ("params", "scale"): "weight",
                  ("params", "kernel"): "weight", ("batch_stats", "mean"): "running_mean",
                  ("batch_stats", "var"): "running_var"}


def _module_path(torch_module: str) -> Tuple[str, ...]:
  out = []
  for part in torch_module.split(".") if torch_module else []:
    if part.isdigit() and out:
      out[-1] = f"{out[-1]}_{part}"
    else:
      out.append(part)
  return tuple(out)


# PyTorch module names that themselves end in ``_<digits>``: Cadene's Inception-ResNet-v2 has
# ``repeat`` (``repeat.3`` -> Flax ``repeat_3``) beside ``repeat_1`` and ``repeat_2``
# (``repeat_1.3`` -> ``repeat_1_3``). Mapping back, these prefixes are kept whole.
LITERAL_MODULES = ("repeat_1", "repeat_2")
_INDEX = re.compile(r"_(\d+)(?![A-Za-z])")  # ``_3`` in ``layer2_3``, not ``_1a`` in ``conv2d_1a``


def _torch_part(name: str) -> str:
  for literal in LITERAL_MODULES:
    if re.fullmatch(rf"{literal}(_\d+)+", name):
      return literal + _INDEX.sub(r".\1", name[len(literal):])
  return _INDEX.sub(r".\1", name)


def _torch_module(flax_path) -> str:
  """The inverse of :func:`_module_path`: ``layer2_0`` -> ``layer2.0``, ``layers_2_0`` ->
  ``layers.2.0``, ``repeat_1_3`` -> ``repeat_1.3`` (:data:`LITERAL_MODULES`); underscores before
  letters stay (``conv2d_1a``, ``mixed_5b``)."""
  return ".".join(_torch_part(name) for name in flax_path)


def torch_to_flax(state_dict: Mapping[str, Any], dtype=None) -> Dict[str, Dict[str, Any]]:
  """``{'params': tree, 'batch_stats': tree}`` (NumPy leaves, Flax layouts) from a state dict.

  ``dtype`` casts floating-point tensors (e.g. ``np.float64`` for parity runs); None keeps them.
  """
  out: Dict[str, Dict[str, Any]] = {"params": {}, "batch_stats": {}}
  for name, value in state_dict.items():
    module, _, leaf = name.rpartition(".")
    value = np.asarray(value)
    if leaf == "num_batches_tracked":
      continue
    if leaf == "weight":
      if value.ndim == 4:
        collection, flax_leaf, value = "params", "kernel", value.transpose(2, 3, 1, 0)
      elif value.ndim == 2:
        collection, flax_leaf, value = "params", "kernel", value.T
      elif value.ndim == 1:
        collection, flax_leaf = "params", "scale"
      else:
        raise CheckpointError(f"{name}: no Flax layout for a {value.ndim}-D weight")
    elif leaf in _LEAF_TO_FLAX:
      collection, flax_leaf = _LEAF_TO_FLAX[leaf]
    else:
      raise CheckpointError(f"{name}: unknown PyTorch parameter kind {leaf!r}")
    if dtype is not None and np.issubdtype(value.dtype, np.floating):
      value = value.astype(dtype)
    node = out[collection]
    for part in _module_path(module):
      node = node.setdefault(part, {})
    node[flax_leaf] = np.ascontiguousarray(value)
  return {k: v for k, v in out.items() if v}


def flax_to_torch(params, model_state=None) -> Dict[str, np.ndarray]:
  """The inverse of :func:`torch_to_flax`: a ``{name: array}`` state dict in PyTorch layouts.

  Names come module by module, parameters before running statistics; the order of modules is
  the tree's key order (JAX sorts dict keys), not necessarily PyTorch's registration order.
  """
  stats = dict((model_state or {}).get("batch_stats", {}))
  out: Dict[str, np.ndarray] = {}

  def walk(p, s, path):
    leaves = [("params", k, v) for k, v in p.items() if not isinstance(v, Mapping)]
    leaves += [("batch_stats", k, v) for k, v in s.items() if not isinstance(v, Mapping)]
    prefix = _torch_module(path)
    for collection, key, value in leaves:
      if (collection, key) not in _LEAF_TO_TORCH:
        raise CheckpointError(f"{'/'.join(path + (key,))}: no PyTorch name for {key!r}")
      value = np.asarray(value)
      if key == "kernel":
        value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
      name = _LEAF_TO_TORCH[(collection, key)]
      out[f"{prefix}.{name}" if prefix else name] = np.ascontiguousarray(value)
    for key in dict.fromkeys([*p, *s]):
      sub_p, sub_s = p.get(key, {}), s.get(key, {})
      if isinstance(sub_p, Mapping) or isinstance(sub_s, Mapping):
        walk(dict(sub_p) if isinstance(sub_p, Mapping) else {},
             dict(sub_s) if isinstance(sub_s, Mapping) else {}, path + (key,))

  walk(dict(params), stats, ())
  return out


def _check_like(state_dict: Mapping[str, Any], like_params, like_state, what: str) -> None:
  """Raise unless ``state_dict`` has exactly the names and shapes of the model's variables."""
  expected = {k: v.shape for k, v in flax_to_torch(_zeros(like_params), _zeros(like_state)).items()}
  got = {k: tuple(np.shape(v)) for k, v in state_dict.items()
         if not k.endswith("num_batches_tracked")}
  missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
  if missing or extra:
    raise CheckpointError(f"not a {what} state dict: missing {missing[:5]}"
                          f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
                          f"{'...' if len(extra) > 5 else ''}")
  wrong = [f"{k} {got[k]} (expected {expected[k]})" for k in expected if got[k] != expected[k]]
  if wrong:
    raise CheckpointError(f"not a {what} state dict: shape mismatch {'; '.join(wrong[:3])}")


def _zeros(tree):
  """Small stand-in arrays with the shapes of an ``eval_shape`` tree (names and shapes only)."""
  return jax.tree.map(lambda s: np.broadcast_to(np.zeros((), np.float32), s.shape), tree)


def _as_jax(tree, dtype):
  return jax.tree.map(lambda a: jnp.asarray(a, dtype if dtype is not None else a.dtype), tree)


def resnet32_from_torch(state_dict: Mapping[str, Any], dtype=None) -> Tuple[Any, Any]:
  """``(params, model_state)`` of our ``resnet32`` from the official ``resnet.py`` state dict.

  The number of classes is read from ``linear.weight``; every name and shape is checked.
  """
  if "linear.weight" not in state_dict:
    raise CheckpointError("not a ResNet-32 state dict: no 'linear.weight'")
  num_classes = int(np.shape(state_dict["linear.weight"])[0])
  model = models.get("resnet32", num_classes)
  like_params, like_state = jax.eval_shape(
      model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  _check_like(state_dict, like_params, like_state, "ResNet-32")
  variables = torch_to_flax(state_dict)
  model_state = {"batch_stats": _as_jax(variables["batch_stats"], dtype)}
  return _as_jax(variables["params"], dtype), model_state


def resnet32_to_torch(params, model_state) -> Dict[str, np.ndarray]:
  """The official ``resnet.py`` state dict (names, OIHW / [out, in] layouts) of our ResNet-32."""
  return flax_to_torch(params, model_state)


def vnet_from_torch(state_dict: Mapping[str, Any], dtype=None) -> Any:
  """Params of our ``VNet`` (linear1 / linear2) from MW-Net's / GDW's ``VNet`` state dict."""
  if "linear1.weight" not in state_dict:
    raise CheckpointError("not a VNet state dict: no 'linear1.weight'")
  hidden = int(np.shape(state_dict["linear1.weight"])[0])
  like = jax.eval_shape(VNet(hidden=hidden).init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((1, 1), jnp.float32))["params"]
  _check_like(state_dict, like, {}, "VNet")
  return _as_jax(torch_to_flax(state_dict)["params"], dtype)


def vnet_to_torch(params) -> Dict[str, np.ndarray]:
  """MW-Net's ``VNet`` state dict (``linear1.weight`` ``[hidden, 1]``, ...) of our VNet params."""
  return flax_to_torch(params)
