"""Your Flax model as the pure function the methods differentiate.

Every method sees the classifier as

    params, model_state = model.init(rng, x)
    logits, new_model_state = model.apply(params, model_state, x, train)

``params`` are the trainable parameters (what the optimizer updates and the look-ahead step
moves); ``model_state`` is everything else the forward reads or updates: BatchNorm statistics,
and here also the random keys of dropout (or any other rng stream). ``apply`` is deterministic
given its arguments: the methods call it several times per step (the real forward, the
look-ahead and meta forwards, a recomputed forward for the memory-lean route) and each call with
the same ``model_state`` sees the same dropout mask, so the look-ahead differentiates the very
function the real update uses. Only the real forward's returned state is kept (by
:func:`gdw_jax.reweighted_grads`): its BatchNorm statistics and the advanced keys.

* :func:`from_linen`: a linen module called as ``module(x, train=...)``; every non-``params``
  collection (``batch_stats``, ...) is model state and is mutable in train mode; each rng stream
  named in ``rngs`` gets a key in ``model_state['rngs']``, split at every train-mode call.
* :func:`from_nnx`: an NNX module called as ``module(x)``; ``nnx.Param`` variables are the
  parameters, every other variable (``BatchStat``, the ``Rngs`` keys and counts of ``Dropout``)
  the model state. Train / eval mode is set with ``module.train()`` / ``module.eval()``.

Both return a :class:`ModelFns`, defined here; the built-in models (:mod:`gdw_jax.models`, the
layer above) are wrapped the same way. This module imports nothing of the package.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax

RNGS = "rngs"  # the model_state entry holding from_linen's rng keys


class ModelFns(NamedTuple):
  """A model as the methods see it: ``init(rng, x) -> (params, model_state)`` and
  ``apply(params, model_state, x, train) -> (logits, new_model_state)``; ``module`` is the
  wrapped Flax module. The built-in models (:mod:`gdw_jax.models`) come as one too."""
  module: Any
  init: Callable[..., Any]
  apply: Callable[..., Any]


def from_linen(module, *, rngs: Sequence[str] = (), train_arg: str = "train") -> ModelFns:
  """``ModelFns`` of a linen ``module`` whose ``__call__(x, <train_arg>=bool)`` returns logits.

  ``rngs``: names of the rng streams the module draws in train mode (e.g. ``("dropout",)``);
  their keys live in ``model_state['rngs']`` (derived from ``init``'s key). ``params`` come from
  ``module.init(rng, x, train=False)``, so a module without rngs initialises exactly as with
  ``module.init`` directly.
  """
  rngs = tuple(rngs)

  def init(rng, x):
    variables = dict(module.init(rng, x, **{train_arg: False}))
    if "params" not in variables:
      raise ValueError(f"{type(module).__name__}.init made no 'params' collection")
    params = variables.pop("params")
    if RNGS in variables:
      raise ValueError(f"{type(module).__name__} has a variable collection named {RNGS!r}, "
                       "which from_linen uses for its rng keys")
    if rngs:
      variables[RNGS] = {name: jax.random.fold_in(rng, i + 1) for i, name in enumerate(rngs)}
    return params, variables

  def apply(params, model_state, x, train: bool):
    keys = model_state.get(RNGS, {})
    collections = {k: v for k, v in model_state.items() if k != RNGS}
    variables = {"params": params, **collections}
    if not train:
      return module.apply(variables, x, **{train_arg: False}), model_state
    use, advanced = {}, {}
    for name, key in keys.items():
      advanced[name], use[name] = jax.random.split(key)
    if collections:
      logits, updated = module.apply(variables, x, rngs=use, mutable=list(collections),
                                     **{train_arg: True})
      new_state = dict(updated)
    else:
      logits, new_state = module.apply(variables, x, rngs=use, **{train_arg: True}), {}
    if advanced:
      new_state[RNGS] = advanced
    return logits, new_state

  return ModelFns(module, init, apply)


def from_nnx(model) -> ModelFns:
  """``ModelFns`` of an NNX ``model`` (already constructed, e.g. ``CNN(rngs=nnx.Rngs(0,
  dropout=1))``) whose ``__call__(x)`` returns logits.

  ``init(rng, x)`` returns the model's own current parameters and state (``rng`` and ``x`` are
  unused: NNX initialises at construction). Both are ``nnx.State`` pytrees, so optax and
  ``jax.tree`` work on them; ``nnx.update(model, params, model_state)`` writes them back.
  """
  from flax import nnx
  if not isinstance(model, nnx.Module):
    raise TypeError(f"from_nnx takes a flax.nnx.Module, got {type(model).__name__} (use "
                    "from_linen for a linen module)")
  graphdef, params0, state0 = nnx.split(model, nnx.Param, ...)

  def init(rng, x):
    del rng, x
    return params0, state0

  def apply(params, model_state, x, train: bool):
    m = nnx.merge(graphdef, params, model_state, copy=True)  # fresh Variables at this trace
    if train:
      m.train()
    else:
      m.eval()
    logits = m(x)
    if not train:
      return logits, model_state
    _, _, new_state = nnx.split(m, nnx.Param, ...)
    return logits, new_state

  return ModelFns(model, init, apply)
