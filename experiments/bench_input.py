"""Throughput of the CIFAR input path vs what a GDW training step consumes.

    python -m experiments.bench_input --dataset cifar10 --json runs/bench_input.json
    python -m experiments.bench_input --synthetic --model wrn --set wrn_depth=10 --set wrn_widen=1

Input path, per training step, exactly as the trainer does it: batch order (the epoch's seeded
permutation, and the meta loader's), host gather of the uint8 training and meta batches,
transfer to the device, and the on-device augmentation + normalisation of both. The step: the
jitted GDW train step (forward, virtual step, meta gradient, class-level step, real update) on
device-resident batches. Both are timed with ``block_until_ready`` after every step, so nothing
overlaps. Prints and writes (``--json``) training images/s of each, their ratio (target >= 10),
and the per-stage cost of the input path in microseconds per step.

``--synthetic`` uses random uint8 images of CIFAR's shape (timing does not depend on pixels);
otherwise the real dataset is loaded as configs/cifar.py does (``--archive`` / ``--data-dir``).
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time

import numpy as np
from gdw_jax import fileio


def _load(args):
  """(x_train, y_train, x_meta, y_meta, augment, num_classes) for the benchmark."""
  from gdw_jax.data import augment
  if args.synthetic:
    k = 10 if args.dataset == "cifar10" else 100
    rng = np.random.default_rng(0)
    n = args.synthetic_size
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n) % k
    m = 1000 * n // 50000  # CIFAR's 1,000 meta images out of 50,000
    return x[m:], y[m:], x[:m], y[:m], augment.cifar_train_transform, k
  from configs import cifar
  from gdw_jax import data
  config = cifar.get_config(f"dataset={args.dataset},archive={args.archive},"
                            f"data_dir={args.data_dir}")
  ds = data.build(config)
  return ds.x_train, ds.y_train, ds.x_meta, ds.y_meta, ds.augment, ds.num_classes


def _timed(fn, steps):
  fn(0)  # warm-up (compilation)
  t0 = time.perf_counter()
  for s in range(1, steps + 1):
    fn(s)
  return (time.perf_counter() - t0) / steps


def bench_input(x_tr, y_tr, x_meta, y_meta, augment, bs, meta_bs, steps):
  import jax
  from gdw_jax.data import pipeline

  n, n_meta = y_tr.shape[0], y_meta.shape[0]
  spe = pipeline.steps_per_epoch(n, bs)
  aug = jax.jit(augment)
  key = jax.random.PRNGKey(0)

  def indices(s):
    epoch, step = divmod(s, spe)
    return (pipeline.train_batch_indices(n, bs, 0, epoch, step),
            pipeline.meta_batch_indices(n_meta, meta_bs, 0, epoch, step))

  def gather(s):
    i, m = indices(s)
    return {"x": x_tr[i], "y": y_tr[i]}, {"x": x_meta[m], "y": y_meta[m]}

  def transfer(s):
    return jax.block_until_ready(jax.device_put(gather(s)))

  def full(s):
    batch, meta = transfer(s)
    k = jax.random.fold_in(key, s)
    return jax.block_until_ready((aug(jax.random.fold_in(k, 0), batch["x"]),
                                  aug(jax.random.fold_in(k, 1), meta["x"])))

  t = {name: _timed(fn, steps) for name, fn in
       (("indices", indices), ("gather", gather), ("transfer", transfer), ("full", full))}
  stages_us = {"indices": t["indices"], "gather": t["gather"] - t["indices"],
               "transfer": t["transfer"] - t["gather"], "augment": t["full"] - t["transfer"]}
  return bs / t["full"], {k: round(1e6 * v, 1) for k, v in stages_us.items()}


def bench_step(x_tr, y_tr, x_meta, y_meta, augment, k, args):
  import jax
  from configs import cifar
  from gdw_jax import methods, models, optim, train
  from gdw_jax.methods.base import DataInfo

  config = cifar.get_config(f"dataset={args.dataset},method=gdw")
  config.model = args.model
  for item in args.set or []:
    key, value = item.split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    setattr(config, key, value)
  spe = int(np.ceil(y_tr.shape[0] / args.batch_size))
  info = DataInfo(k, y_tr.shape[0], np.bincount(y_tr, minlength=k), spe)
  model = models.get(config.model, k, config)
  method = methods.get("gdw")(config, info)
  schedule = optim.lr_schedule(config, spe)
  tx = optim.classifier_optimizer(config)
  sample = jax.numpy.asarray(augment(jax.random.PRNGKey(0), x_tr[:2]))
  state = train.create_train_state(jax.random.PRNGKey(0), model, method, tx, sample)
  step = jax.jit(train.make_train_step(model, method, tx, schedule, augment=augment),
                 donate_argnums=0)
  bs, mbs = args.batch_size, args.meta_batch_size
  batch = jax.device_put({"x": x_tr[:bs], "y": y_tr[:bs], "y_true": y_tr[:bs]})
  meta = jax.device_put({"x": x_meta[:mbs], "y": y_meta[:mbs]})
  box = [state]

  def run(s):
    del s
    box[0], m, _ = step(box[0], batch, meta)
    jax.block_until_ready(m)

  return bs / _timed(run, args.step_steps)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"))
  p.add_argument("--synthetic", action="store_true", help="random images of CIFAR's shape")
  p.add_argument("--synthetic-size", type=int, default=50000, help="pool size with --synthetic")
  p.add_argument("--archive", default="", help="python archive path (else tfds)")
  p.add_argument("--data-dir", default="", help="tfds data_dir")
  p.add_argument("--model", default="resnet32", help="classifier of the GDW step")
  p.add_argument("--set", action="append", help="config key=value for the step, e.g. wrn_depth=10")
  p.add_argument("--batch-size", type=int, default=100)
  p.add_argument("--meta-batch-size", type=int, default=100)
  p.add_argument("--steps", type=int, default=300, help="input-path steps timed")
  p.add_argument("--step-steps", type=int, default=10, help="GDW steps timed")
  p.add_argument("--json", default="", help="write the results here")
  args = p.parse_args(argv)

  import jax
  from gdw_jax import models
  if args.model not in models.names():
    p.error(f"model {args.model!r} is not registered; valid: {', '.join(models.names())}")
  x_tr, y_tr, x_meta, y_meta, augment, k = _load(args)
  input_ips, stages = bench_input(x_tr, y_tr, x_meta, y_meta, augment, args.batch_size,
                                  args.meta_batch_size, args.steps)
  step_ips = bench_step(x_tr, y_tr, x_meta, y_meta, augment, k, args)
  result = {
      "dataset": args.dataset, "synthetic": args.synthetic, "model": args.model,
      "set": args.set or [], "batch_size": args.batch_size,
      "meta_batch_size": args.meta_batch_size, "device": str(jax.devices()[0]),
      "input_images_per_s": round(input_ips, 1), "step_images_per_s": round(step_ips, 1),
      "ratio": round(input_ips / step_ips, 2), "input_stage_us_per_step": stages,
      "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.bench_input",
                           *(argv if argv is not None else sys.argv[1:])]),
  }
  print(f"input path: {input_ips:,.0f} train images/s (+ meta batch)   "
        f"GDW step ({args.model}): {step_ips:,.0f} images/s   ratio {input_ips / step_ips:.1f}x "
        f"(target >= 10)")
  print("input path, us per step: " + ", ".join(f"{k} {v}" for k, v in stages.items()))
  if args.json:
    fileio.write_json(args.json, result)
  return result


if __name__ == "__main__":
  main()
