"""Every method on every seed, on real digits with synthetic label noise / imbalance.

    python -m experiments.digits_benchmark --noise uniform --rate 0.4 --seeds 3 \
        --methods erm,mwnet,gdw --json runs/bench.json
    python -m experiments.digits_benchmark --noise none --imbalance 0.1 --seeds 3 \
        --methods erm,cb,ldam_drw@ldam_drw,absgd@absgd_lt,mwnet,cmwnet@cmwnet_lt,gdw
    python -m experiments.digits_benchmark --noise asym --rate 0.4 --seeds 3 \
        --methods erm,mwnet,cmwnet,gdw,absgd@absgd_noise
    python -m experiments.digits_benchmark --noise none --label-file runs/digits_pmd1_35.npy \
        --seeds 3 --methods erm,mwnet,cmwnet,gdw
    python -m experiments.digits_benchmark --partial-rate 0.3 --seeds 3 --methods proden,gdw

``--noise`` takes every noise type (``asym``: the MNIST map drawn by ``--asym-generator``);
``--label-file`` trains on given labels (e.g. from ``experiments.make_pmd_noise``), with
``--hybrid`` the ``--noise`` on top of them.

Every name in ``gdw_jax.methods.names()`` is a valid entry of ``--methods``; ``method@recipe``
applies a published recipe from ``configs/recipes.py`` (after ``--epochs``, before ``--set``).
Prints a markdown table (mean +- std over seeds of ``last5_acc`` = mean test accuracy of the
last 5 epochs, and ``best_acc``) and writes ``{"<entry>": {"last5_acc": [...], "best_acc": [...]}}``.
Extra ``--set key=value`` pairs override any config key for every run.

The seeds of an entry train as one program (``config.seeds``, docs/scaling.md): each run ends
exactly as it would alone, in ``--workdir/<entry>/seed_<s>/``. An entry whose seeds cannot share
a program (e.g. CMW-Net's in-train meta sets of different sizes per seed) runs them one by one,
in ``--workdir/<entry>_seed<s>/``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from gdw_jax import fileio


def split_entry(entry: str):
  """``"method@recipe"`` -> ``(method, recipe)``; a bare method has recipe None."""
  method, _, recipe = entry.partition("@")
  return method, recipe or None


def entry_config(entry: str, args):
  """The config of ``entry`` (``method`` or ``method@recipe``) with the command's settings."""
  from configs import common, digits, recipes
  from gdw_jax.validation import ConfigError

  method, recipe = split_entry(entry)
  config = digits.get_config()
  config.method = method
  config.noise_type = args.noise
  config.noise_rate = args.rate
  config.asym_generator = args.asym_generator
  config.label_file, config.noise_on_given_labels = args.label_file, args.hybrid
  config.imbalance_factor = args.imbalance
  config.imbalance_type = args.imbalance_type
  if args.partial_rate:  # candidate sets (partial labels) around the clean labels, no noise
    config.partial_rate, config.noise_type, config.noise_rate = args.partial_rate, "none", 0.0
  config.progress = False
  config.report = bool(args.workdir)  # reports only for kept workdirs
  if args.epochs:
    config.num_epochs = args.epochs
  if recipe:
    recipes.apply(config, recipe)
    if config.method != method:
      raise ConfigError(f"recipe {recipe} is for method {config.method}, not {method}")
  common.apply_overrides(config, args.set)
  return config


def run_entry(entry: str, seeds, args) -> list:
  """Every seed of ``entry``: one launch of all of them, or one by one if they cannot share a
  program. Returns each seed's final dict."""
  from gdw_jax import train
  from gdw_jax.validation import ConfigError

  config = entry_config(entry, args)
  name = entry.replace("@", "_")
  with tempfile.TemporaryDirectory(prefix=f"digits_{name}_") as tmp:
    root = args.workdir or tmp
    config.seeds = tuple(seeds)
    try:
      return list(train.train_and_evaluate(config, os.path.join(root, name))["runs"].values())
    except ConfigError as e:
      if not str(e).startswith("seeds:") and "for the seeds" not in str(e):
        raise
      print(f"{entry}: seeds run one by one ({e})", file=sys.stderr, flush=True)
    finals = []
    for seed in seeds:
      config.seeds, config.seed = (), seed
      finals.append(train.train_and_evaluate(config, os.path.join(root, f"{name}_seed{seed}")))
    return finals


def table(results: dict) -> str:
  lines = ["| method | last5_acc (mean ± std) | best_acc (mean ± std) | seeds |",
           "|---|---|---|---|"]
  for method, r in results.items():
    l5, best = np.array(r["last5_acc"]), np.array(r["best_acc"])
    lines.append(f"| {method} | {l5.mean():.2f} ± {l5.std():.2f} | "
                 f"{best.mean():.2f} ± {best.std():.2f} | {len(l5)} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  from gdw_jax import data
  p.add_argument("--noise", default="uniform", choices=data.NOISE_TYPES)
  p.add_argument("--rate", type=float, default=0.4)
  p.add_argument("--asym-generator", default="dividemix", choices=data.ASYM_GENERATORS)
  p.add_argument("--label-file", default="", help="given noisy labels (.npy, one per pool image)")
  p.add_argument("--hybrid", action="store_true", help="--noise on top of --label-file")
  p.add_argument("--imbalance", type=float, default=1.0, help="n_min/n_max in (0, 1]")
  p.add_argument("--imbalance-type", default="exp", choices=["exp", "step"])
  p.add_argument("--partial-rate", type=float, default=0.0,
                 help="candidate sets with partial_rate q (partial labels; --noise ignored)")
  p.add_argument("--seeds", type=int, default=3, help="runs seeds 0..S-1")
  p.add_argument("--methods", default="erm,mwnet,gdw")
  p.add_argument("--epochs", type=int, default=0, help="override num_epochs (0: config's)")
  p.add_argument("--json", default=None, help="write per-seed results here")
  p.add_argument("--workdir", default=None, help="keep each run's workdir under this folder")
  p.add_argument("--set", action="append", help="extra config override key=value")
  args = p.parse_args(argv)

  from configs import recipes
  from gdw_jax import methods
  from gdw_jax.validation import ConfigError
  chosen = [m for m in args.methods.split(",") if m]
  unknown = [m for m in chosen if split_entry(m)[0] not in methods.names()]
  if unknown or not chosen:
    print(f"error: unknown method(s) {unknown}; valid: {', '.join(methods.names())}",
          file=sys.stderr)
    return 2
  bad = [m for m in chosen if split_entry(m)[1] not in (None, *recipes.names())]
  if bad:
    print(f"error: unknown recipe in {bad}; valid: {', '.join(recipes.names())}",
          file=sys.stderr)
    return 2
  if args.seeds < 1:
    print("error: --seeds must be >= 1", file=sys.stderr)
    return 2

  results, t0 = {}, time.time()
  for method in chosen:
    try:
      finals = run_entry(method, list(range(args.seeds)), args)
    except ConfigError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    results[method] = {k: [f[k] for f in finals] for k in ("last5_acc", "best_acc", "last_acc")}
    for seed, final in enumerate(finals):
      print(f"{method:>16} seed {seed}: last5 {final['last5_acc']:.2f} best {final['best_acc']:.2f}"
            f" ({final['wall_time_s']:.1f}s, noise {final['realised_noise_rate']:.3f})",
            file=sys.stderr, flush=True)
  noise = f"{args.noise} noise {args.rate}" if args.noise != "none" else "no noise"
  if args.noise == "asym":
    noise += f" ({args.asym_generator})"
  if args.label_file:
    noise = f"labels {os.path.basename(args.label_file)}" + (
        f" + {noise}" if args.hybrid else "")
  desc = f"digits, {noise}" + (
      f", imbalance {args.imbalance} ({args.imbalance_type})" if args.imbalance < 1 else "")
  print(f"\n{desc}, {args.seeds} seed(s), {time.time() - t0:.0f}s total\n")
  print(table(results))
  if args.json:
    fileio.write_json(args.json, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
