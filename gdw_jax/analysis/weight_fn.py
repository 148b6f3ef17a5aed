"""The learned weighting function, rebuilt from a workdir: weight as a function of the loss.

A method with a weight net exposes ``weight_fn(state, losses, labels) -> weights`` (see
:mod:`gdw_jax.methods.base`). We rebuild the method from ``config.json`` + ``data.json``, restore
its final state from ``method_state.msgpack`` and evaluate it on a loss grid for every class
label. Classes whose curves coincide share one head: MW-Net and GDW give a single curve, CMW-Net
one curve per task family (its ``weight_fn`` picks the head from the label's family). Grouping
by the curves themselves needs no knowledge of how a method stores its class -> family map.

For GDW the curve is the *first-stage* weight ``v = V_phi(loss)``, before the class-level step.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from gdw_jax import methods
from gdw_jax.analysis.workdir import Run
from gdw_jax.data import pipeline


class Curve(NamedTuple):
  classes: np.ndarray   # the class labels sharing this curve
  weights: np.ndarray   # [G] weight at each grid loss


class WeightFunction(NamedTuple):
  losses: np.ndarray    # [G] the grid of per-sample losses (nats)
  curves: List[Curve]   # one per distinct head, largest classes first


class Unavailable(Exception):
  """The run cannot give a weight-vs-loss curve (no weight net, missing files); says why."""


def rebuild_method(run: Run):
  """``(method, state)`` with the run's final method state restored."""
  if run.config is None:
    raise Unavailable("config.json is missing")
  if "plugins" in run.config:  # a run of a method registered by a plugin module
    try:
      methods.load_plugins(run.config.plugins)
    except ValueError as e:
      raise Unavailable(str(e)) from None
  if run.method not in methods.names():
    raise Unavailable(f"method {run.method!r} is not registered in this checkout")
  if run.data is None:
    raise Unavailable("data.json is missing (needed to rebuild the method)")
  if run.method_state_bytes is None:
    raise Unavailable("method_state.msgpack is missing")
  cfg = run.config  # a workdir's config.json: .get for keys older runs did not write
  if cfg.get("dtype") == "float64" and not jax.config.jax_enable_x64:
    # A float64 run read in a float32 process: evaluate the curve in float32 (enough for a
    # plot) instead of flipping jax's global x64 switch behind the caller's back.
    cfg = cfg.copy_and_resolve_references()
    cfg.dtype = "float32"
  n, k = int(run.data["num_train"]), int(run.data["num_classes"])
  counts = np.asarray(run.data.get("train_class_counts_noisy", np.full(k, n // k)))
  spe = pipeline.steps_per_epoch(n, int(cfg.batch_size), bool(cfg.get("drop_last", False)))
  # The trainer's DataInfo, from data.json (loading the dataset again would be slow).
  cand = run.labels.get("candidates") if run.labels is not None else None
  info = methods.DataInfo(num_classes=k, num_train=n, class_counts=counts, steps_per_epoch=spe,
                          candidates=cand)
  method = methods.get(run.method)(cfg, info)
  if method.weight_fn is None:
    raise Unavailable(f"{run.method} has no learned weighting function")
  # Without the classifier: a method that keeps a copy of it (CMW-Net-SL's EMA teacher) leaves
  # that part of the template None, and the saved copy is restored as it is.
  template = method.init(jax.random.PRNGKey(0))
  state = serialization.from_bytes(template, run.method_state_bytes)
  return method, state


def group_curves(weights: np.ndarray, atol: float = 1e-6) -> List[np.ndarray]:
  """Partition the rows of ``weights`` ``[C, G]`` into groups of (numerically) equal rows."""
  groups: List[List[int]] = []
  for c in range(weights.shape[0]):
    for g in groups:
      if np.allclose(weights[c], weights[g[0]], atol=atol, rtol=0):
        g.append(c)
        break
    else:
      groups.append([c])
  return [np.array(g) for g in groups]


def evaluate(method, state, num_classes: int, loss_max: float = 10.0, points: int = 201,
             class_counts=None) -> WeightFunction:
  """Evaluate ``method.weight_fn`` on ``linspace(0, loss_max)`` for every label, grouped by head.

  All ``C x G`` (loss, label) pairs go through one call, so 100 classes cost one forward.
  """
  grid = np.linspace(0.0, loss_max, points)
  losses = jnp.asarray(np.tile(grid, num_classes), jnp.float32)
  labels = jnp.asarray(np.repeat(np.arange(num_classes), points), jnp.int32)
  w = np.asarray(method.weight_fn(state, losses, labels), np.float64)
  w = w.reshape(num_classes, points)
  groups = group_curves(w)
  if class_counts is not None:  # the largest ("head") family first, as CMW-Net lists them
    counts = np.asarray(class_counts, np.float64)
    groups.sort(key=lambda g: -counts[g].mean())
  return WeightFunction(grid, [Curve(g, w[g[0]]) for g in groups])


def weight_function(run: Run, loss_max: float = 10.0, points: int = 201) -> WeightFunction:
  """The run's learned weight-vs-loss curves; raises :class:`Unavailable` with the reason."""
  method, state = rebuild_method(run)
  return evaluate(method, state, run.num_classes, loss_max, points, run.train_counts)


def describe_classes(classes, counts: Optional[np.ndarray] = None, limit: int = 6) -> str:
  """``'classes 0, 3, 5 (n=118-126)'`` for a legend; long lists are cut."""
  classes = list(map(int, classes))
  names = ", ".join(map(str, classes[:limit])) + (f", ... ({len(classes)})"
                                                  if len(classes) > limit else "")
  text = ("class " if len(classes) == 1 else "classes ") + names
  if counts is not None:
    c = np.asarray(counts)[classes]
    text += f" (n={c.min()})" if c.min() == c.max() else f" (n={c.min()}-{c.max()})"
  return text
