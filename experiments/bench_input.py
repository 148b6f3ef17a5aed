"""Throughput of the input paths vs what a GDW training step consumes.

    python -m experiments.bench_input --dataset cifar10 --json runs/bench_input.json
    python -m experiments.bench_input --synthetic --model wrn --set wrn_depth=10 --set wrn_widen=1
    python -m experiments.bench_input --source folder --root runs/jpegs256 --generate 2000 \
        --workers 0,1,2 --json runs/bench_stream.json

``--source folder``: the streaming path (``input_pipeline=stream``, :mod:`gdw_jax.data.stream`)
on a folder of JPEGs (``--generate N`` first writes N photo-like JPEGs of about 256 px, in 10
class folders, if the folder has none). For each ``--workers`` count it times the grain
iterator over consecutive steps, each a training batch and a meta batch decoded from the files
and transformed on the host (RandomResizedCrop to ``--image-size``, flip, colour jitter; the
ImageNet recipe), and reports decoded images/s and the training images/s that gives. Against
it: the images/s of one GDW step of ``--step-model`` (ResNet-50) at ``--image-size`` here
(``experiments.bench_step`` in a subprocess; ``--no-step`` skips it). The first batch (worker
start) is timed apart.

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


def generate_jpegs(root: str, n: int, size: int = 256, classes: int = 10, seed: int = 0) -> None:
  """``n`` photo-like JPEGs (smooth colour fields plus texture, shorter side ``size``, aspect
  3:4 to 4:3, quality 90) in ``root/c<k>/``."""
  from PIL import Image
  from tqdm.auto import tqdm

  rng = np.random.default_rng(seed)
  for i in tqdm(range(n), desc="writing JPEGs", unit="img", leave=False):
    long = int(size * rng.uniform(1.0, 4 / 3))
    h, w = (size, long) if i % 2 else (long, size)
    base = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC)
    x = np.asarray(base, np.int16) + rng.integers(-24, 25, (h, w, 3))
    folder = os.path.join(root, f"c{i % classes}")
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(
        os.path.join(folder, f"{i:06d}.jpg"), quality=90)


def bench_stream(args) -> dict:
  """Decoded images/s of the streaming path for each worker count (see the module docstring)."""
  from gdw_jax.data import host_transforms, image_table, images, stream

  items, _, _ = images.list_class_folder(args.root, "root")
  table = image_table.ImageTable(image_table.FileReader([p for p, _ in items]), None,
                                 args.image_size, 3)
  n, bs = len(table), args.batch_size
  mbs = args.meta_batch_size
  transform = host_transforms.Transform(size=args.image_size, resize=args.resize,
                                        crop=args.crop, flip=True, jitter=args.jitter)
  spe = max(1, n // bs)
  meta_rows = np.arange(min(n, 1000))[None]
  out = {}
  for workers in args.workers:
    plan = stream.Plan((0,), np.arange(n)[None], bs, spe, meta_rows, mbs)
    sb = stream.StreamBatches(table, plan, transform, transform,
                              stream.Options(workers, args.threads, args.prefetch),
                              args.stream_steps + 1)
    t0 = time.perf_counter()
    sb.batches(0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in range(1, args.stream_steps + 1):
      sb.batches(t)
    dt = (time.perf_counter() - t0) / args.stream_steps
    sb.close()
    out[str(workers)] = {"decoded_images_per_s": round((bs + mbs) / dt, 1),
                         "train_images_per_s": round(bs / dt, 1),
                         "ms_per_step": round(1e3 * dt, 1), "first_batch_s": round(first, 2)}
    print(f"  workers {workers}: {(bs + mbs) / dt:,.0f} decoded images/s "
          f"({bs / dt:,.0f} training images/s with a meta batch of {mbs}), first batch "
          f"{first:.1f} s", flush=True)
  return out


def step_images_per_s(args) -> dict:
  """One GDW step of ``--step-model`` at ``--image-size`` (experiments.bench_step, subprocess)."""
  from experiments import bench_step
  step_args = argparse.Namespace(
      model=args.step_model, batch=args.step_batch, steps=args.step_steps, warmup=1,
      num_classes=args.num_classes, image_size=args.image_size, compute_dtype="")
  run = bench_step._run_config  # pylint: disable=protected-access
  return run(step_args, "gdw", args.hypergrad)


def main_stream(args, argv) -> dict:
  if args.generate and not any(os.scandir(args.root) if os.path.isdir(args.root) else ()):
    generate_jpegs(args.root, args.generate)
  import jax
  print(f"streaming input, {args.root}: batch {args.batch_size} + meta "
        f"{args.meta_batch_size}, {args.crop} crop to {args.image_size}, "
        f"flip, jitter {args.jitter}; {os.cpu_count()} CPU cores", flush=True)
  per_workers = bench_stream(args)
  step = None if args.no_step else step_images_per_s(args)
  best = max(v["train_images_per_s"] for v in per_workers.values())
  result = {
      "source": "folder", "root": args.root, "image_size": args.image_size,
      "resize": args.resize, "crop": args.crop, "jitter": args.jitter,
      "batch_size": args.batch_size, "meta_batch_size": args.meta_batch_size,
      "cpu_count": os.cpu_count(), "stream": per_workers,
      "step_model": args.step_model, "step_batch": args.step_batch,
      "step_images_per_s": None if step is None else round(step["images_per_s"], 2),
      "step_device": None if step is None else step["device"],
      "device": str(jax.devices()[0]),
      "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.bench_input",
                           *(argv if argv is not None else sys.argv[1:])]),
  }
  if step is not None:
    result["ratio_best"] = round(best / step["images_per_s"], 1)
    print(f"GDW step ({args.step_model}, {args.image_size} px, batch {args.step_batch}): "
          f"{step['images_per_s']:.2f} images/s; best stream / step = {result['ratio_best']}x")
  if args.json:
    fileio.write_json(args.json, result)
  return result


def _ints(text: str):
  return [int(v) for v in text.split(",") if v != ""]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--source", default="cifar", choices=("cifar", "folder"),
                 help="cifar: the in-memory path; folder: the streaming path on JPEG files")
  p.add_argument("--root", default="runs/jpegs256", help="folder: root/<class>/<jpegs>")
  p.add_argument("--generate", type=int, default=0, help="folder: write N JPEGs if it is empty")
  p.add_argument("--workers", type=_ints, default=[0, 1, 2], help="folder: grain worker counts")
  p.add_argument("--threads", type=int, default=2, help="folder: threads per worker")
  p.add_argument("--prefetch", type=int, default=2, help="folder: batches buffered per worker")
  p.add_argument("--image-size", type=int, default=224)
  p.add_argument("--resize", type=int, default=256, help="folder: shorter side (not for "
                                                         "random_resized)")
  p.add_argument("--crop", default="random_resized", choices=("random", "center",
                                                              "random_resized"))
  p.add_argument("--jitter", type=float, default=0.4, help="folder: colour jitter strength")
  p.add_argument("--stream-steps", type=int, default=10, help="folder: steps timed per count")
  p.add_argument("--step-model", default="resnet50")
  p.add_argument("--step-batch", type=int, default=4)
  p.add_argument("--hypergrad", default="autodiff")
  p.add_argument("--num-classes", type=int, default=14)
  p.add_argument("--no-step", action="store_true", help="folder: skip the step measurement")
  p.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100"))
  p.add_argument("--synthetic", action="store_true", help="random images of CIFAR's shape")
  p.add_argument("--synthetic-size", type=int, default=50000, help="pool size with --synthetic")
  p.add_argument("--archive", default="", help="python archive path (else tfds)")
  p.add_argument("--data-dir", default="", help="tfds data_dir")
  p.add_argument("--model", default="resnet32", help="classifier of the GDW step")
  p.add_argument("--set", action="append", help="config key=value for the step, e.g. wrn_depth=10")
  p.add_argument("--batch-size", type=int, default=None, help="cifar: 100, folder: 64")
  p.add_argument("--meta-batch-size", type=int, default=None, help="default: the batch size")
  p.add_argument("--steps", type=int, default=300, help="input-path steps timed")
  p.add_argument("--step-steps", type=int, default=None, help="GDW steps timed (cifar: 10, "
                                                               "folder: 2)")
  p.add_argument("--json", default="", help="write the results here")
  args = p.parse_args(argv)
  args.batch_size = args.batch_size or (64 if args.source == "folder" else 100)
  args.meta_batch_size = args.meta_batch_size or args.batch_size
  args.step_steps = args.step_steps or (2 if args.source == "folder" else 10)
  if args.source == "folder":
    return main_stream(args, argv)

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
