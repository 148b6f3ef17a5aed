"""PMD (Type-I/II/III) feature-dependent noisy labels, as PLC's ``gen_noise_label.py`` makes them.

    python -m experiments.make_pmd_noise --dataset cifar10 --type 1 --rate 0.35 --out labels.npy \\
        --archive cifar-10-python.tar.gz
    python -m experiments.make_pmd_noise --dataset digits --type 1 --rate 0.35 --factor auto \\
        --out runs/digits_pmd1_35.npy

1. Trains the clean model with PLC's recipe through the library's trainer (ERM on the clean
   labels; SGD lr 1e-3 constant, momentum 0.9, nesterov, L2 5e-4, batch 128; 25 epochs, or PLC's
   10 / 35 for some CIFAR-100 cells; PLC's ResNet-34, ``resnet34``, on CIFAR, the MLP on digits).
   On CIFAR it trains on the first 90% of the images, as PLC (its files label 45,000 images):
   the clean labels of those images are handed to the trainer as a label file, which makes them
   the pool.
2. Reads the model back from its checkpoint and takes the class probabilities ``eta`` of every
   pool image. ``--eta train`` (default): train-mode forward (batch statistics) on augmented
   images in shuffled batches, like PLC's record of the last training epoch (with the final
   parameters, not the ones of each step of that epoch); ``--eta eval``: eval mode, no
   augmentation.
3. Draws the PMD labels (:mod:`gdw_jax.data.pmd`) with the published factor of the cell, or
   ``--factor F``, or ``--factor auto`` (the factor whose expected rate is ``--rate`` for this
   model); a type / rate outside PLC's published CIFAR set needs ``--factor``.
4. Writes the labels (int64, one per pool image: the file ``label_file=`` loads; 45,000 on CIFAR,
   PLC's format) atomically, ``<out>.json`` with the settings and the realised noise rate, and
   prints that rate. The clean model's run stays in ``--workdir`` (default: a temporary folder).

Bad input (unknown dataset / type, a rate outside (0, 1), an unpublished cell without
``--factor``, a bad ``--set``) is one line on stderr and exit status 2, before any work.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

DATASETS = ("digits", "cifar10", "cifar100")
DEFAULT_EPOCHS = 25  # PLC's default (gen_noise_label.py --epochs)


def resolve_factor(dataset: str, pmd_type: int, rate: float, factor: str):
  """``(factor or 'auto', epochs)``; raises ValueError for a cell without a known factor."""
  from gdw_jax.data import pmd
  if dataset not in DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
  if pmd_type not in pmd.PMD_TYPES:
    raise ValueError(f"unknown PMD type {pmd_type}; valid: 1, 2, 3")
  if not 0.0 < rate < 1.0:
    raise ValueError(f"--rate must be in (0, 1), got {rate}")
  cell = pmd.published(dataset, pmd_type, rate)
  epochs = cell[1] if cell else DEFAULT_EPOCHS
  if factor == "auto":
    return "auto", epochs
  if factor:
    try:
      value = float(factor)
    except ValueError:
      raise ValueError(f"--factor must be a number >= 1 or 'auto', got {factor!r}") from None
    if not value >= 1.0:
      raise ValueError(f"--factor must be >= 1, got {value}")
    return value, epochs
  if cell is None:
    cells = sorted({(d, r) for d, _, r in pmd.PUBLISHED})
    raise ValueError(f"PLC publishes no factor for {dataset} type {pmd_type} at rate {rate} "
                     f"(published: types 1-3 at {', '.join(f'{d} {r}' for d, r in cells)}); "
                     f"pass --factor F or --factor auto")
  return cell[0], epochs


def clean_config(args, epochs: int):
  """The clean model's training config: PLC's eta-approximation recipe, no noise, no meta set."""
  from configs import common
  if args.dataset == "digits":
    from configs import digits
    c = digits.get_config(f"method=erm,noise=none,seed={args.seed}")
    c.model = args.model or "mlp"
  else:
    from configs import cifar
    c = cifar.get_config(f"dataset={args.dataset},method=erm,noise=none,recipe=gdw,"
                         f"seed={args.seed}")
    c.cifar_archive, c.data_dir = args.archive, args.data_dir
    c.model = args.model or "resnet34"
  c.num_epochs, c.batch_size, c.meta_batch_size = args.epochs or epochs, 128, 0
  c.learning_rate, c.lr_schedule, c.lr_warmup_epochs = args.lr, "constant", 0
  c.momentum, c.nesterov, c.weight_decay = 0.9, True, 5e-4
  c.meta_per_class, c.imbalance_factor, c.prob_clamp = 0, 1.0, 1.0
  c.report, c.checkpoint, c.checkpoint_every_steps = False, True, 0
  c.checkpoint_best, c.keep_checkpoints = False, 2  # 2: a broken latest falls back
  common.apply_overrides(c, args.set)
  return c


def class_probabilities(config, run_dir: str, mode: str, seed: int, batch_size: int = 128):
  """``(eta [n, K], clean labels [n])`` of the pool images under the checkpointed model."""
  import jax
  import jax.numpy as jnp

  from gdw_jax import checkpoint, models
  from gdw_jax.data import sources

  src = sources.load(config.dataset, config)
  model = models.get(config.model, src.num_classes, config, jnp.dtype(config.dtype))
  state = checkpoint.load(run_dir)["state"]
  params, model_state = state["params"], state["model_state"] or {}
  train = mode == "train"

  @jax.jit
  def probs_of(x, key):
    if train:
      x = src.augment(key, x) if src.augment else x
    else:
      x = src.preprocess(x) if src.preprocess else x
    logits, _ = model.apply(params, model_state, x, train)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  n = src.y_pool.shape[0]
  order = np.random.default_rng(seed).permutation(n) if train else np.arange(n)
  eta = np.zeros((n, src.num_classes), np.float64)
  key = jax.random.PRNGKey(seed)
  # near-equal batches: no batch of one image (PLC skips those) in train-mode BN
  for i, idx in enumerate(np.array_split(order, max(1, -(-n // batch_size)))):
    eta[idx] = np.asarray(probs_of(src.x_pool[idx], jax.random.fold_in(key, i)))
  return eta, src.y_pool


def _prepare_pool(config, workdir: str) -> None:
  """CIFAR: the clean labels of PLC's first 90% of the images as the trainer's label file."""
  if config.dataset == "digits":
    return
  from gdw_jax import fileio
  from gdw_jax.data import cifar, sources
  src = sources.load(config.dataset, config)
  keep = int(cifar.PLC_TRAIN_FRACTION * src.y_pool.shape[0])
  path = os.path.join(workdir, "clean_labels.npy")
  fileio.atomic(path, lambda tmp: np.save(tmp, src.y_pool[:keep].astype(np.int64)))
  config.label_file = path


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", default="cifar10", help=", ".join(DATASETS))
  p.add_argument("--type", type=int, required=True, help="PMD type 1, 2 or 3")
  p.add_argument("--rate", type=float, required=True, help="target noise rate, e.g. 0.35")
  p.add_argument("--out", required=True, help="the .npy label file to write")
  p.add_argument("--factor", default="", help="F >= 1, or 'auto' (default: PLC's for the cell)")
  p.add_argument("--epochs", type=int, default=0, help="clean-model epochs (0: PLC's)")
  p.add_argument("--lr", type=float, default=1e-3, help="clean-model learning rate (PLC: 1e-3)")
  p.add_argument("--model", default="", help="default: resnet34 (CIFAR), mlp (digits)")
  p.add_argument("--eta", default="train", choices=["train", "eval"])
  p.add_argument("--seed", type=int, default=123, help="PLC's default seed")
  p.add_argument("--workdir", default="", help="keep the clean model's run here")
  p.add_argument("--archive", default="", help="CIFAR python archive (else tfds)")
  p.add_argument("--data-dir", default="", help="tfds data dir")
  p.add_argument("--probs", default="", help="also save eta (.npy) here")
  p.add_argument("--set", action="append", help="clean-model config override key=value")
  args = p.parse_args(argv)

  from gdw_jax import fileio, train, validation
  from gdw_jax.data import pmd
  try:
    factor, epochs = resolve_factor(args.dataset, args.type, args.rate, args.factor)
    config = clean_config(args, epochs)
    validation.validate(config)
  except (ValueError, KeyError, AttributeError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  workdir = args.workdir or tempfile.mkdtemp(prefix="pmd_clean_")
  os.makedirs(workdir, exist_ok=True)
  run_dir = os.path.join(workdir, "clean_model")
  try:
    _prepare_pool(config, workdir)
    final = train.train_and_evaluate(config, run_dir)
  except (validation.ConfigError, ValueError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  eta, clean = class_probabilities(config, run_dir, args.eta, args.seed)
  if factor == "auto":
    try:
      factor = pmd.calibrate_factor(eta, clean, args.type, args.rate)
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  labels = pmd.draw_labels(eta, args.type, float(factor), np.random.default_rng(args.seed))
  realised = float(np.mean(labels != clean))
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  fileio.atomic(args.out, lambda tmp: np.save(tmp, labels))
  if args.probs:
    fileio.atomic(args.probs, lambda tmp: np.save(tmp, eta.astype(np.float32)))
  summary = {
      "dataset": args.dataset, "type": args.type, "target_rate": args.rate,
      "factor": float(factor), "realised_noise_rate": realised,
      "expected_noise_rate": pmd.expected_rate(eta, clean, args.type, float(factor)),
      "num_labels": int(labels.shape[0]), "clean_model": run_dir, "model": config.model,
      "epochs": int(config.num_epochs), "eta": args.eta, "seed": args.seed,
      "clean_model_test_acc": final["last_acc"],
      "clean_model_train_acc": float(np.mean(eta.argmax(1) == clean) * 100.0),
  }
  fileio.write_json(args.out + ".json", summary)
  print(f"PMD type-{'I' * args.type} labels for {args.dataset}: realised noise rate "
        f"{realised:.4f} (target {args.rate}, factor {float(factor):.4g}, {labels.shape[0]} "
        f"labels) -> {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
