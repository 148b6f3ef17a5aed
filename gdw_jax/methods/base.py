"""The interface every data-weighting method implements, and how a method is declared.

A method is a pair of pure functions (like an optax transform)::

    state = method.init(rng, params, model_state)
    cotangent, state, aux = method.update(ctx, state)

``init`` gets the classifier (``params``, ``model_state``) for methods that keep a copy of it
(CMW-Net-SL's EMA teacher); the others ignore it, and ``init(rng)`` (both ``None``) gives every
method's state template without a classifier (enough to restore a saved state).

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

Anything that must survive a resume (EMA parameters, ABSGD's moving average, pseudo-labels)
lives in the method state pytree.

A method is declared to the config-driven trainer by a :class:`MethodSpec` (registered with
:func:`gdw_jax.methods.register`): its name, how to build it from a run config (through its
keyword constructor), the option groups it reads and the checks of its options. Nothing else in
the package names a method, so a new method is one file.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np

from gdw_jax.options import OptionGroup


class DataInfo(NamedTuple):
  """What a method may know about the training data when it is built."""
  num_classes: int
  num_train: int
  class_counts: np.ndarray   # per-class counts of the (noisy) training labels
  steps_per_epoch: int
  # [n, C] bool candidate sets (partial labels, gdw_jax/data/partial.py), None for single labels
  candidates: Optional[np.ndarray] = None


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
  """The pure functions of one weighting method (see the module docstring)."""
  name: str
  init: Callable[..., Any]        # (rng, params=None, model_state=None) -> state
  update: Callable[[Any, Any], Any]
  uses_meta: bool = False
  weight_fn: Optional[Callable[[Any, Any, Any], Any]] = None
  epoch_start: Optional[Callable[[EpochContext, Any], Optional[np.ndarray]]] = None
  transform_input: Optional[Callable[..., Any]] = None
  # Host-side ``phase(step) -> int`` for methods whose step changes shape over training (warm-up,
  # meta step every k iterations). The trainer compiles one step per phase and passes it as the
  # static ``ctx.phase``, so no phase runs inside ``lax.switch`` (on XLA:CPU a convolution's
  # weight gradient inside a conditional is ~80x slower: 81 s vs 2.5 s per ResNet-32 step).
  phase: Optional[Callable[[int], int]] = None
  # How the end-of-run list of likely label errors ranks the training samples:
  # 'probability' (the final model's probability of the given label) or 'weight' (the method's
  # recorded per-sample weights over the last epochs); see gdw_jax/analysis.
  label_score: str = "probability"


def _never(config) -> bool:
  del config
  return False


class MethodSpec(NamedTuple):
  """How the config-driven trainer builds and checks a method (one per registered name).

  * ``build(config, info: DataInfo, dtype=None) -> Method``: reads the method's options from the
    run config and calls its keyword constructor (the one way to make the method).
  * ``groups``: the config groups it reads (``config.<group.name>``). Their defaults are
    assembled into ``configs.common.base_config()``, their checks run when the method is chosen,
    and a command-line override of a group the chosen method does not read is an error.
  * ``validate(config)``: checks that need more than one group (e.g. GDW needs ``prob_clamp <
    1``); raises :class:`gdw_jax.options.ConfigError`.
  * ``needs_meta(config)``: whether the run needs a held-out meta set (``meta_per_class >= 1``).
  * ``candidates``: whether it trains on candidate sets (partial labels): ``no`` (refused when
    the data have them), ``optional`` (uses them when given: GDW) or ``required`` (PRODEN).
  * ``loss_overrides``: ``config.loss`` keys the method's name implies (``focal`` forces the
    focal loss). Its ``build`` passes them to :func:`gdw_jax.losses.make_base_loss` (the loss
    module knows no method); validation and the run's model read them through
    :func:`gdw_jax.methods.loss_settings` / :func:`gdw_jax.methods.with_loss_overrides`.
  """
  name: str
  build: Callable[..., Method]
  groups: Tuple[OptionGroup, ...] = ()
  validate: Optional[Callable[[Any], None]] = None
  needs_meta: Callable[[Any], bool] = _never
  loss_overrides: Dict[str, Any] = {}
  candidates: str = "no"


CANDIDATE_USES = ("no", "optional", "required")


def always(config) -> bool:
  """``needs_meta`` of a method that always runs a meta step on the held-out meta set."""
  del config
  return True
