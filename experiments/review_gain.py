"""What reviewing the label issues gains on the digits folder example (docs/own_data.md).

    python -m experiments.review_gain runs/review_gain [--top 150] [--seeds 0,1,2] [--epochs 60]

The practitioner's loop, scripted as a careful reviewer would do it: write the example's folder
(:mod:`experiments.digits_folder`), train ERM and GDW on the given labels (3 seeds each), review
the ``--top`` most suspicious samples of GDW's seed-0 ``label_issues.csv`` by accepting the
predicted label wherever the true label (``truth.csv``, which only this script reads) agrees
with it and keeping the rest, write that ``corrections.csv``, and retrain both methods with
``label_corrections``. Prints (and writes to ``OUT/gain.md``) how many labels were fixed and the
test accuracy (mean ± std over the seeds of the last-5-epoch mean) before and after.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time


def train(root: str, method: str, workdir: str, seeds, epochs: int, corrections: str = ""):
  """One launch of ``seeds`` (configs/own_data.py on ``root``); its summary.json dict."""
  from configs import own_data
  from gdw_jax import train as train_lib
  c = own_data.get_config(f"root={root},method={method},epochs={epochs}")
  c.seeds, c.progress, c.label_corrections = tuple(seeds), False, corrections
  return train_lib.train_and_evaluate(c, workdir)


def review(reviewed: str, truth_csv: str, top: int, out: str) -> dict:
  """The scripted review of ``reviewed``'s top ``top``: accept the prediction where the truth
  agrees with it, else keep. Writes ``out``; returns counts."""
  from gdw_jax.analysis import label_issues
  from gdw_jax.data import corrections
  with open(truth_csv, newline="") as f:
    truth = {r["path"]: int(r["label"]) for r in csv.DictReader(f)}
  cols = label_issues.top(label_issues.read_csv(label_issues.path_in(reviewed)), top)
  rows, wrong_in_top = [], 0
  for rid, given, pred in zip(cols["id"], cols["given_label"], cols["predicted_label"]):
    wrong_in_top += int(truth[rid] != given)
    if pred != given and truth[rid] == pred:
      rows.append((rid, "relabel", str(pred)))
    else:
      rows.append((rid, "keep", ""))
  corrections.write(out, rows, os.path.abspath(reviewed))
  wrong = sum(int(rid.split("/")[0]) != t for rid, t in truth.items())
  fixed = sum(r[1] == "relabel" for r in rows)
  return {"reviewed": len(rows), "wrong_in_top": wrong_in_top, "fixed": fixed,
          "wrong_before": wrong, "wrong_after": wrong - fixed, "train": len(truth)}


def _acc(summary) -> str:
  return f"{summary['mean']['last5_acc']:.2f} ± {summary['std']['last5_acc']:.2f}"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("out")
  p.add_argument("--top", type=int, default=150)
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--epochs", type=int, default=60)
  args = p.parse_args(argv)
  from experiments import digits_folder
  seeds = [int(s) for s in args.seeds.split(",")]
  root = os.path.join(args.out, "digits_folder")
  start = time.time()
  if not os.path.isdir(root):
    digits_folder.write(root)
  before, after = {}, {}
  for method in ("erm", "gdw"):
    before[method] = train(root, method, os.path.join(args.out, f"{method}_given"), seeds,
                           args.epochs)
  csv_path = os.path.join(args.out, "corrections.csv")
  counts = review(os.path.join(args.out, "gdw_given", f"seed_{seeds[0]}"),
                  os.path.join(root, "truth.csv"), args.top, csv_path)
  for method in ("erm", "gdw"):
    after[method] = train(root, method, os.path.join(args.out, f"{method}_reviewed"), seeds,
                          args.epochs, csv_path)
  lines = [f"Reviewed the top {counts['reviewed']} of GDW's ranking (seed {seeds[0]}): "
           f"{counts['wrong_in_top']} of them had a wrong label, {counts['fixed']} fixed by "
           f"accepting the prediction; wrong training labels {counts['wrong_before']} -> "
           f"{counts['wrong_after']} of {counts['train']}.", "",
           f"| method | test accuracy, given labels | after the review |", "|---|---|---|"]
  lines += [f"| {m} | {_acc(before[m])} | {_acc(after[m])} |" for m in ("erm", "gdw")]
  lines += ["", f"Mean ± std over seeds {args.seeds} of the last-5-epoch test accuracy (%), "
                f"{args.epochs} epochs; {time.time() - start:.0f} s in all."]
  text = "\n".join(lines)
  print(text)
  with open(os.path.join(args.out, "gain.md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(args.out, "gain.json"), "w") as f:
    json.dump({"counts": counts, "before": {m: s["mean"] for m, s in before.items()},
               "after": {m: s["mean"] for m, s in after.items()}}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
