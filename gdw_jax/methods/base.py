"""The interface every data-weighting method implements.

A method is a pair of pure functions (like an optax transform)::

    state = method.init(rng)
    cotangent, state, aux = method.update(ctx, state)

``update`` receives the step's :class:`gdw_jax.bilevel.StepContext` (training logits at the
current parameters, labels, the meta batch, ...) and returns the cotangent ``G`` ``[N, C]`` to
apply to the logits for the real update (the classifier gradient is ``J_theta(z)^T G``), its new
state, and an ``aux`` dict: scalar diagnostics plus ``weights`` (``[N, k]`` per-sample weights
that the trainer records for analysis). The trainer knows nothing else about the method.

Methods with a learned weighting function also give ``weight_fn(state, losses, labels) ->
weights`` (``[K]`` each): the instance weight the method would assign to a sample with that loss
and (noisy) label. Analysis uses it to draw weight-vs-loss curves from a saved state.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import numpy as np


class DataInfo(NamedTuple):
  """What a method may know about the training data when it is built."""
  num_classes: int
  num_train: int
  class_counts: np.ndarray   # per-class counts of the (noisy) training labels
  steps_per_epoch: int


class Method(NamedTuple):
  name: str
  init: Callable[[Any], Any]
  update: Callable[[Any, Any], Any]
  uses_meta: bool = False
  weight_fn: Optional[Callable[[Any, Any, Any], Any]] = None
