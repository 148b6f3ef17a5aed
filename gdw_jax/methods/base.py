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

Two optional hooks cover what cannot be said per step with the batch alone:

* ``epoch_start(ectx: EpochContext, state) -> indices or None``, called by the trainer (outside
  ``jit``) before every epoch: positions of training samples that form this epoch's meta set
  (with the labels the learner sees), or None to keep the held-out clean meta set. CMW-Net uses
  it for its balanced in-train meta set (long-tail recipe) and its small-loss meta set (SL). It
  must be a pure function of its arguments (so a resumed run selects the same set).
* ``transform_input(state, rng, x, labels, step) -> (x_in, info)``, called inside the jitted
  step before the forward: the classifier is run (and differentiated) on ``x_in`` and ``info``
  reaches ``update`` as ``ctx.input_info`` (mixup for CMW-Net-SL).

A method that keeps a copy of the classifier (CMW-Net-SL's EMA teacher) sets
``init_takes_model`` and is initialised as ``init(rng, params, model_state)``.

Anything that must survive a resume (EMA parameters, ABSGD's moving average, pseudo-labels)
lives in the method state pytree.
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


class EpochContext(NamedTuple):
  """What ``Method.epoch_start`` may look at (host side, between epochs)."""
  epoch: int                  # the epoch about to start (0-based)
  seed: int                   # config.seed
  labels: np.ndarray          # the (noisy) training labels the learner sees, [n]
  class_counts: np.ndarray    # their per-class counts
  params: Any                 # classifier parameters after the previous epoch
  model_state: Any            # and its BN statistics
  # (params, model_state) -> per-sample CE [n] of the whole training set, eval mode, no augmentation
  train_losses: Callable[[Any, Any], np.ndarray]


class Method(NamedTuple):
  name: str
  init: Callable[[Any], Any]
  update: Callable[[Any, Any], Any]
  uses_meta: bool = False
  weight_fn: Optional[Callable[[Any, Any, Any], Any]] = None
  epoch_start: Optional[Callable[[EpochContext, Any], Optional[np.ndarray]]] = None
  transform_input: Optional[Callable[..., Any]] = None
  init_takes_model: bool = False  # init(rng, params, model_state): keeps a copy (EMA teacher)
  # Host-side ``phase(step) -> int`` for methods whose step changes shape over training (warm-up,
  # meta step every k iterations). The trainer compiles one step per phase and passes it as the
  # static ``ctx.phase``, so no phase runs inside ``lax.switch`` (on XLA:CPU a convolution's
  # weight gradient inside a conditional is ~80x slower: 81 s vs 2.5 s per ResNet-32 step).
  phase: Optional[Callable[[int], int]] = None
  # How the end-of-run list of likely label errors ranks the training samples:
  # 'probability' (the final model's probability of the given label) or 'weight' (the method's
  # recorded per-sample weights over the last epochs); see gdw_jax/analysis.
  label_score: str = "probability"
