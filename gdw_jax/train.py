"""The entry: :func:`train_and_evaluate` trains one config and leaves its files in a workdir.

The top of the trainer (``python -m gdw_jax.main`` calls it; so may a notebook). One config,
followed from here down, crosses these layers; each imports only the ones below it, never one
above (``tests/test_layers.py`` keeps it so):

* :mod:`gdw_jax.train` (this module): the entry, holding the workdir's lease
  (:mod:`gdw_jax.lease`: one launch per workdir) around the loop;
* :mod:`gdw_jax.loop`: the loop over the global step (resume, segments between host events,
  evaluation, checkpoints, the end-of-run files);
* :mod:`gdw_jax.inputs`: the loop's batch providers (images on the device, gathered on the host,
  or streamed);
* :mod:`gdw_jax.runs`: a launch's pieces: each run's setup (data, model, method, optimizer), one
  run or several seeds side by side, their meta sets and the files they leave;
* the step: :mod:`gdw_jax.steps` (the launch's compiled step: vmapped over the runs, a chunk of
  steps per call), :mod:`gdw_jax.guards` (the finite check and the stop on a signal) and
  :mod:`gdw_jax.train_step` (one run's state, step and evaluation);
* below them the library: methods, models, losses, data, :mod:`gdw_jax.parallel` (the device
  mesh), checkpoints and metrics files.

Also importable from here: the errors :func:`train_and_evaluate` raises (:class:`ConfigError`,
:class:`NonFiniteError`, :class:`Preempted`), and, for scripts written when this module held the
step too, the step's names (``make_train_step``, ``create_train_state``, ``TrainState``,
``make_eval_fn``, ``in_top_k``, ``with_finite_check``, ``setup``, ``Setup``): new code imports
them from their own modules.
"""
from __future__ import annotations

from typing import Any, Dict

from gdw_jax import lease, loop, parallel, runs
from gdw_jax.guards import NonFiniteError, Preempted, with_finite_check
from gdw_jax.options import ConfigError
from gdw_jax.runs import Setup, setup
from gdw_jax.train_step import (TrainState, create_train_state, in_top_k, make_eval_fn,
                                make_train_step)


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Train ``config`` and write config, labels, metrics and final results to ``workdir``.

  One run (``config.seed``) returns its ``final.json`` dict. Several (``config.seeds``) train as
  one program, each in ``workdir/seed_<s>/``, and return the ``summary.json`` dict (each run's
  final dict under ``runs``, mean and std over seeds).

  If ``workdir`` holds checkpoints of the same config, the launch resumes from the latest one
  and ends exactly as an uninterrupted one would (bit-identical on CPU).

  The launch holds the workdir's lease (:mod:`gdw_jax.lease`) from before its first write to its
  end: another launch holding it stops this one with :class:`gdw_jax.lease.LeaseHeld` (a
  ConfigError), nothing written.
  """
  prepared = runs.prepare(config, workdir)  # validated and built; nothing written yet
  with lease.hold(workdir, config, parallel.is_primary(), parallel.from_primary) as held:
    runs.validate_workdirs(config, workdir)  # again: from now on no other launch writes there
    trainer = loop.Trainer(prepared, heartbeat=held.beat)
    trainer.train()
    return trainer.finish()


__all__ = ["train_and_evaluate", "ConfigError", "NonFiniteError", "Preempted",
           # the step's names, from their own modules (see the module docstring)
           "TrainState", "create_train_state", "make_train_step", "make_eval_fn", "in_top_k",
           "with_finite_check", "Setup", "setup"]
