"""``report.md`` + PNG figures for one workdir, or a comparison of several.

:func:`write_report` is what the trainer calls at the end of every run, so it must be fast,
headless and never fail a finished run over a figure: each section runs on its own, and a
section that cannot be drawn (a missing file, a method without a weight net, ...) becomes a
line under "Skipped" saying why. The numbers are also written to ``analysis.json``.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from gdw_jax import fileio
from gdw_jax.analysis import label_issues, plots, stats
from gdw_jax.analysis import weight_fn as weight_fn_lib
from gdw_jax.analysis.workdir import Run, load_run

FIGURES = "figures"
KEY_CONFIG = ("method", "dataset", "model", "noise_type", "noise_rate", "imbalance_factor",
              "imbalance_type", "meta_per_class", "num_epochs", "batch_size", "learning_rate",
              "lr_schedule", "weight_decay", "seed", "hypergrad")


def _fmt(x, digits: int = 2, pct: bool = False) -> str:
  if x is None or (isinstance(x, float) and not np.isfinite(x)):
    return "n/a"
  return f"{x:.{digits}f}" + ("%" if pct else "")


def _pct(x):
  return None if x is None else 100.0 * x


def _epoch1(epoch) -> str:
  """final.json counts epochs from 0; the report and figures from 1."""
  return "n/a" if epoch is None else str(int(epoch) + 1)


def final_metrics(run: Run) -> Optional[Dict[str, Any]]:
  """``final.json``, or the same accuracies recomputed from ``metrics.jsonl`` when a run ended
  before writing it (killed, or still running): marked with ``from_metrics``."""
  if run.final is not None:
    return run.final
  rows = [r for r in run.metrics if r.get("test_acc") is not None]  # tolerate odd files
  if not rows:
    return None
  accs = stats.accuracy_summary(rows)
  return {**{k: accs[k] for k in ("last_acc", "best_acc", "best_epoch", "last5_acc")},
          "num_epochs": len(rows), "final_train_loss": run.metrics[-1].get("train_loss"),
          "wall_time_s": run.metrics[-1].get("wall_time_s"), "from_metrics": True}


def _blank_summary(run: Run) -> Dict[str, Any]:
  out: Dict[str, Any] = {"method": run.method, "dataset": run.dataset, "noise": run.noise_desc,
                         "imbalance": run.imbalance_desc or "balanced"}
  for key in ("last_acc", "best_acc", "best_epoch", "last5_acc", "realised_noise_rate",
              "detection_auc", "lowest_weight_precision", "weight_clean_mean",
              "weight_noisy_mean", "weights_constant", "head_acc", "tail_acc"):
    out[key] = None
  return out


def summarize(run: Run, wf: Optional[weight_fn_lib.WeightFunction] = None) -> Dict[str, Any]:
  """The headline numbers of a run (``None`` where a number cannot be computed)."""
  out = _blank_summary(run)
  for key in ("last_acc", "best_acc", "best_epoch", "last5_acc", "realised_noise_rate"):
    out[key] = (final_metrics(run) or {}).get(key)
  noisy = run.noise_mask
  iw = None if run.weights is None else run.weights.get("instance_weight")
  if iw is not None and noisy is not None and iw.ndim == 2 and iw.shape[0] > 0 \
      and iw.shape[1] == noisy.shape[0]:
    last = np.asarray(iw, np.float64)[-1]
    out["weights_constant"] = stats.is_constant(iw)
    if not out["weights_constant"]:
      out["detection_auc"] = stats.detection_auc(last, noisy)
      out["lowest_weight_precision"] = stats.lowest_weight_precision(last, noisy)
    for name, mask in (("clean", ~noisy), ("noisy", noisy)):
      w = last[mask & np.isfinite(last)]
      out[f"weight_{name}_mean"] = float(w.mean()) if w.size else None
  if run.predictions is not None and run.long_tailed and run.train_counts is not None:
    acc = stats.per_class_accuracy(run.predictions["test_pred"], run.predictions["test_labels"],
                                   len(run.train_counts))
    head, tail = stats.head_tail_split(run.train_counts)
    out["head_acc"], out["tail_acc"] = float(np.nanmean(acc[head])), float(np.nanmean(acc[tail]))
  if wf is not None:
    out["weight_fn_heads"] = len(wf.curves)
  return out


class _Doc:
  """Markdown lines, figures written so far and the reasons for what was skipped."""

  def __init__(self, out_dir: str):
    self.out_dir, self.lines, self.skipped, self.figures = out_dir, [], [], []

  def add(self, *lines: str):
    self.lines.extend(lines)

  def figure(self, fig, name: str, caption: str):
    fileio.makedirs(os.path.join(self.out_dir, FIGURES))
    plots.save(fig, os.path.join(self.out_dir, FIGURES, name))
    self.figures.append(name)
    self.add(f"![{caption}]({FIGURES}/{name})", "")

  def section(self, title: str, body: Callable[[], None]):
    """Run ``body``; a missing input (KeyError, Unavailable, ...) becomes a skip note."""
    start = len(self.lines)
    self.add(f"## {title}", "")
    try:
      body()
    except _Skip as e:
      del self.lines[start:]
      self.skipped.append(f"{title}: {e}")
    except fileio.WriteError:  # disk full, read-only workdir: the run stops (exit status 4)
      raise
    except Exception as e:  # noqa: BLE001 -- a report must not fail a finished run
      del self.lines[start:]
      self.skipped.append(f"{title}: failed ({type(e).__name__}: {e})")


class _Skip(Exception):
  pass


def _truth(run: Run) -> np.ndarray:
  """The noise mask, or a skip saying why there is none."""
  if not run.truth_known:
    raise _Skip("the true labels are unknown (the given labels were used as they are)")
  return _need(run.noise_mask, "labels.npz")


def _need(value, what: str):
  if value is None:
    raise _Skip(f"{what} is missing")
  return value


def _config_section(doc: _Doc, run: Run):
  cfg = _need(run.config, "config.json")
  doc.add("| key | value |", "|---|---|")
  for key in KEY_CONFIG:
    if key in cfg:
      doc.add(f"| `{key}` | `{cfg[key]}` |")
  doc.add("", "<details><summary>full config</summary>", "", "```json",
          json.dumps(cfg.to_dict(), indent=1, default=str), "```", "</details>", "")


def _data_section(doc: _Doc, run: Run):
  if not run.truth_known:
    raise _Skip("the true labels are unknown (the given labels were used as they are)")
  y, t = _need(run.noisy_labels, "labels.npz"), _need(run.true_labels, "labels.npz")
  k = run.num_classes or int(max(y.max(), t.max())) + 1
  data = run.data or {}
  doc.add(f"Train {len(y)} · meta {data.get('num_meta', 'n/a')} · test "
          f"{data.get('num_test', 'n/a')} samples, {k} classes.", "")
  nominal = None
  if run.labels is not None and "corruption_matrix" in run.labels:
    nominal = np.asarray(run.labels["corruption_matrix"], np.float64)
  elif "corruption_matrix" in data:
    nominal = np.asarray(data["corruption_matrix"], np.float64)
  noisy = y != t
  counts = np.bincount(t, minlength=k)
  line = f"Realised: **{100 * noisy.mean():.1f}%** of training labels differ from the true label"
  if nominal is not None:
    expected = float(np.sum(counts * (1.0 - np.diag(nominal))) / max(len(t), 1))
    line += (f" (expected {100 * expected:.1f}% from the corruption matrix; uniform noise can "
             "redraw the true label)")
  doc.add(line + ".", "")
  if k <= 20:
    per_class = np.bincount(t, weights=noisy.astype(float), minlength=k)
    doc.add("| true class | train samples | mislabelled |", "|---|---|---|")
    for c in range(k):
      frac = per_class[c] / counts[c] if counts[c] else float("nan")
      doc.add(f"| {c} | {counts[c]} | {_fmt(100 * frac, 1, True)} |")
    doc.add("")
  realised = stats.realised_corruption(y, t, k)
  doc.figure(plots.corruption(run, nominal, realised), "corruption.png",
             "nominal and realised corruption matrices")


def _partial_section(doc: _Doc, run: Run):
  """Candidate sets: realised mean size against the generator's expectation, and how well the
  run disambiguated them (``disambiguation_acc``, where the method reports it)."""
  info = run.data["candidates"]
  line = (f"Candidate sets ({info['source']}): mean size **{info['mean_size']:.3f}** "
          f"(min {info['min_size']}, max {info['max_size']}) over {info['num_classes']} classes")
  if "expected_mean_size" in info:
    line += (f"; expected {info['expected_mean_size']:.3f} = 1 + (C-1)q + (1-q)^(C-1) for "
             f"{info['partial_type']} q = {info['partial_rate']}")
  doc.add(line + ".", "")
  if "contains_true_label" in info:
    doc.add(f"Sets containing the true label: {100 * info['contains_true_label']:.2f}%.", "")
  if info.get("noise_not_applied"):
    doc.add(f"Note: {info['noise_not_applied']}.", "")
  dis = [(r["epoch"], r["disambiguation_acc"]) for r in run.metrics
         if r.get("disambiguation_acc") is not None]
  if dis and run.truth_known:
    best = max(dis, key=lambda t: t[1])
    doc.add(f"Disambiguation accuracy (argmax of the method's label estimate = true label, "
            f"training samples seen in the epoch): last **{100 * dis[-1][1]:.2f}%** (epoch "
            f"{_epoch1(dis[-1][0])}), best {100 * best[1]:.2f}% (epoch {_epoch1(best[0])}).", "")


def _final_section(doc: _Doc, run: Run, summary: Dict[str, Any]):
  if run.final is not None and run.final.get("last_acc") is None and "steps" in run.final:
    doc.add(f"No test set: no test accuracy exists. Trained {run.final['steps']} steps in "
            f"{_fmt(run.final.get('wall_time_s'), 1)} s; final train loss (given labels) "
            f"{_fmt(run.final.get('final_train_loss'), 4)}.", "")
    return
  final = _need(final_metrics(run), "final.json (and test accuracy in metrics.jsonl)")
  if final.get("from_metrics"):
    doc.add(f"final.json is missing: numbers from the {final['num_epochs']} epochs logged in "
            "metrics.jsonl (an unfinished run?).", "")
  doc.add("| metric | value |", "|---|---|",
          f"| last-epoch test accuracy | {_fmt(final.get('last_acc'), 2, True)} |",
          f"| best test accuracy | {_fmt(final.get('best_acc'), 2, True)} at epoch "
          f"{_epoch1(final.get('best_epoch'))} of {final.get('num_epochs', 'n/a')} |",
          f"| mean test accuracy, last 5 epochs | {_fmt(final.get('last5_acc'), 2, True)} |",
          f"| final train loss (given labels) | {_fmt(final.get('final_train_loss'), 4)} |",
          f"| steps · wall time | {final.get('steps', 'n/a')} · "
          f"{_fmt(final.get('wall_time_s'), 1)} s |")
  if final.get("last_top5_acc") is not None:
    doc.add(f"| last-epoch test top-5 accuracy | {_fmt(final['last_top5_acc'], 2, True)} |")
  for name, extra in (final.get("extra_tests") or {}).items():
    doc.add(f"| test set `{name}`: last top-1 · top-5 (best top-1) | "
            f"{_fmt(extra.get('last_acc'), 2, True)} · {_fmt(extra.get('last_top5_acc'), 2, True)}"
            f" ({_fmt(extra.get('best_acc'), 2, True)}) |")
  if summary.get("head_acc") is not None:
    doc.add(f"| head / tail class accuracy | {_fmt(summary['head_acc'], 2, True)} / "
            f"{_fmt(summary['tail_acc'], 2, True)} |")
  if summary.get("detection_auc") is not None:
    doc.add(f"| noisy-sample detection ROC AUC (last epoch) | "
            f"{_fmt(summary['detection_auc'], 3)} |")
  doc.add("")


def _previous_final(workdir: Optional[str]) -> Optional[Dict[str, Any]]:
  """The reviewed run's ``final.json``, or a seeds launch's mean (``summary.json``); None if
  unknown or unreadable."""
  if not workdir:
    return None
  for name in ("final.json", "summary.json"):
    try:
      with open(os.path.join(workdir, name)) as f:
        found = json.load(f)
    except (OSError, ValueError):
      continue
    return found if name == "final.json" else dict(found.get("mean") or {},
                                                   method=found.get("method"))
  return None


def _corrections_section(doc: _Doc, run: Run, summary: Dict[str, Any]):
  rec = run.corrections
  doc.add(f"Trained on reviewed labels (`{rec['file']}`, {rec['rows']} rows): "
          f"**{rec['num_changed']} labels changed**, {rec['num_relabelled']} relabelled and "
          f"{rec['num_removed']} removed; {rec['num_kept']} reviewed and kept. Each change is "
          "listed in `corrections_applied.json`.", "")
  before = _previous_final(rec.get("source_workdir"))
  after = final_metrics(run) or {}
  summary["label_corrections"] = {"num_changed": rec["num_changed"],
                                  "previous_last5_acc": (before or {}).get("last5_acc"),
                                  "last5_acc": after.get("last5_acc")}
  if after.get("last5_acc") is None:
    doc.add("There is no test set, so no accuracy before / after.", "")
    return
  if before is None:
    doc.add(f"The reviewed run's final.json was not found ("
            f"`{rec.get('source_workdir') or 'no # workdir: line in the file'}`): no accuracy "
            "before the corrections to compare with.", "")
    return
  doc.add("| test accuracy | before (reviewed run) | after (this run) |", "|---|---|---|")
  for key, what in (("last5_acc", "mean of the last 5 epochs"), ("best_acc", "best epoch"),
                    ("last_acc", "last epoch")):
    doc.add(f"| {what} | {_fmt(before.get(key), 2, True)} | {_fmt(after.get(key), 2, True)} |")
  doc.add("", f"Before: `{rec['source_workdir']}` (method {before.get('method', 'n/a')}); after: "
              f"this run (method {run.method}).", "")


def _curves_section(doc: _Doc, run: Run):
  if not run.metrics:
    raise _Skip("metrics.jsonl is missing or empty")
  doc.figure(plots.learning_curves(run), "learning_curves.png", "learning curves")


def _weight_fn_section(doc: _Doc, run: Run, wf):
  if isinstance(wf, Exception):
    raise _Skip(str(wf))
  k = run.num_classes
  at = [0.0, float(np.log(k)), float(wf.losses[-1])]
  doc.add(f"Weight the final weight net gives to a sample with training loss ℓ (nats; "
          f"ℓ = ln {k} = {at[1]:.2f} is a uniform prediction)"
          + (". GDW: the first-stage weight v, before the class-level step." if
             run.method == "gdw" else ".") + "", "",
          "| head | " + " | ".join(f"w(ℓ={a:.2f})" for a in at) + " |",
          "|---|" + "---|" * len(at))
  for curve in wf.curves:
    w = [np.interp(a, wf.losses, curve.weights) for a in at]
    name = "all classes" if len(wf.curves) == 1 else weight_fn_lib.describe_classes(
        curve.classes, run.train_counts)
    doc.add(f"| {name} | " + " | ".join(f"{v:.3f}" for v in w) + " |")
  doc.add("")
  doc.figure(plots.weight_function(run, wf), "weight_function.png", "learned weight vs loss")


def _weights_section(doc: _Doc, run: Run, summary: Dict[str, Any]):
  w = _need(run.weights, "sample_weights.npz")
  noisy = _truth(run)
  if "instance_weight" not in w:
    raise _Skip("sample_weights.npz has no instance_weight")
  if w["instance_weight"].shape[-1] != noisy.shape[0]:
    raise _Skip(f"sample_weights.npz ({w['instance_weight'].shape[-1]} samples) does not match "
                f"labels.npz ({noisy.shape[0]})")
  if summary["weights_constant"]:
    raise _Skip(f"{run.method} gives every sample the same weight: nothing learned to show")
  if not noisy.any() or noisy.all():
    raise _Skip("needs both clean and mislabelled training samples")
  auc = stats.auc_per_epoch(w["instance_weight"], noisy)
  doc.add("Each sample's instance weight (GDW: the target column W*[i, y]) read as a "
          "cleanliness score: ROC AUC = P(w_clean > w_noisy) + ½ P(tie); 1 = every mislabelled "
          "sample weighted below every clean one, 0.5 = chance.", "",
          f"- last epoch: AUC **{_fmt(summary['detection_auc'], 3)}**, mean weight clean "
          f"{_fmt(summary['weight_clean_mean'], 3)} vs mislabelled "
          f"{_fmt(summary['weight_noisy_mean'], 3)}",
          f"- of the {int(noisy.sum())} lowest-weighted samples (as many as there are "
          f"mislabelled ones), {_fmt(_pct(summary['lowest_weight_precision']), 1, True)} are "
          "mislabelled (random choice: "
          f"{100 * noisy.mean():.1f}%)",
          f"- best epoch: AUC {_fmt(float(np.nanmax(auc)), 3)} (epoch "
          f"{int(np.nanargmax(auc)) + 1})" if np.isfinite(auc).any() else "- best epoch: n/a",
          "")
  doc.figure(plots.weights_over_training(run), "weights_over_training.png",
             "clean vs mislabelled weights over training")


def _class_weights_section(doc: _Doc, run: Run):
  w = _need(run.weights, "sample_weights.npz")
  fw = w.get("final_weights")
  if fw is None:
    raise _Skip("sample_weights.npz has no final_weights")
  if fw.ndim != 2 or fw.shape[1] < 2:
    raise _Skip(f"{run.method} has instance-level weights only (no class-level W*)")
  _truth(run)
  y, t = _need(run.noisy_labels, "labels"), _need(run.true_labels, "labels")
  maps = stats.class_weight_maps(fw, y, t)
  doc.add("Mean W*[i, j] over the samples with given label y (rows) for each class column j "
          "(last epoch). The diagonal is the target column, set by the zero-mean constraint; "
          "the off-diagonal entries carry the class-level step.", "")
  tc = stats.true_class_column(fw, y, t)
  if tc is not None:
    doc.add(f"Mislabelled samples (n={tc['count']}): mean W* on the **true-class** column "
            f"{tc['true_column']:.4f} vs {tc['other_columns']:.4f} on the other non-target "
            "columns (lower on the true class = less push against the correct label).", "")
  doc.figure(plots.class_weight_maps(run, maps), "class_weight_maps.png",
             "GDW class-level weight maps")


def _per_class_section(doc: _Doc, run: Run, summary: Dict[str, Any]):
  _need(run.predictions, "predictions.npz")
  if not np.asarray(run.predictions.get("test_labels", [])).size:
    raise _Skip("there is no test set")
  if summary.get("head_acc") is not None:
    head, tail = stats.head_tail_split(run.train_counts)
    doc.add(f"Head = the {len(head)} classes with most training samples "
            f"({', '.join(map(str, head))}), tail = the rest. Test accuracy: head "
            f"**{summary['head_acc']:.2f}%**, tail **{summary['tail_acc']:.2f}%**.", "")
  doc.figure(plots.per_class_accuracy(run), "per_class_accuracy.png", "per-class accuracy")


def _notes(run: Run) -> List[str]:
  """What the run said about its data in words (final.json, else data.json)."""
  for src in (run.final, run.data):
    if src is not None and src.get("notes"):
      return list(src["notes"])
  return []


def _label_issues_section(doc: _Doc, run: Run, summary: Dict[str, Any]):
  cols = _need(run.label_issues, "label_issues.csv")
  score = (run.final or {}).get("label_score")
  n = len(cols["rank"])
  what = {"probability": "the final model's probability of the given label",
          "weight": f"the mean instance weight over the last "
                    f"{run.get('label_score_epochs', 'few')} epochs",
          "candidates": "the final model's probability mass inside each candidate set (low: "
                        "the set probably misses the true label)"}
  doc.add(f"`label_issues.csv` ranks all {n} training samples, most suspicious first, by "
          f"{what.get(score, 'the score column')} (this method's `label_score`: "
          f"`{score or 'n/a'}`).", "")
  if "set_misses_truth" in cols:
    m = int(cols["set_misses_truth"].sum())
    doc.add(f"Candidate sets missing the true label: {m} of {n}" + (
        f"; the ranking finds them with AUROC "
        f"{_fmt(label_issues.detection(cols['score'], cols['set_misses_truth'])['auroc'], 3)}"
        if 0 < m < n else " (generated sets always hold it: no detection to score)") + ".", "")
  if "mislabelled" in cols and score != "candidates":
    k = int(cols["mislabelled"].sum())
    doc.add(f"With the true labels known ({k} of {n} training labels are wrong, "
            f"{100 * k / max(n, 1):.1f}%): how well each score finds them (mislabelled = "
            f"positive; precision@k with k = {k}; a random ranking gets AUROC 0.5 and "
            f"AUPRC = precision@k = {k / max(n, 1):.3f}).", "",
            "| score | AUROC | AUPRC | precision@k |", "|---|---|---|---|")
    found = {}
    for name, s in label_issues.score_columns(cols, score).items():
      d = label_issues.detection(s, cols["mislabelled"])
      found[name] = d
      mark = " (method's)" if name == score else ""
      doc.add(f"| {name}{mark} | {_fmt(d and d['auroc'], 3)} | {_fmt(d and d['auprc'], 3)} | "
              f"{_fmt(d and d['precision_at_k'], 3)} |")
    doc.add("")
    summary["label_issues"] = found
  shown = min(10, n)
  doc.add(f"Top {shown}:", "", "| rank | id | given | predicted | p(given) | score |",
          "|---|---|---|---|---|---|")
  for i in range(shown):
    doc.add(f"| {cols['rank'][i]} | `{cols['id'][i]}` | {cols['given_label'][i]} | "
            f"{cols['predicted_label'][i]} | {cols['p_given'][i]:.3g} | {cols['score'][i]:.4g} |")
  doc.add("")


def write_report(workdir: str, loss_max: float = 10.0) -> str:
  """Write ``workdir/report.md``, ``workdir/figures/*.png`` and ``workdir/analysis.json``.

  Returns the path of ``report.md``. Missing optional files skip their section with a note.
  """
  run = load_run(workdir)
  try:
    wf = weight_fn_lib.weight_function(run, loss_max=loss_max)
  except weight_fn_lib.Unavailable as e:
    wf = e
  except Exception as e:  # noqa: BLE001
    wf = weight_fn_lib.Unavailable(f"could not rebuild the weight net ({type(e).__name__}: {e})")
  doc = _Doc(workdir)
  try:
    summary = summarize(run, None if isinstance(wf, Exception) else wf)
  except Exception as e:  # noqa: BLE001 -- e.g. arrays of mismatched sizes: report the rest
    summary = _blank_summary(run)
    doc.skipped.append(f"Summary numbers: failed ({type(e).__name__}: {e})")
  doc.add(f"# Run report: {run.title}", "",
          f"Workdir `{os.path.abspath(workdir)}`, written "
          f"{datetime.datetime.now().isoformat(timespec='seconds')} by "
          "`gdw_jax.analysis.report`.", "")
  for note in _notes(run):
    doc.add(f"**Note: {note}.**", "")
  summary["notes"] = _notes(run)
  doc.section("Final metrics", lambda: _final_section(doc, run, summary))
  if run.corrections is not None:  # trained on reviewed labels
    doc.section("Label corrections", lambda: _corrections_section(doc, run, summary))
  doc.section("Configuration", lambda: _config_section(doc, run))
  doc.section("Data and realised corruption", lambda: _data_section(doc, run))
  if (run.data or {}).get("candidates"):
    summary["partial_labels"] = run.data["candidates"]
    doc.section("Partial labels (candidate sets)", lambda: _partial_section(doc, run))
  doc.section("Learning curves", lambda: _curves_section(doc, run))
  doc.section("Learned weighting function", lambda: _weight_fn_section(doc, run, wf))
  doc.section("Clean vs mislabelled weights", lambda: _weights_section(doc, run, summary))
  doc.section("GDW class-level weights", lambda: _class_weights_section(doc, run))
  doc.section("Per-class accuracy", lambda: _per_class_section(doc, run, summary))
  doc.section("Label issues", lambda: _label_issues_section(doc, run, summary))
  _finish(doc, run.problems)
  summary["figures"] = doc.figures
  summary["skipped"] = doc.skipped
  fileio.write_json(os.path.join(workdir, "analysis.json"), summary)
  return _write(doc, os.path.join(workdir, "report.md"))


def _finish(doc: _Doc, problems: Sequence[str]):
  if doc.skipped or problems:
    doc.add("## Skipped", "")
    doc.add(*[f"- {s}" for s in doc.skipped])
    doc.add(*[f"- unreadable file {p}" for p in problems])
    doc.add("")


def _write(doc: _Doc, path: str) -> str:
  fileio.write_text(path, "\n".join(doc.lines).rstrip() + "\n")
  return path


def run_labels(runs: Sequence[Run]) -> List[str]:
  """One legend label per run: the method, plus the workdir name where methods repeat."""
  methods = [r.method for r in runs]
  return [m if methods.count(m) == 1 else f"{m} ({r.name})" for m, r in zip(methods, runs)]


def write_comparison(workdirs: Sequence[str], out_dir: str, loss_max: float = 10.0) -> str:
  """Compare several runs: a table plus overlaid curves, in ``out_dir/report.md``."""
  runs = [load_run(w) for w in workdirs]
  labels = run_labels(runs)
  wfs: List[Any] = []
  for run in runs:
    try:
      wfs.append(weight_fn_lib.weight_function(run, loss_max=loss_max))
    except Exception:  # noqa: BLE001 -- runs without a weight net simply have no curve
      wfs.append(None)
  summaries = [summarize(r, wf) for r, wf in zip(runs, wfs)]
  fileio.makedirs(out_dir)
  doc = _Doc(out_dir)
  doc.add(f"# Comparison: {plots._common_title(runs)}", "",
          f"{len(runs)} runs, written {datetime.datetime.now().isoformat(timespec='seconds')}. "
          "Accuracies in % on the clean test set; AUC: noisy-sample detection by the last "
          "epoch's weights (0.5 = chance, n/a = constant weights).", "")

  def table():
    lt = any(s["head_acc"] is not None for s in summaries)
    head = "| run | method | noise | last5 acc | best acc | last acc | detection AUC | " \
           "weight clean / noisy |" + (" head / tail acc |" if lt else "")
    doc.add(head, "|" + "---|" * (head.count("|") - 1))
    for run, label, s in zip(runs, labels, summaries):
      row = (f"| [{label}]({os.path.relpath(os.path.join(run.workdir, 'report.md'), out_dir)})"
             f" | {s['method']} | {s['noise']} | {_fmt(s['last5_acc'])} | {_fmt(s['best_acc'])}"
             f" | {_fmt(s['last_acc'])} | {_fmt(s['detection_auc'], 3)} | "
             f"{_fmt(s['weight_clean_mean'], 3)} / {_fmt(s['weight_noisy_mean'], 3)} |")
      if lt:
        row += f" {_fmt(s['head_acc'])} / {_fmt(s['tail_acc'])} |"
      doc.add(row)
    doc.add("")

  doc.section("Results", table)
  doc.section("Curves", lambda: doc.figure(plots.compare_curves(runs, labels),
                                           "compare_curves.png", "comparison curves"))

  def weight_fns():
    if not any(wf is not None for wf in wfs):
      raise _Skip("no run has a learned weighting function")
    doc.figure(plots.compare_weight_functions(runs, labels, wfs), "compare_weight_functions.png",
               "learned weighting functions")

  doc.section("Learned weighting functions", weight_fns)
  _finish(doc, [p for r in runs for p in r.problems])
  fileio.write_json(os.path.join(out_dir, "comparison.json"),
                    {"runs": [{"workdir": r.workdir, "label": l, **s}
                              for r, l, s in zip(runs, labels, summaries)],
                     "figures": doc.figures, "skipped": doc.skipped})
  return _write(doc, os.path.join(out_dir, "report.md"))
