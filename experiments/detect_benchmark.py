"""Finding the mislabelled digits: learned weights against cleanlab, honestly.

    python -m experiments.detect_benchmark --noise uniform --rate 0.4 --seeds 3 --json OUT.json

Per seed, on the digits training set of that seed (the same noisy labels for every entry):

* ``cleanlab``: out-of-sample probabilities from ``--folds``-fold cross-validation (folds
  stratified by the given labels) of ERM with the same model and recipe as every other run
  (``configs/digits.py``); ranked by ``cleanlab.rank.get_label_quality_scores``
  (self-confidence). ``cleanlab find_label_issues``: the mask of ``cleanlab.filter
  .find_label_issues`` on the same probabilities, scored by precision and recall. ``--folds``
  training runs.
* ``erm small-loss``: the final ERM model's loss on each given label (``p_given`` of its
  ``label_issues.csv``; a low probability is a large loss). One run.
* each meta method (``--methods``, default ``mwnet,cmwnet,l2rw,gdw``): its ``label_issues.csv``
  ranked by its own ``label_score`` (the entry ``method``), and by the other score of the same
  run (``method [probability]`` / ``method [weight]``), for comparison. One run each.

Scores: AUROC, AUPRC and precision at k (k = the number of truly mislabelled training samples),
mislabelled = positive. The meta methods also see a clean meta set of ``meta_per_class`` (10)
images per class that the other entries do not use. Prints a markdown table (mean ± std over
seeds) and writes ``{"<entry>": {"auroc": [...], "auprc": [...], "precision_at_k": [...],
"training_runs": n, ...}}`` to ``--json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from gdw_jax import fileio

METRICS = ("auroc", "auprc", "precision_at_k")


def base_config(args, seed: int, method: str):
  from configs import digits
  config = digits.get_config(f"method={method}")
  config.seed, config.noise_type, config.noise_rate = seed, args.noise, args.rate
  config.progress, config.report = False, False
  config.checkpoint = False  # the fold runs turn it on: their final parameters are read back
  if args.epochs:
    config.num_epochs = args.epochs
  return config


def train(config, workdir: str):
  from gdw_jax import train as trainer
  return trainer.train_and_evaluate(config, workdir)


def fold_probabilities(args, seed: int, ds, root: str) -> np.ndarray:
  """``[n, K]`` out-of-sample probabilities of ERM on ``ds``'s training set by k-fold CV."""
  import jax
  from sklearn.model_selection import StratifiedKFold

  from gdw_jax import checkpoint, models

  probs = np.zeros((ds.num_train, ds.num_classes))
  folds = StratifiedKFold(args.folds, shuffle=True, random_state=seed)
  for f, (fit, held) in enumerate(folds.split(np.zeros(ds.num_train), ds.y_train)):
    path = os.path.join(root, f"fold{f}.npz")
    np.savez(path, x_train=ds.x_train[fit], y_train=ds.y_train[fit])
    config = base_config(args, seed, "erm")
    config.dataset, config.data_path = "npz", path
    config.noise_type, config.noise_rate = "none", 0.0
    config.image_normalize = False  # digits arrays are standardised already: used as stored
    config.checkpoint, config.checkpoint_every_steps, config.checkpoint_best = True, 0, False
    workdir = os.path.join(root, f"fold{f}")
    train(config, workdir)
    state = checkpoint.load(workdir)["state"]
    model = models.get(config.model, ds.num_classes, config)
    logits = model.apply(state["params"], state["model_state"], ds.x_train[held], False)[0]
    probs[held] = np.asarray(jax.nn.softmax(np.asarray(logits, np.float64), axis=-1))
  return probs / probs.sum(axis=1, keepdims=True)


def cleanlab_entries(args, seed: int, ds, root: str):
  """``{entry: metrics}`` of cleanlab's ranking and of its find_label_issues mask."""
  from cleanlab.filter import find_label_issues
  from cleanlab.rank import get_label_quality_scores

  from gdw_jax.analysis import label_issues

  probs = fold_probabilities(args, seed, ds, root)
  wrong = ds.y_train != ds.y_train_true
  quality = get_label_quality_scores(ds.y_train, probs)
  ranked = dict(label_issues.detection(quality, wrong), training_runs=args.folds)
  mask = find_label_issues(ds.y_train, probs, n_jobs=1)  # no fork: JAX is multithreaded
  found = int(mask.sum())
  hits = int((mask & wrong).sum())
  flagged = {"precision": hits / found if found else float("nan"),
             "recall": hits / int(wrong.sum()), "flagged": found, "training_runs": args.folds}
  return {"cleanlab": ranked, "cleanlab find_label_issues": flagged}


def run_entries(args, seed: int, method: str, root: str):
  """One training run of ``method``: its own score and the other score of label_issues.csv."""
  from gdw_jax.analysis import label_issues

  workdir = os.path.join(root, method)
  final = train(base_config(args, seed, method), workdir)
  cols = label_issues.read_csv(label_issues.path_in(workdir))
  own = final["label_score"]
  out = {}
  for name, score in label_issues.score_columns(cols, own).items():
    if method == "erm":  # p(given) = exp(-loss): ranking by it is ranking by loss
      if name != "probability":
        continue
      entry = "erm small-loss"
    else:
      entry = method if name == own else f"{method} [{name}]"
    out[entry] = dict(label_issues.detection(score, cols["mislabelled"]), training_runs=1)
  return out


def table(results: dict) -> str:
  def cell(values):
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size else "n/a"

  lines = ["| entry | AUROC | AUPRC | precision@k | precision / recall (mask) | training runs |",
           "|---|---|---|---|---|---|"]
  for entry, r in results.items():
    mask = (f"{cell(r['precision'])} / {cell(r['recall'])}" if "precision" in r else "")
    lines.append(f"| {entry} | {cell(r.get('auroc', []))} | {cell(r.get('auprc', []))} | "
                 f"{cell(r.get('precision_at_k', []))} | {mask} | {r['training_runs']} |")
  return "\n".join(lines)


def collect(results: dict, entries: dict) -> None:
  for entry, metrics in entries.items():
    slot = results.setdefault(entry, {"training_runs": metrics["training_runs"]})
    for k, v in metrics.items():
      if k != "training_runs":
        slot.setdefault(k, []).append(v)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--noise", default="uniform", choices=["uniform", "flip", "flip2"])
  p.add_argument("--rate", type=float, default=0.4)
  p.add_argument("--seeds", type=int, default=3, help="runs seeds 0..S-1")
  p.add_argument("--methods", default="mwnet,cmwnet,l2rw,gdw",
                 help="meta methods whose weights rank the samples")
  p.add_argument("--folds", type=int, default=5, help="cross-validation folds for cleanlab")
  p.add_argument("--epochs", type=int, default=0, help="override num_epochs (0: config's)")
  p.add_argument("--json", default=None, help="write per-seed results here")
  p.add_argument("--workdir", default=None, help="keep every run's workdir under this folder")
  args = p.parse_args(argv)

  from gdw_jax import methods
  chosen = [m for m in args.methods.split(",") if m]
  unknown = [m for m in chosen if m not in methods.names()]
  if unknown:
    print(f"error: unknown method(s) {unknown}; valid: {', '.join(methods.names())}",
          file=sys.stderr)
    return 2
  if args.seeds < 1 or args.folds < 2 or not 0 < args.rate <= 1:
    print("error: need --seeds >= 1, --folds >= 2 and --rate in (0, 1]", file=sys.stderr)
    return 2
  try:
    import cleanlab  # noqa: F401
  except ImportError:
    print("error: the cleanlab comparison needs cleanlab: pip install -e '.[compare]'",
          file=sys.stderr)
    return 2

  from gdw_jax import data
  results, t0 = {}, time.time()
  for seed in range(args.seeds):
    with tempfile.TemporaryDirectory(prefix=f"detect_{seed}_") as tmp:  # unless --workdir
      root = os.path.join(args.workdir, f"seed{seed}") if args.workdir else tmp
      os.makedirs(root, exist_ok=True)
      ds = data.build(base_config(args, seed, "erm"))
      collect(results, cleanlab_entries(args, seed, ds, root))
      for method in ["erm", *chosen]:
        collect(results, run_entries(args, seed, method, root))
    print(f"seed {seed} done ({time.time() - t0:.0f}s, realised noise "
          f"{np.mean(ds.y_train != ds.y_train_true):.3f})", file=sys.stderr, flush=True)
  print(f"\ndigits, {args.noise} noise {args.rate}, {args.seeds} seed(s), "
        f"{time.time() - t0:.0f}s total\n")
  print(table(results))
  if args.json:
    fileio.write_json(args.json, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
