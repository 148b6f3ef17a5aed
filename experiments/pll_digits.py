"""Partial labels on digits: PRODEN, PRODEN -> CMW-Net and GDW with candidate sets, per q.

    python -m experiments.pll_digits --rates 0.1,0.3,0.5,0.7 --seeds 3 --json runs/pll_digits.json

Candidate sets: binomial, generated around the clean labels with ``partial_rate`` q (seeded by
the run's seed, so every method of a seed sees the same sets; no label noise). Per entry:

* ``proden``: ``configs/digits.py`` with ``method=proden`` (its MLP, lr 0.1 cosine, 60 epochs),
  no held-out meta set (PRODEN needs none): 1,297 training images;
* ``proden_cmwnet``: ``gdw_jax.pll_pipeline`` (stage A: 40 epochs of PRODEN, recipe ``proden``;
  stage C: 60 epochs of CMW-Net on the pseudo-labels), one launch per seed;
* ``gdw``: ``method=gdw`` with its restricted class-level step (default), which needs a clean meta
  set: 10 per class held out of the pool (1,197 training images + 100 clean meta images).

Prints a markdown table (``last5_acc``, mean ± std over seeds; PRODEN's last-epoch
disambiguation accuracy and the pipeline's pseudo-label accuracy in %) and writes the per-seed
numbers to ``--json``.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

ENTRIES = ("proden", "proden_cmwnet", "gdw")


def entry_config(entry: str, q: float, args):
  from configs import digits
  c = digits.get_config(f"method={'proden' if entry != 'gdw' else 'gdw'}")
  c.partial_rate, c.noise_type, c.noise_rate = q, "none", 0.0
  c.meta_per_class = 10 if entry == "gdw" else 0
  c.progress, c.report = False, False
  if args.epochs:
    c.num_epochs = args.epochs
  return c


def run_entry(entry: str, q: float, seeds, root: str, args) -> dict:
  """Per-seed ``last5_acc`` and the entry's disambiguation number."""
  from gdw_jax import pll_pipeline, train
  c = entry_config(entry, q, args)
  name = f"{entry}_q{q:g}"
  out = {"last5_acc": [], "best_acc": [], "disambiguation": []}
  if entry != "proden_cmwnet":
    c.seeds = tuple(seeds)
    summary = train.train_and_evaluate(c, os.path.join(root, name))
    for s in seeds:
      final = summary["runs"][str(s)]
      out["last5_acc"].append(final["last5_acc"])
      out["best_acc"].append(final["best_acc"])
      rows = [json.loads(r) for r in open(os.path.join(root, name, f"seed_{s}", "metrics.jsonl"))]
      out["disambiguation"].append(rows[-1].get("disambiguation_acc"))
    return out
  for s in seeds:
    c.seed = s
    res = pll_pipeline.run(c, os.path.join(root, f"{name}_seed{s}"))
    out["last5_acc"].append(res["stage_c"]["last5_acc"])
    out["best_acc"].append(res["stage_c"]["best_acc"])
    out["disambiguation"].append(res["stage_b"].get("pseudo_label_acc"))
  return out


def table(results: dict, rates) -> str:
  head = "| method | " + " | ".join(f"q = {q:g}" for q in rates) + " |"
  lines = [head, "|---" * (len(rates) + 1) + "|"]
  for entry in ENTRIES:
    cells = []
    for q in rates:
      r = results.get(f"{entry}_q{q:g}")
      if r is None:
        cells.append("-")
        continue
      a, d = np.array(r["last5_acc"]), [x for x in r["disambiguation"] if x is not None]
      cell = f"{a.mean():.2f} ± {a.std():.2f}"
      if d and entry != "gdw":
        cell += f" ({100 * np.mean(d):.1f})"
      cells.append(cell)
    lines.append(f"| {entry} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rates", default="0.1,0.3,0.5,0.7")
  p.add_argument("--seeds", type=int, default=3, help="runs seeds 0..S-1")
  p.add_argument("--methods", default=",".join(ENTRIES))
  p.add_argument("--epochs", type=int, default=0, help="override num_epochs (0: the config's)")
  p.add_argument("--json", default=None)
  p.add_argument("--workdir", default=None, help="keep the runs under this folder")
  args = p.parse_args(argv)
  rates = [float(q) for q in args.rates.split(",")]
  seeds = list(range(args.seeds))
  results = {}
  with tempfile.TemporaryDirectory(prefix="pll_digits_") as tmp:
    root = args.workdir or tmp
    for q in rates:
      for entry in args.methods.split(","):
        results[f"{entry}_q{q:g}"] = run_entry(entry, q, seeds, root, args)
        print(f"{entry} q={q:g}: last5_acc {results[f'{entry}_q{q:g}']['last5_acc']}",
              flush=True)
        if args.json:
          with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
  print(table(results, rates))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
