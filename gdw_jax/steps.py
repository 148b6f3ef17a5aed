"""The compiled step of a launch: every run's step at once, and many steps per call.

:func:`gdw_jax.train_step.make_train_step` is one run's step (wrapped by
:func:`gdw_jax.guards.with_finite_check`: ``(state, batch, meta) -> (state, metrics, weights,
finite)``). Here it becomes:

* :class:`RunsStep`: the step of every run of a launch. One run: the step itself. K runs: one
  ``jax.vmap`` over a leading runs axis of the state, batch and meta batch, so K seeds are one
  program (on K devices, one run per device: :mod:`gdw_jax.parallel`).
* :func:`make_chunk_fn`: up to ``max_steps`` steps per call, for data kept on the device. The
  call gets each step's batch positions (``plan``), gathers the batches from the device-resident
  images inside ``jit``, runs the steps in a ``lax.fori_loop`` (the trip count is an argument,
  so one compiled program serves every chunk length) and writes every step's metrics, weights
  and finite flags into ``[max_steps, ...]`` buffers on the device: one transfer per call.
* :func:`make_host_step`: the jitted step on batches the host gathered (data that stream).

Both paths run the same step on the same batches; on CPU they give bit-identical results
(``tests/test_loop.py``). Part of the step layer, with :mod:`gdw_jax.train_step` and
:mod:`gdw_jax.guards`: it takes the step as a function and imports only the device mesh.
"""
from __future__ import annotations

import functools
import hashlib
import re
from typing import Callable, Optional, Sequence

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from gdw_jax import parallel


class RunsStep:
  """``step(state, batch, meta, phase) -> (state, metrics, weights, finite)`` for all runs.

  ``batched``: the arguments have a leading runs axis (one ``jax.vmap``ped program: each run
  equals its seed alone up to float summation order). ``run_steps``: one step for every run
  (methods built from the same data: one function), or one step per run. A run's method may
  hold constants of its own data (e.g. class-balanced weights from its seed's noisy label
  counts): then every run's step is traced, the programs must agree up to those constants, and
  the program takes each run's constants as an input (still one compiled step; steps that
  differ in more than constants are refused).
  """

  def __init__(self, run_steps: Sequence[Callable], batched: bool):
    self.raw_steps, self.batched = list(run_steps), batched
    # jitted: one trace per phase and shapes, shared by the probes and the compiled programs
    self.run_steps = [jax.jit(s, static_argnames="phase") for s in run_steps]
    self._traced = {}

  def __call__(self, state, batch, meta, phase=None):
    if not self.batched:
      return self.run_steps[0](state, batch, meta, phase=phase)
    if len(self.run_steps) == 1:
      return jax.vmap(functools.partial(self.run_steps[0], phase=phase))(state, batch, meta)
    return self._with_run_constants(state, batch, meta, phase)

  def _with_run_constants(self, state, batch, meta, phase):
    program, consts, out_tree = self._trace_runs(state, batch, meta, phase)
    if consts is None:  # the same constants in every run: run 0's step is every run's
      return jax.vmap(functools.partial(self.run_steps[0], phase=phase))(state, batch, meta)

    def one_run(run_consts, state, batch, meta):
      out = jax.core.eval_jaxpr(program.jaxpr, run_consts, *jax.tree.leaves((state, batch, meta)))
      return jax.tree.unflatten(out_tree, out)

    return jax.vmap(one_run)(consts, state, batch, meta)

  def _trace_runs(self, state, batch, meta, phase):
    """Every run's step traced on one run's shapes: ``(run 0's program, every run's constants
    stacked (None when every run has the same), the output structure)``; cached per phase and
    shapes. (When every run has the same constants, run 0's step is vmapped as it is: its
    constants stay compile-time constants, as they are for a run alone.)"""
    def per_run(tree):
      return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), tree)

    args = (per_run(state), per_run(batch), per_run(meta))
    key = (phase, jax.tree.structure(args), tuple((a.shape, a.dtype)
                                                  for a in jax.tree.leaves(args)))
    if key not in self._traced:
      # the raw (not jitted) steps: their constants are the traced program's own, not hidden
      # inside an inner jit
      traced = [jax.make_jaxpr(functools.partial(s, phase=phase), return_shape=True)(*args)
                for s in self.raw_steps]
      if len({_program_text(c) for c, _ in traced}) != 1:
        raise ValueError("the seeds' steps differ in more than constants (the method's program "
                         "depends on each seed's data); run these seeds as separate launches")
      program, shapes = traced[0]
      consts = [np.stack([np.asarray(c.consts[i]) for c, _ in traced])
                for i in range(len(program.consts))]
      if all(np.array_equal(c, c[:1].repeat(len(c), 0)) for c in consts):
        consts = None
      self._traced[key] = (program, consts, jax.tree.structure(shapes))
    return self._traced[key]


def _program_text(closed) -> str:
  """A traced program without its own constants' values (without object addresses either),
  but with the values of constants inside nested programs (e.g. an inner jit): those cannot
  differ between the runs (only the program's own constants become per-run inputs)."""
  consts = [(np.shape(c), np.asarray(c).dtype.str) for c in closed.consts]
  nested = [hashlib.sha1(np.ascontiguousarray(c).tobytes()).hexdigest()
            for c in _nested_consts(closed.jaxpr)]
  return re.sub(r"0x[0-9a-f]+", "", str(closed.jaxpr)) + repr(consts) + repr(nested)


def _nested_consts(jaxpr) -> list:
  """The constants of every program nested in ``jaxpr``'s equations, in order, as NumPy."""
  out = []
  for eqn in jaxpr.eqns:
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          out += [np.asarray(c) for c in sub.consts] + _nested_consts(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          out += _nested_consts(sub)
  return out


def gather_batches(images, data, idx, meta_idx):
  """One run's training batch (positions ``idx`` in its training set) and meta batch (positions
  ``meta_idx`` in its current meta set, or None) from the device-resident ``images``."""
  batch = {"x": images[data["train_rows"][idx]], "y": data["labels"][idx],
           "y_true": data["true_labels"][idx], "index": idx}
  meta = None
  if meta_idx is not None:
    meta = {"x": images[data["meta_rows"][meta_idx]], "y": data["meta_labels"][meta_idx]}
  return batch, meta


def make_chunk_fn(step: Callable, phase: Optional[int], max_steps: int, batched: bool):
  """``chunk(state, data, plan, n) -> (state, outputs)``: steps ``0..n-1`` of ``plan``.

  ``data``: ``images`` ``[P, ...]`` (shared) and per run ``train_rows``, ``labels``,
  ``true_labels`` ``[(K,) n_train]``, ``meta_rows``, ``meta_labels`` ``[(K,) n_meta]``;
  ``plan``: ``idx`` ``[max_steps, (K,) B]`` and ``meta_idx`` ``[max_steps, (K,) B_meta]`` (or
  None), padded past ``n``; ``outputs``: ``(metrics, weights, finite)`` with a leading
  ``[max_steps]`` axis (rows past ``n`` are zeros). Jit it with ``phase`` fixed.
  """
  inner = jax.jit(step, static_argnames="phase")  # traced once for the shapes and the loop body
  gather = jax.vmap(gather_batches, in_axes=(None, 0, 0, 0)) if batched else gather_batches

  def chunk(state, data, plan, n):
    images = data["images"]
    per_run = {k: v for k, v in data.items() if k != "images"}

    def one(t, state):
      meta_idx = plan["meta_idx"][t] if plan["meta_idx"] is not None else None
      batch, meta = gather(images, per_run, plan["idx"][t], meta_idx)
      state, metrics, weights, finite = inner(state, batch, meta, phase=phase)
      return state, (metrics, weights, finite)

    shapes = jax.eval_shape(one, 0, state)[1]
    buffers = jax.tree.map(lambda s: jnp.zeros((max_steps,) + s.shape, s.dtype), shapes)

    def body(t, carry):
      state, buffers = carry
      state, outs = one(t, state)
      buffers = jax.tree.map(lambda b, o: jax.lax.dynamic_update_index_in_dim(b, o, t, 0),
                             buffers, outs)
      return state, buffers

    return jax.lax.fori_loop(0, n, body, (state, buffers))

  return chunk


# XLA hoists loop-invariant work out of a loop body (constants, and ops on them); the hoisted
# ops then no longer fuse with their consumers, which can change float rounding (e.g. a multiply
# no longer contracted into a fused multiply-add). Without that pass the step in the loop body
# compiles as the per-step program does: bit-identical results, and nothing lost, since the
# per-step path recomputes those values every step too.
CHUNK_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion"}


def jit_chunk_fn(step: Callable, phase, max_steps: int, batched: bool, mesh):
  """:func:`make_chunk_fn`, jitted: the state donated, kept where it was (replicated, or split
  along the runs axis); the outputs replicated (every process reads them)."""
  return jax.jit(make_chunk_fn(step, phase, max_steps, batched), donate_argnums=0,
                 out_shardings=(parallel.state_sharding(mesh), parallel.replicated(mesh)),
                 compiler_options=CHUNK_COMPILER_OPTIONS)


def jit_host_step(step: Callable, phase, mesh):
  """The step on host-gathered batches, jitted as the per-step loop always was: the state
  donated; the state replicated (or split along the runs axis), the outputs replicated."""
  return jax.jit(functools.partial(step, phase=phase), donate_argnums=0,
                 out_shardings=(parallel.state_sharding(mesh), parallel.replicated(mesh),
                                parallel.replicated(mesh), parallel.replicated(mesh)))
