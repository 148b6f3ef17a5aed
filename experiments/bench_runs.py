"""Runs per hour: K seeds in one process (one vmapped program) against K separate processes.

    python -m experiments.bench_runs --json runs/bench_runs.json
    python -m experiments.bench_runs --cases digits --ks 1,8          # the 8-seed target alone

Cases:

* ``digits``: ``configs/digits.py`` as the README's first command runs it (GDW, MLP, 60 epochs;
  ``--digits-epochs`` to shorten);
* ``cifar_shaped``: configs/cifar.py's GDW recipe (``--model``, default ResNet-32, batch 100) on
  ``--pool`` synthetic CIFAR-shaped images (``experiments/synthetic.py``; ``--meta-per-class``
  of them per class in the meta set, the rest train), ``--epochs`` epochs.

For each K of ``--ks``: *one process* trains seeds 0..K-1 together (``config.seeds``); *separate*
is K processes run one after another, one seed each (``config.seed``; one process each, as a
user would launch them). Wall times are whole processes (interpreter and JAX start, data,
compilation, training, files), measured here; runs/hour = 3600 K / wall. Every run ends with
the same numbers either way (``tests/test_runs.py``).

Also printed: the time split of one digits run (``timing.json``: compile, steps, evaluation,
method hooks, checkpoints, report), and the issue's targets: digits K=8 wall / K=1 wall
(<= 2), cifar_shaped K=4 one-process runs/hour / separate runs/hour (>= 1).
``--json`` writes ``{"cases": {case: {K: {...}}}, "digits_time_split": {...}, "targets": {...}}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from gdw_jax import fileio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def case_config(args, case: str):
  """The config one run of ``case`` trains (``--set`` overrides applied)."""
  from configs import common
  if case == "digits":
    from configs import digits
    c = digits.get_config()
    if args.digits_epochs:
      c.num_epochs = args.digits_epochs
    c.progress, c.report = False, True  # the README's run writes its report
  else:
    from experiments import synthetic
    c = synthetic.cifar_config(pool=args.pool, test=args.test, model=args.model,
                               epochs=args.epochs, meta_per_class=args.meta_per_class)
  common.apply_overrides(c, args.set, allow_new=True)  # model options (mlp_hidden)
  return c


def _worker(args) -> dict:
  """One launch in this process: seeds ``args.seeds`` together, or one ``seed``."""
  import resource

  import jax

  from gdw_jax import train
  c = case_config(args, args.case)
  seeds = [int(s) for s in args.seeds.split(",")]
  if args.together:
    c.seeds = tuple(seeds)
  else:
    c.seed = seeds[0]
  t0 = time.perf_counter()
  train.train_and_evaluate(c, args.workdir)
  wall = time.perf_counter() - t0
  with open(os.path.join(args.workdir, "timing.json")) as f:
    timing = json.load(f)
  first = os.path.join(args.workdir, f"seed_{seeds[0]}") if args.together else args.workdir
  with open(os.path.join(first, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  dev = jax.devices()[0]
  stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
  peak = (stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else
          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
  return {"train_s": wall, "timing": timing, "epoch_time_s": [r["epoch_time_s"] for r in rows],
          "steps": rows[-1]["step"], "last_acc": rows[-1]["test_acc"],
          "peak_mem_mb": peak, "peak_mem_source": "device" if stats else "rss",
          "backend": jax.default_backend(), "device": dev.device_kind}


def launch(args, case: str, seeds, together: bool, workdir: str) -> dict:
  """One worker process; adds its whole wall time (``wall_s``)."""
  cmd = [sys.executable, "-m", "experiments.bench_runs", "--worker", "--case", case,
         "--seeds", ",".join(map(str, seeds)), "--workdir", workdir,
         "--digits-epochs", str(args.digits_epochs), "--epochs", str(args.epochs),
         "--pool", str(args.pool), "--test", str(args.test), "--model", args.model,
         "--meta-per-class", str(args.meta_per_class)]
  cmd += ["--together"] if together else []
  for item in args.set or []:
    cmd += ["--set", item]
  t0 = time.perf_counter()
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if r.returncode != 0:
    raise RuntimeError(f"{case} seeds {seeds} failed:\n{r.stderr[-3000:]}")
  out = json.loads(r.stdout.strip().splitlines()[-1])
  out["wall_s"] = wall
  return out


def bench_case(args, case: str, ks, root: str) -> dict:
  """``{K: {...}}``: one process for K seeds, and K separate single-seed processes."""
  singles = []  # seed s alone, s = 0..max K - 1 (separate runs of K seeds: the first K)
  for s in range(max(ks) if not args.no_separate else 1):
    singles.append(launch(args, case, [s], False, os.path.join(root, f"{case}_single_{s}")))
    print(f"{case} seed {s} alone: {singles[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
  out = {}
  for k in ks:
    one = singles[0] if k == 1 else launch(args, case, list(range(k)), True,
                                           os.path.join(root, f"{case}_together_{k}"))
    row = {"together_wall_s": one["wall_s"], "together_runs_per_hour": 3600 * k / one["wall_s"],
           "together": one}
    if not args.no_separate:
      wall = sum(r["wall_s"] for r in singles[:k])
      row.update(separate_wall_s=wall, separate_runs_per_hour=3600 * k / wall,
                 speedup=wall / one["wall_s"])
    out[k] = row
    print(f"{case} K={k}: one process {one['wall_s']:.1f} s", file=sys.stderr, flush=True)
  return out


def table(results: dict) -> str:
  lines = ["| case | K | one process: wall s | runs/hour | K processes: wall s | runs/hour | "
           "× |", "|---|---|---|---|---|---|---|"]
  for case, rows in results.items():
    for k, r in rows.items():
      sep = (f"{r['separate_wall_s']:.1f} | {r['separate_runs_per_hour']:.0f} | "
             f"{r['speedup']:.2f}" if "separate_wall_s" in r else "– | – | –")
      lines.append(f"| {case} | {k} | {r['together_wall_s']:.1f} | "
                   f"{r['together_runs_per_hour']:.0f} | {sep} |")
  return "\n".join(lines)


def split_table(split: dict) -> str:
  keys = ("compile", "steps", "eval", "hooks", "checkpoint", "report", "other", "total")
  return ("| " + " | ".join(keys) + " |\n" + "|---" * len(keys) + "|\n| " +
          " | ".join(f"{split[k]:.2f}" for k in keys) + " |")


def targets(results: dict) -> dict:
  out = {}
  d = results.get("digits", {})
  if 1 in d and 8 in d:
    out["digits_k8_over_k1_wall"] = d[8]["together_wall_s"] / d[1]["together_wall_s"]
  c = results.get("cifar_shaped", {})
  if 4 in c and "separate_runs_per_hour" in c[4]:
    out["cifar_shaped_k4_together_over_separate_runs_per_hour"] = (
        c[4]["together_runs_per_hour"] / c[4]["separate_runs_per_hour"])
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--cases", default="digits,cifar_shaped")
  p.add_argument("--ks", default="1,2,4,8")
  p.add_argument("--digits-epochs", type=int, default=0, help="0: the config's (60)")
  p.add_argument("--model", default="resnet32", help="cifar_shaped's model")
  p.add_argument("--pool", type=int, default=1100, help="cifar_shaped: synthetic pool size")
  p.add_argument("--meta-per-class", type=int, default=10, help="cifar_shaped: meta set")
  p.add_argument("--test", type=int, default=500, help="cifar_shaped: test images")
  p.add_argument("--epochs", type=int, default=1, help="cifar_shaped: epochs")
  p.add_argument("--no-separate", action="store_true", help="skip the separate processes")
  p.add_argument("--set", action="append", help="config override key=value (every run)")
  p.add_argument("--json", default=None)
  p.add_argument("--keep", default=None, help="keep the workdirs under this folder")
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--together", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--case", default="digits", help=argparse.SUPPRESS)
  p.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
  p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    print(json.dumps(_worker(args)))
    return 0
  cases = [c for c in args.cases.split(",") if c]
  try:
    ks = sorted({int(k) for k in args.ks.split(",") if k})
  except ValueError:
    ks = []
  if not ks or min(ks) < 1 or any(c not in ("digits", "cifar_shaped") for c in cases):
    print("error: --cases from digits,cifar_shaped; --ks positive integers", file=sys.stderr)
    return 2

  from gdw_jax.options import ConfigError
  try:  # a bad --set is one line before any worker starts
    for case in cases:
      case_config(args, case)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  root = args.keep or tempfile.mkdtemp(prefix="bench_runs_")
  try:
    results = {case: bench_case(args, case, ks, root) for case in cases}
  finally:
    if not args.keep:
      shutil.rmtree(root, ignore_errors=True)
  out = {"cases": results, "targets": targets(results)}
  first = next(iter(next(iter(results.values())).values()))["together"]
  print(f"\n{first['backend']} ({first['device']})\n")
  print(table(results))
  if "digits" in results:
    out["digits_time_split"] = results["digits"][min(ks)]["together"]["timing"]["seconds"]
    print(f"\nTime split of one digits run (K={min(ks)}), seconds:\n")
    print(split_table(out["digits_time_split"]))
  if out["targets"]:
    print("\nTargets: " + ", ".join(f"{k} = {v:.2f}" for k, v in out["targets"].items()))
  if args.json:
    fileio.write_json(args.json, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
