"""Pretrained PyTorch weights as a run's starting point (``--config.init_from=resnet50.pth``).

A torchvision (or official-code) state dict is read without PyTorch
(:func:`~gdw_jax.interop.torch_checkpoint.load_torch_state_dict`), converted by name
(:func:`~gdw_jax.interop.convert.torch_to_flax`: ``layer1.0.downsample.0.weight`` ->
``layer1_0/downsample_0/kernel``, OIHW -> HWIO) and replaces every parameter and BN running
statistic of the freshly initialised model **except the classifier head**, which keeps its fresh
initialisation for the config's class count (an ImageNet ``fc`` of 1000 classes is dropped, as
in the usual fine-tuning recipe; the head is re-initialised even when the class counts agree).

Only models whose Flax names follow PyTorch's can be loaded; :data:`HEADS` lists them with the
PyTorch name of their head. Checks, each a one-line :class:`CheckpointError`:

* the checkpoint's names (head and ``num_batches_tracked`` aside) are exactly the model's; if
  they are exactly another listed model's instead, the message says which (``holds resnet50
  weights but the model is vgg19_bn``), otherwise it lists the missing / unexpected names;
* every tensor has the model's shape (the message names the tensor).

A ``module.`` prefix on every name (``nn.DataParallel`` checkpoints) is removed first.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Dict, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from gdw_jax import models
from gdw_jax.interop.convert import _module_path, _zeros, flax_to_torch, torch_to_flax
from gdw_jax.interop.torch_checkpoint import CheckpointError, load_torch_state_dict

# Models that load PyTorch weights by name -> the PyTorch module name of their classifier head.
HEADS = {"resnet32": "linear", "resnet50": "fc", "vgg19_bn": "classifier.6",
         "inception_resnet_v2": "last_linear"}
# Parameter shapes of these conv nets do not depend on the input size; 75 px is the smallest
# Inception-ResNet-v2 takes.
_SHAPE_INPUT = (1, 75, 75, 3)


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """The checkpoint's tensors, without ``num_batches_tracked`` and a common ``module.``."""
  sd = load_torch_state_dict(path)
  if sd and all(k.startswith("module.") for k in sd):
    sd = {k[len("module."):]: v for k, v in sd.items()}
  return {k: v for k, v in sd.items() if not k.endswith(".num_batches_tracked")}


def _body(names: Mapping[str, Any], model_name: str) -> Dict[str, Any]:
  head = HEADS[model_name] + "."
  return {k: v for k, v in names.items() if not k.startswith(head)}


def _model_shapes(params, model_state) -> Dict[str, Tuple[int, ...]]:
  """``{PyTorch name: shape}`` of a model's variables (arrays or ``eval_shape`` structs)."""
  torch_names = flax_to_torch(_zeros(params), _zeros(model_state))
  return {k: tuple(v.shape) for k, v in torch_names.items()}


@functools.lru_cache(maxsize=None)
def expected_shapes(model_name: str) -> Dict[str, Tuple[int, ...]]:
  """``{PyTorch name: shape}`` of registered model ``model_name`` (head included; no compute)."""
  fns = models.get(model_name, 10)
  params, state = jax.eval_shape(fns.init, jax.random.PRNGKey(0),
                                 jax.ShapeDtypeStruct(_SHAPE_INPUT, jnp.float32))
  return _model_shapes(params, state)


def _identify(names, model_name: str):
  """Another listed model whose names (head aside) are exactly ``names``', or None."""
  for other in HEADS:
    if other != model_name and set(_body(names, other)) == set(_body(expected_shapes(other),
                                                                      other)):
      return other
  return None


def check_state_dict(sd: Mapping[str, Any], model_name: str, expected, path: str) -> None:
  """Raise :class:`CheckpointError` unless ``sd`` fits ``expected`` (``{name: shape}``) apart
  from the head of ``model_name``."""
  got, want = _body(sd, model_name), _body(expected, model_name)
  missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  if missing or extra:
    other = _identify(sd, model_name)
    if other is not None:
      raise CheckpointError(f"{path}: holds {other} weights (by its tensor names) but the "
                            f"model is {model_name}")
    more = lambda names: f"{names[:4]}{f' and {len(names) - 4} more' if len(names) > 4 else ''}"
    raise CheckpointError(f"{path}: does not fit model {model_name}: missing {more(missing)}, "
                          f"unexpected {more(extra)}")
  for name in want:  # in the model's order: the first misfit is the earliest layer
    if tuple(np.shape(got[name])) != tuple(want[name]):
      raise CheckpointError(f"{path}: tensor {name} has shape {tuple(np.shape(got[name]))}, "
                            f"model {model_name} needs {tuple(want[name])}")


@functools.lru_cache(maxsize=8)
def _checked(path: str, real_path: str, mtime_ns: int, size: int, model_name: str) -> None:
  del real_path, mtime_ns, size  # cache keys: a changed file is checked again
  check_state_dict(read_state_dict(path), model_name, expected_shapes(model_name), path)


def check_init_from(path: str, model_name: str) -> None:
  """Validate ``--config.init_from`` before a run starts: the file reads as a checkpoint and
  fits ``model_name`` (head aside). Raises :class:`CheckpointError` (one line)."""
  if model_name not in HEADS:
    raise CheckpointError(f"{path}: model {model_name} has no PyTorch layout to load weights "
                          f"into; models that have one: {', '.join(sorted(HEADS))}")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such file")
  st = os.stat(path)
  _checked(path, os.path.realpath(path), st.st_mtime_ns, st.st_size, model_name)


def init_from(path: str, params, model_state, model_name: str) -> Tuple[Any, Any]:
  """``(params, model_state)`` with every variable but the head replaced by the checkpoint's.

  ``path`` '' returns the arguments unchanged. The loaded arrays take the dtype of the model's
  own variables (e.g. float32 checkpoints in a float64 run); the head (:data:`HEADS`) keeps its
  initialisation. Raises :class:`CheckpointError` (one line) when the checkpoint does not fit.
  """
  if not path:
    return params, model_state
  if model_name not in HEADS:
    check_init_from(path, model_name)  # raises: no PyTorch layout
  sd = read_state_dict(path)
  check_state_dict(sd, model_name, _model_shapes(params, model_state), path)
  loaded = torch_to_flax(_body(sd, model_name))
  head = _module_path(HEADS[model_name])

  def replace(tree, collection):
    flat = traverse_util.flatten_dict(dict(tree))
    new = traverse_util.flatten_dict(loaded.get(collection, {}))
    out = {k: v if k[:len(head)] == head else jnp.asarray(new[k], v.dtype)
           for k, v in flat.items()}
    return traverse_util.unflatten_dict(out)

  new_state = dict(model_state)
  if "batch_stats" in new_state:
    new_state["batch_stats"] = replace(new_state["batch_stats"], "batch_stats")
  return replace(params, "params"), new_state
