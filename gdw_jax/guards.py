"""What stops a launch: a non-finite step, or a SIGTERM / SIGINT.

Two guards, each in two parts, for the loop (:mod:`gdw_jax.loop`) to hold:

* finite: :func:`with_finite_check` wraps one run's step (:mod:`gdw_jax.train_step`) so that it
  also returns "all finite" flags for each metric, the weights and each part of the new state,
  computed inside the jitted step; :class:`FiniteGuard` reads them on the host, with the steps'
  other outputs (no extra sync), and raises :class:`NonFiniteError` at the first bad step:
  the run stops, unsaved.
* signal: :class:`SignalGuard` turns a SIGTERM / SIGINT during training into a request the loop
  reads between segments; the loop then saves the step it reached and raises
  :class:`Preempted` (the command line exits ``128 + signal``; the same launch resumes).

At the bottom of the trainer with the step: this module imports nothing of the package.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils


class NonFiniteError(FloatingPointError):
  """A NaN/inf in a loss, the weights, the parameters or a state: the run stops, unsaved."""


class Preempted(Exception):
  """A SIGTERM or SIGINT stopped the launch after step ``step``, saved (``checkpoint=True``):
  the same launch again resumes from there. The command line exits with :attr:`exit_code`."""

  def __init__(self, signum: int, step: int, steps_per_epoch: int, saved: bool):
    self.signum, self.step, self.saved = int(signum), int(step), saved
    how = ("run the same command again to resume" if saved else
           "nothing was saved (checkpoint=false)")
    super().__init__(f"stopped by {signal.Signals(self.signum).name} at step {step} "
                     f"(epoch {step / steps_per_epoch:.2f}); {how}")

  @property
  def exit_code(self) -> int:
    """``128 + signal``, the shell's convention for a process ended by a signal."""
    return 128 + self.signum


def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def with_finite_check(train_step):
  """``step(...) -> (state, metrics, weights, finite)``; ``finite`` maps each scalar metric,
  ``weights`` and each part of the new state to "all finite" (checked inside the jitted step)."""

  def step(state, batch, meta_batch, phase=None):
    new_state, step_metrics, weights = train_step(state, batch, meta_batch, phase)
    finite = {k: jnp.isfinite(v) for k, v in step_metrics.items()}
    finite.update(weights=_all_finite(weights), params=_all_finite(new_state.params),
                  bn_stats=_all_finite(new_state.model_state),
                  opt_state=_all_finite(new_state.opt_state),
                  method_state=_all_finite(new_state.method_state))
    return new_state, step_metrics, weights, finite

  return step


class FiniteGuard:
  """Stops the launch at the first step whose metrics, weights or new state are not finite;
  the flags come back with the steps' other outputs, so this costs no extra sync."""

  def __init__(self, steps_per_epoch: int, ckpt_dir: Optional[str], seeds=None):
    self.spe, self.ckpt_dir, self.seeds = steps_per_epoch, ckpt_dir, seeds
    self.last_saved: Optional[int] = None

  def check(self, blocks: Sequence[Any]) -> None:
    """``blocks``: the steps' outputs on the host (:class:`gdw_jax.inputs.Block`)."""
    for b in blocks:
      if all(np.all(v) for v in b.finite.values()):
        continue
      for t, step in enumerate(b.steps):
        for k in range(b.idx.shape[1]):
          bad = [key for key, ok in b.finite.items() if not ok[t, k]]
          if bad:
            self._fail(step, bad, k)

  def _fail(self, step: int, bad: List[str], k: int) -> None:
    epoch, s = divmod(step, self.spe)
    where = (f"the last good checkpoint is step {self.last_saved} in {self.ckpt_dir}"
             if self.last_saved is not None else "no checkpoint was saved")
    run = f" of the run with seed {self.seeds[k]}" if self.seeds else ""
    raise NonFiniteError(
        f"non-finite {', '.join(bad)} at step {step} (epoch {epoch}, batch {s}){run}; run "
        f"stopped without saving, {where} (lower the learning rate or check the data)")


class SignalGuard:
  """SIGTERM / SIGINT while training: remembered, not fatal; the loop then saves the step it
  reached and stops (:meth:`gdw_jax.loop.Trainer.train`). Installed only while the loop runs
  (from the main thread); the handlers before are put back after, also on error. After the
  first signal the previous handler is back, so a second one acts as it would without the guard
  (Ctrl-C twice: KeyboardInterrupt; a second SIGTERM: the process ends at once)."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum = 0
    self._previous: Dict[int, Any] = {}

  def __enter__(self):
    self.signum = 0
    if threading.current_thread() is threading.main_thread():  # signal.signal's rule
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, _installable(handler))
    self._previous = {}

  def _handle(self, signum: int, frame) -> None:
    del frame
    self.signum = signum
    signal.signal(signum, _installable(self._previous[signum]))

  def requested(self) -> int:
    """The signal that asked to stop (0: none). On several processes every process gets the
    largest any process got (one all-gather per segment), so all stop after the same step and
    save it together: a signal may reach the hosts at different times, or only one of them.
    (JAX's ``multihost_utils.reached_preemption_sync_point`` needs a call at every step and
    only knows SIGTERM; the loop's host events come once per segment.)"""
    if jax.process_count() == 1:
      return self.signum
    return int(np.max(multihost_utils.process_allgather(np.int32(self.signum))))


def _installable(handler):
  # signal.signal returns None for a handler not set from Python; the default stands in for it
  return signal.SIG_DFL if handler is None else handler
