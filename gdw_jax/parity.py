"""Step parity with the official GDW / MW-Net PyTorch code.

    python -m gdw_jax.parity ../shared/fixtures/official_gdw_cifar10_2steps.npz [--tol 1e-8]

A fixture (format: ``../shared/fixtures/README.md``) records the official ``train()`` running a
few steps in float64 from known ResNet-32 / VNet weights on known batches. This tool starts our
ResNet-32 and weight net from the same weights (converted by :mod:`gdw_jax.interop`), runs the
same batches through the library's own jitted step -- ``train_step.make_train_step`` with
``methods.get('gdw' | 'mwnet')`` and ``optim.classifier_optimizer``, configured from the fixture's
``hyper/*`` -- and compares, per tensor, the *updates*

    rel_err = || (after_ours - init) - (after_ref - init) || / || after_ref - init ||

for every classifier parameter, BN running statistic and weight-net parameter, and
``||G_ours - G_ref|| / ||G_ref||`` for the logit cotangent of each step. A faithful float64 step
lands at ~1e-12; anything above ``--tol`` (1e-8) is a real difference in the algorithm.
Prints the worst tensors and ends with ``parity OK max_rel_err=<x> tensors=<k>`` (exit 0) or
``parity FAILED max_rel_err=<x> worst=<name>`` (exit 1); unreadable input exits 2 with one line.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from gdw_jax import interop, methods, models, optim, train_step, validation

MODES = {"gdw": "gdw", "mw-net": "mwnet"}
HYPER = ("mode", "epoch", "epochs", "lr", "base_lr", "outer_lr", "clip", "num_classes",
         "momentum", "weight_decay", "vnet_lr", "vnet_weight_decay", "steps")


class FixtureError(ValueError):
  """The fixture file is missing or malformed (one-line message)."""


class Fixture(NamedTuple):
  path: str
  hyper: Dict[str, Any]
  init: Dict[str, np.ndarray]     # classifier, PyTorch names and layouts
  after: Dict[str, np.ndarray]
  vinit: Dict[str, np.ndarray]    # weighting net
  vafter: Dict[str, np.ndarray]
  x: np.ndarray                   # [S, N, 3, 32, 32]
  y: np.ndarray                   # [S, N]
  meta_x: np.ndarray
  meta_y: np.ndarray
  logit_grad: np.ndarray          # [S, N, C]


class Row(NamedTuple):
  name: str
  shape: tuple
  ref_norm: float
  rel_err: float


class Report(NamedTuple):
  path: str
  method: str
  rows: List[Row]
  tol: float

  @property
  def worst(self) -> Row:
    return max(self.rows, key=lambda r: (np.nan_to_num(r.rel_err, nan=np.inf), r.name))

  @property
  def max_rel_err(self) -> float:
    return self.worst.rel_err

  @property
  def ok(self) -> bool:
    return bool(self.max_rel_err <= self.tol)  # False for nan


def load_fixture(path: str) -> Fixture:
  """Read and check a fixture; raises :class:`FixtureError` with a one-line reason."""
  if not os.path.isfile(path):
    raise FixtureError(f"{path}: no such file")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except Exception as e:  # not a zip, truncated, object arrays, ...
    raise FixtureError(f"{path}: not a readable .npz fixture ({type(e).__name__}: {e})") from None

  def group(prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

  missing = [k for k in ("batch/x", "batch/y", "meta/x", "meta/y", "logit_grad")
             if k not in arrays] + [f"hyper/{k}" for k in HYPER if f"hyper/{k}" not in arrays]
  if missing:
    raise FixtureError(f"{path}: not a parity fixture, missing {', '.join(missing[:4])}")
  hyper = {k: arrays[f"hyper/{k}"].item() for k in HYPER}
  dtype = arrays["hyper/dtype"].item() if "hyper/dtype" in arrays else "float64"
  if dtype != "float64":  # float32 rounding noise (~1e-3 in BN-coupled convs) hides real bugs
    raise FixtureError(f"{path}: hyper/dtype is {dtype!r}; parity needs a float64 fixture")
  if hyper["mode"] not in MODES:
    raise FixtureError(f"{path}: unknown hyper/mode {hyper['mode']!r}; valid: {', '.join(MODES)}")
  fx = Fixture(path, hyper, group("init/"), group("after/"), group("vinit/"), group("vafter/"),
               arrays["batch/x"], arrays["batch/y"], arrays["meta/x"], arrays["meta/y"],
               arrays["logit_grad"])
  steps, c = int(hyper["steps"]), int(hyper["num_classes"])
  for name in ("init", "after", "vinit", "vafter"):
    if not getattr(fx, name):
      raise FixtureError(f"{path}: no {name}/* tensors")
  if set(fx.init) != set(fx.after) or set(fx.vinit) != set(fx.vafter):
    raise FixtureError(f"{path}: init/* and after/* name different tensors")
  ok = (fx.x.ndim == 5 and fx.x.shape[0] == steps and fx.x.shape[2:] == (3, 32, 32)
        and fx.y.shape == fx.x.shape[:2] and fx.meta_x.shape[0] == steps
        and fx.meta_x.shape[2:] == (3, 32, 32) and fx.meta_y.shape == fx.meta_x.shape[:2]
        and fx.logit_grad.shape == (*fx.y.shape, c))
  if not ok:
    raise FixtureError(f"{path}: inconsistent batch shapes for {steps} steps, {c} classes "
                       f"(batch/x {fx.x.shape}, meta/x {fx.meta_x.shape}, "
                       f"logit_grad {fx.logit_grad.shape})")
  return fx


def make_config(fx: Fixture):
  """The library config of the official run: defaults are the official knobs (prob_clamp 0.999,
  mwnet.real_weights 'updated', bn_running_var 'unbiased'); the rest comes from ``hyper/*``."""
  h = fx.hyper
  c = common.base_config()
  c.method = MODES[h["mode"]]
  c.model = "resnet32"
  c.dtype = "float64"
  c.batch_size = int(fx.y.shape[1])
  c.meta_batch_size = int(fx.meta_y.shape[1])
  c.num_epochs = int(h["epochs"])
  c.learning_rate = float(h["base_lr"])
  c.lr_schedule = "cosine_epoch"
  c.momentum = float(h["momentum"])
  c.weight_decay = float(h["weight_decay"])
  c.vnet.lr = float(h["vnet_lr"])
  c.vnet.weight_decay = float(h["vnet_weight_decay"])
  c.gdw.outer_lr = float(h["outer_lr"])
  c.gdw.clip = float(h["clip"])
  c.progress = False
  return c


def run(fx: Fixture, config=None) -> Dict[str, Any]:
  """Run the fixture's steps through ``train_step.make_train_step``; returns the tensors after the
  steps in PyTorch names (classifier, ``v:``-prefixed weight net) and the per-step cotangents.

  Float64 is enabled for this call only (``jax.enable_x64``), so importing code keeps its dtype.
  """
  with jax.enable_x64(True):
    return _run(fx, config)


def _run(fx: Fixture, config) -> Dict[str, Any]:
  config = make_config(fx) if config is None else config
  validation.validate(config)
  h = fx.hyper
  steps, num_classes = int(h["steps"]), int(h["num_classes"])
  try:
    params, model_state = interop.resnet32_from_torch(fx.init, dtype=jnp.float64)
    vparams = interop.vnet_from_torch(fx.vinit, dtype=jnp.float64)
  except interop.CheckpointError as e:
    raise FixtureError(f"{fx.path}: {e}") from None
  if params["linear"]["bias"].shape[0] != num_classes:
    raise FixtureError(f"{fx.path}: init/linear.* has {params['linear']['bias'].shape[0]} "
                       f"classes, hyper/num_classes says {num_classes}")

  # The official lr is the per-epoch cosine; start at the fixture's epoch with all its steps
  # inside that epoch and check the library's schedule gives the recorded lr.
  spe = max(steps, 1)
  schedule = optim.lr_schedule(config, spe)
  step0 = int(h["epoch"]) * spe
  lr = float(schedule(jnp.asarray(step0)))
  if abs(lr - float(h["lr"])) > 1e-12 * abs(float(h["lr"])):
    raise FixtureError(f"{fx.path}: hyper/lr {h['lr']} is not the cosine lr {lr} of epoch "
                       f"{h['epoch']} (base_lr {h['base_lr']}, epochs {h['epochs']})")

  model = models.get(config.model, num_classes, config, jnp.float64)
  info = methods.DataInfo(num_classes, int(fx.y.size), np.bincount(fx.y.ravel(), None,
                                                                   num_classes), spe)
  method = methods.get(config.method)(config, info)
  tx = optim.classifier_optimizer(config)
  method_state = method.init(jax.random.PRNGKey(0))
  expected = jax.tree.map(jnp.shape, method_state["params"])
  if jax.tree.map(jnp.shape, vparams) != expected:
    raise FixtureError(f"{fx.path}: vinit/* does not match the method's weight net {expected}")
  method_state = {**method_state, "params": vparams}  # optimizer state: zeros, shapes only
  state = train_step.TrainState(step=jnp.asarray(step0, jnp.int32), params=params,
                           model_state=model_state, opt_state=tx.init(params),
                           method_state=method_state, rng=jax.random.PRNGKey(0))
  step_fn = jax.jit(train_step.make_train_step(model, method, tx, schedule, return_cotangent=True,
                                          hypergrad=config.hypergrad))

  def nhwc(x):
    return jnp.asarray(np.transpose(x, (0, 2, 3, 1)), jnp.float64)

  cotangents = []
  for s in range(steps):
    batch = {"x": nhwc(fx.x[s]), "y": jnp.asarray(fx.y[s])}
    meta = {"x": nhwc(fx.meta_x[s]), "y": jnp.asarray(fx.meta_y[s])}
    state, metrics, _ = step_fn(state, batch, meta)
    cotangents.append(np.asarray(metrics["logit_cotangent"]))
  out = dict(interop.resnet32_to_torch(state.params, state.model_state))
  out.update({f"v:{k}": v for k, v in
              interop.vnet_to_torch(state.method_state["params"]).items()})
  out["logit_grad"] = np.stack(cotangents)
  return out


def _rel(diff, ref) -> float:
  num, den = float(np.linalg.norm(diff)), float(np.linalg.norm(ref))
  if den == 0.0:
    return 0.0 if num == 0.0 else float("inf")
  return num / den


def compare(fx: Fixture, ours: Dict[str, Any]) -> List[Row]:
  """One :class:`Row` per tensor: relative error of our update against the reference update."""
  rows = []
  for prefix, init, after in (("", fx.init, fx.after), ("v:", fx.vinit, fx.vafter)):
    for name, ref_after in after.items():
      if name.endswith("num_batches_tracked"):
        continue
      if prefix + name not in ours:
        raise FixtureError(f"{fx.path}: our model has no tensor {name!r}")
      mine = np.asarray(ours[prefix + name], np.float64)
      d_ref = np.asarray(ref_after, np.float64) - init[name]
      d_ours = mine - init[name]
      label = f"vnet.{name}" if prefix else name
      rows.append(Row(label, tuple(d_ref.shape), float(np.linalg.norm(d_ref)),
                      _rel(d_ours - d_ref, d_ref)))
  for s, (g_ours, g_ref) in enumerate(zip(ours["logit_grad"], fx.logit_grad)):
    rows.append(Row(f"logit_grad[{s}]", tuple(g_ref.shape), float(np.linalg.norm(g_ref)),
                    _rel(g_ours - g_ref, g_ref)))
  return rows


def check(path: str, tol: float = 1e-8, config=None, hypergrad: Optional[str] = None) -> Report:
  """Load, run and compare one fixture (``config`` overrides the official configuration;
  ``hypergrad`` picks the meta-gradient route, ``autodiff`` or ``jvp``)."""
  fx = load_fixture(path)
  if hypergrad is not None:
    config = make_config(fx) if config is None else config
    config.hypergrad = hypergrad
  ours = run(fx, config)
  return Report(path, MODES[fx.hyper["mode"]], compare(fx, ours), tol)


def render(report: Report, top: int = 8) -> str:
  rows = sorted(report.rows, key=lambda r: -np.nan_to_num(r.rel_err, nan=np.inf))[:top]
  lines = [f"{os.path.basename(report.path)} ({report.method}): {len(report.rows)} tensors, "
           f"worst {len(rows)}:",
           f"  {'tensor':<28} {'shape':<16} {'|d_ref|':>10} {'rel_err':>10}"]
  lines += [f"  {r.name:<28} {str(r.shape):<16} {r.ref_norm:>10.3e} {r.rel_err:>10.3e}"
            for r in rows]
  if report.ok:
    lines.append(f"parity OK max_rel_err={report.max_rel_err:.3e} tensors={len(report.rows)}")
  else:
    lines.append(f"parity FAILED max_rel_err={report.max_rel_err:.3e} worst={report.worst.name}")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m gdw_jax.parity", description=__doc__.split(
      "\n")[0])
  parser.add_argument("fixture", help="an official step fixture (.npz)")
  parser.add_argument("--tol", type=float, default=1e-8,
                      help="largest accepted relative update error (default 1e-8)")
  parser.add_argument("--hypergrad", default=None, choices=("autodiff", "jvp"),
                      help="meta-gradient route (default: the library's default)")
  args = parser.parse_args(argv)
  if not args.tol > 0:
    parser.error(f"--tol must be > 0, got {args.tol}")
  try:
    report = check(args.fixture, args.tol, hypergrad=args.hypergrad)
  except FixtureError as e:
    print(f"parity: error: {e}", file=sys.stderr)
    return 2
  print(render(report))
  return 0 if report.ok else 1


if __name__ == "__main__":
  sys.exit(main())
