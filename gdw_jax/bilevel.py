"""The bilevel (one-step look-ahead) meta gradient shared by every meta-reweighting method.

Read top to bottom, one meta step is:

1. The method turns its weighting parameters into a weight matrix ``W`` (``[N, 1]`` instance
   weights for MW-Net / L2RW / CMW-Net, ``[N, C]`` class-level weights for GDW).
2. Virtual step: the classifier takes one plain SGD step (current lr, no momentum, no weight
   decay) on the weighted objective whose logit cotangent is ``B * W / N``:

       theta'(W) = theta - lr * J_theta(z)^T (B * W / N)

   where ``z = f_theta(x)`` are the training logits (train-mode BN) and ``B = dl/dz`` is the
   method's per-sample base-loss gradient (for CE ``E = softmax - onehot``), held constant.
3. Meta loss: plain mean cross-entropy of the virtual model on a clean meta batch (train-mode BN;
   the BN statistics of this forward are discarded):  ``L_meta(W) = CE(f_{theta'(W)}(x_m), y_m)``.
4. Meta gradient ``dL_meta / dW``, which the method pulls back to its own parameters (e.g. a VJP
   through the weight net) or uses directly (GDW's class-level step, L2RW's weights).

Methods whose virtual objective is not ``B * W / N`` pass what differs: ``norm`` (e.g. 1 for
weights that are already normalised coefficients, MW-Net's sum-normalised loss), a callable
``cotangent_fn(W)`` (affine in ``W``, e.g. CMW-Net-SL's mix of label and pseudo-label terms), and
``meta_loss_fn(ctx, params)`` (e.g. mixup CE on the meta batch, or CE of scaled cosine logits).
Any hypergradient route must honour these three.

The ``autodiff`` route below is the reference: the virtual update is a differentiable function
inside ``jax.value_and_grad`` over ``W`` (reverse over reverse). By the chain rule its result is

    dL_meta/dW[i, c] = -(lr / N) * B[i, c] * (J_theta(z) . grad L_meta(theta'))[i, c]

(summed over ``c`` for instance weights), which the tests check against this closed form.

The ``jvp`` route computes exactly that closed form: because the virtual step is linear in
``W``, ``dL_meta/dW`` needs only ``grad L_meta(theta')`` and one forward-mode product
``J_theta(z) . grad L_meta(theta')`` (a ``jax.jvp`` of the logits at ``theta``), so no
second-order graph is kept in memory. When the trainer passes the VJP of its own forward
(``ctx.logits_vjp``), the virtual step reuses it instead of forwarding the batch again.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp

from gdw_jax import losses

HYPERGRADS = ("autodiff", "jvp")


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a weighting method may look at during one training step (built inside ``jit``).

  Shapes are checked when it is built (chex; static, so also inside ``jit``): integer
  ``labels [N]``, ``logits [N, C]`` floating, ``x`` with ``N`` rows, a scalar ``lr``, and a
  meta batch (if any) of integer ``meta_y [M]`` with ``M`` rows of ``meta_x``.
  """
  apply_fn: Callable[..., Any]  # (params, model_state, x, train) -> (logits, model_state)
  params: Any                   # classifier parameters theta
  model_state: Any              # BN statistics before the step
  x: jnp.ndarray                # training inputs (augmented)
  labels: jnp.ndarray           # the (noisy) labels the learner sees, [N]
  logits: jnp.ndarray           # f_theta(x) in train mode, [N, C]
  lr: jnp.ndarray               # the classifier's current learning rate (virtual-step lr)
  meta_x: Any = None            # clean meta batch (None for methods without a meta step)
  meta_y: Any = None
  rng: Any = None               # a key for this step (augmentation already consumed its own)
  step: Any = None              # global step before this update
  norm_size: Any = None         # the N of a mean over the batch (None: the batch size)
  hypergrad: str = "autodiff"
  logits_vjp: Any = None        # VJP of theta -> logits from the step's own forward (optional)
  index: Any = None             # positions of the batch in the training set [N] (per-sample memory)
  input_info: Any = None        # what the method's ``transform_input`` returned (e.g. mixup lambda)
  phase: Any = None             # static phase from ``Method.phase`` (None: decide on device)

  def __post_init__(self):
    check_step_arrays(self.x, self.labels, self.logits, self.meta_x, self.meta_y,
                      "StepContext")
    chex.assert_rank(self.lr, 0, custom_message="StepContext: lr must be a scalar")
    if self.norm_size is None:  # frozen dataclass: resolved once, here
      object.__setattr__(self, "norm_size", self.labels.shape[0])

  @property
  def batch_size(self) -> int:
    """The number of samples in the batch (``norm_size`` is the divisor of a batch mean)."""
    return self.labels.shape[0]


def check_step_arrays(x, labels, logits, meta_x, meta_y, where: str) -> None:
  """chex checks of one step's arrays (any of ``x``, ``logits``, ``meta_x``, ``meta_y`` may be
  None); ``where`` names the public call in the message."""
  chex.assert_rank(labels, 1, custom_message=f"{where}: labels must be class indices [N]")
  chex.assert_type(labels, int, custom_message=f"{where}: labels must be integer class indices")
  n = labels.shape[0]
  if x is not None:
    chex.assert_axis_dimension(x, 0, n, custom_message=f"{where}: x must have one row per label "
                                                       f"({n})")
  if logits is not None:
    chex.assert_rank(logits, 2, custom_message=f"{where}: logits must be [N, C] (apply_fn must "
                                               "return (logits, model_state))")
    chex.assert_axis_dimension(logits, 0, n, custom_message=f"{where}: logits must have one row "
                                                           f"per label ({n})")
    chex.assert_type(logits, float, custom_message=f"{where}: logits must be floating")
  if (meta_x is None) != (meta_y is None):
    raise ValueError(f"{where}: give both meta_x and meta_y, or neither")
  if meta_y is not None:
    chex.assert_rank(meta_y, 1, custom_message=f"{where}: meta labels must be class indices [M]")
    chex.assert_type(meta_y, int, custom_message=f"{where}: meta labels must be integer class "
                                                 "indices")
    chex.assert_axis_dimension(meta_x, 0, meta_y.shape[0], custom_message=(
        f"{where}: the meta batch must have one row per meta label ({meta_y.shape[0]})"))


def after(tree, *deps):
  """``tree``, made data-dependent on ``deps``: work on the result cannot start before ``deps``
  exist, so XLA cannot hoist a recomputed forward above an earlier backward pass and keep its
  activations alive through it (measured on XLA:CPU, ResNet-32: 835 MB of temporaries for a
  meta gradient followed by a JVP, 369 MB with this; ``lax.optimization_barrier`` did not do
  it). The values are unchanged: ``x + 0 * s`` is ``x`` for finite ``s`` (a non-finite ``s``
  stops the run anyway)."""
  zero = 0.0 * sum(jnp.sum(leaf) for leaf in jax.tree.leaves(deps))
  return jax.tree.map(lambda a: a + zero.astype(a.dtype), tree)


def train_logits(ctx: StepContext, params):
  """``f_params(x)`` in train mode (batch statistics; the BN update is discarded)."""
  return ctx.apply_fn(params, ctx.model_state, ctx.x, True)[0]


def virtual_params(ctx: StepContext, cotangent, reuse_vjp: bool = False):
  """``theta' = theta - lr * J_theta(z)^T cotangent`` (plain SGD on every parameter)."""
  if reuse_vjp and ctx.logits_vjp is not None:
    vjp = ctx.logits_vjp
  else:
    _, vjp = jax.vjp(lambda p: train_logits(ctx, p), ctx.params)
  (grad,) = vjp(cotangent)
  lr = ctx.lr
  return jax.tree.map(lambda p, g: p - lr.astype(p.dtype) * g, ctx.params, grad)


def meta_loss(ctx: StepContext, params):
  """Mean CE of the classifier ``params`` on the meta batch, train-mode BN (stats discarded)."""
  logits, _ = ctx.apply_fn(params, ctx.model_state, ctx.meta_x, True)
  return jnp.mean(losses.cross_entropy(logits, ctx.meta_y))


def meta_loss_from(logit_loss: Callable[[Any, Any], Any]):
  """``(ctx, params) -> logit_loss(f_params(meta_x), meta_y)`` (train-mode BN, stats discarded)."""

  def fn(ctx: StepContext, params):
    logits, _ = ctx.apply_fn(params, ctx.model_state, ctx.meta_x, True)
    return logit_loss(logits, ctx.meta_y)

  return fn


def meta_gradient(ctx: StepContext, base_grad, weights, *, norm=None, meta_loss_fn=None):
  """``(L_meta(theta'(W)), dL_meta/dW)`` at ``W = weights``.

  ``base_grad`` ``[N, C]`` is held constant (stop-gradient) and the virtual cotangent is
  ``base_grad * W / norm`` (``norm`` defaults to ``ctx.norm_size``); ``weights`` is ``[N, 1]``
  or ``[N, C]`` and the returned gradient has its shape. ``base_grad`` may instead be a callable
  ``W -> cotangent [N, C]`` (then ``norm`` is unused; e.g. a sum-normalised weighting).
  ``meta_loss_fn(ctx, params) -> scalar`` replaces :func:`meta_loss`.
  """
  if callable(base_grad):
    cotangent_fn = base_grad
  else:
    base_grad = jax.lax.stop_gradient(base_grad)
    n = ctx.norm_size if norm is None else norm

    def cotangent_fn(w):
      return base_grad * w / n

  loss_fn = meta_loss if meta_loss_fn is None else meta_loss_fn

  if ctx.hypergrad == "autodiff":
    return jax.value_and_grad(lambda w: loss_fn(ctx, virtual_params(ctx, cotangent_fn(w))))(
        weights)
  if ctx.hypergrad == "jvp":
    # theta' is linear in the cotangent, so dL/dcot = -lr * J grad L_meta(theta') exactly; the
    # pullback through cotangent_fn (which may be nonlinear in W, e.g. sum-normalised) is a VJP.
    cot, pullback = jax.vjp(cotangent_fn, weights)
    theta_v = virtual_params(ctx, cot, reuse_vjp=True)
    loss, grad_meta = jax.value_and_grad(lambda p: loss_fn(ctx, p))(theta_v)
    # Forward mode streams: recomputing the primal here, after the meta backward, keeps no
    # activation of the training batch alive across it (see ``after``).
    _, jz = jax.jvp(lambda p: train_logits(ctx, p), (after(ctx.params, grad_meta),),
                    (grad_meta,))
    (dw,) = pullback(-ctx.lr.astype(jz.dtype) * jz)
    return loss, dw
  raise ValueError(f"unknown hypergrad {ctx.hypergrad!r}; valid: {', '.join(HYPERGRADS)}")
