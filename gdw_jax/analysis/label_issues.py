"""``label_issues.csv``: every training sample, ranked by how likely its given label is wrong.

Written by the trainer at the end of every run. Two label-quality scores (higher = the given
label looks right), each a number per training sample:

* ``probability``: ``p(given label | x)``, the softmax of the final model's logits in eval mode
  (no augmentation). What ERM and the loss baselines give, and cleanlab's ``self_confidence``.
* ``weight``: the method's recorded instance weight of the sample (for class-level weights the
  entry of its given label, GDW's target column ``W*[i, y]``), averaged over the last
  ``label_score_epochs`` epochs (NaN entries, samples not seen in an epoch, left out). Meta
  methods down-weight samples whose gradient disagrees with the clean meta set, so a low weight
  flags a suspicious label.

* ``candidates`` (partial labels: the run's labels are candidate sets): the final model's
  probability mass *inside* the sample's candidate set, ``sum_{j in S_i} p_j``; rank 1 is the
  sample whose set most probably misses its true label. Columns ``p_outside`` (``1 -`` that) and
  ``candidates`` (``|``-joined), and with the truth ``set_misses_truth``.

Each method says which score ranks its samples (``Method.label_score``); the trainer records it
in ``final.json`` as ``label_score``, so nothing here needs method names. Rank 1 is the lowest
score (most suspicious); ties keep the training order.

Columns: ``rank, id, given_label, predicted_label, p_given, score`` (the method's score), then
``weight`` (when the weights are not all equal), ``given_class, predicted_class`` (when class
names are known) and ``true_label, mislabelled`` (when the true labels are known: research
mode). :func:`detection` scores a ranking against the truth: AUROC, AUPRC and precision at
``k`` = the number of truly mislabelled samples (``mislabelled`` is the positive class).
"""
from __future__ import annotations

import csv
import os
from typing import Any, Dict, Optional

import numpy as np

from gdw_jax import fileio

FILE = "label_issues.csv"
SCORES = ("probability", "weight", "candidates")


def weight_score(instance_weight, last_epochs: int) -> np.ndarray:
  """``[N]`` mean of the last ``last_epochs`` rows of ``instance_weight`` ``[E, N]`` that hold
  any recorded weight (NaN: never seen in those epochs)."""
  w = np.asarray(instance_weight, np.float64)
  rows = w[np.isfinite(w).any(axis=1)][-last_epochs:]
  if not rows.shape[0]:
    return np.full(w.shape[1], np.nan)
  seen = np.isfinite(rows)
  total = np.where(seen, rows, 0.0).sum(axis=0)
  count = seen.sum(axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def ranking(score) -> np.ndarray:
  """Positions from most to least suspicious: ascending score, NaN last, ties in order."""
  s = np.asarray(score, np.float64)
  return np.argsort(np.where(np.isfinite(s), s, np.inf), kind="stable")


def _is_constant(w) -> bool:
  w = np.asarray(w, np.float64)
  w = w[np.isfinite(w)]
  return w.size == 0 or bool(np.all(w == w[0]))


def table(*, ids, given, pred, p_given, label_score: str, weight=None, class_names=None,
          true_labels=None, candidates=None, probs=None) -> Dict[str, np.ndarray]:
  """The CSV's columns in rank order (see the module docstring). ``candidates`` ``[n, C]`` and
  the model's ``probs`` ``[n, C]``: the ``candidates`` score."""
  if label_score not in SCORES:
    raise ValueError(f"unknown label_score {label_score!r}; valid: {', '.join(SCORES)}")
  if label_score == "weight" and weight is None:
    raise ValueError("label_score 'weight' needs the recorded weights")
  if label_score == "candidates" and (candidates is None or probs is None):
    raise ValueError("label_score 'candidates' needs the candidate sets and the probabilities")
  given, pred = np.asarray(given, np.int64), np.asarray(pred, np.int64)
  p_given = np.asarray(p_given, np.float64)
  if label_score == "candidates":
    mask = np.asarray(candidates, bool)
    score = np.sum(np.where(mask, np.asarray(probs, np.float64), 0.0), axis=1)
  else:
    score = p_given if label_score == "probability" else np.asarray(weight, np.float64)
  order = ranking(score)
  cols: Dict[str, np.ndarray] = {
      "rank": np.arange(1, len(order) + 1), "id": np.asarray(ids).astype(str)[order],
      "given_label": given[order], "predicted_label": pred[order], "p_given": p_given[order],
      "score": score[order]}
  if weight is not None and not _is_constant(weight):
    cols["weight"] = np.asarray(weight, np.float64)[order]
  if class_names is not None:
    names = np.asarray(list(class_names), dtype=str)
    cols["given_class"], cols["predicted_class"] = names[given[order]], names[pred[order]]
  if label_score == "candidates":
    cols["p_outside"] = 1.0 - score[order]
    cols["candidates"] = np.asarray(["|".join(map(str, np.flatnonzero(r))) for r in mask[order]])
  if true_labels is not None:
    t = np.asarray(true_labels, np.int64)[order]
    cols["true_label"], cols["mislabelled"] = t, (t != given[order]).astype(np.int64)
    if label_score == "candidates":
      cols["set_misses_truth"] = (~mask[order][np.arange(len(t)), t]).astype(np.int64)
  return cols


def _cell(v) -> str:
  if isinstance(v, (float, np.floating)):
    return "nan" if not np.isfinite(v) else f"{float(v):.6g}"
  return str(v)


def write_csv(path: str, cols: Dict[str, np.ndarray]) -> None:
  """Atomic write of ``cols`` (equal-length columns) as CSV with a header."""
  names = list(cols)
  n = len(next(iter(cols.values()))) if cols else 0

  def write(tmp):
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      w = csv.writer(f)
      w.writerow(names)
      for i in range(n):
        w.writerow([_cell(cols[c][i]) for c in names])

  fileio.atomic(path, write)


def read_csv(path: str) -> Dict[str, np.ndarray]:
  """``label_issues.csv`` back as columns (numbers as NumPy numbers, ids and names as str)."""
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise ValueError(f"{path} is empty")
  header, body = rows[0], rows[1:]
  cols = {}
  for j, name in enumerate(header):
    values = [r[j] for r in body]
    if name in ("id", "given_class", "predicted_class", "candidates"):
      cols[name] = np.asarray(values, dtype=str)
    elif name in ("p_given", "score", "weight", "p_outside"):
      cols[name] = np.asarray(values, np.float64)
    else:
      cols[name] = np.asarray(values, np.int64)
  return cols


def detection(score, mislabelled) -> Optional[Dict[str, Any]]:
  """How well a label-quality ``score`` finds the ``mislabelled`` samples (positives: low
  score). ``{'auroc', 'auprc', 'precision_at_k', 'k', 'base_rate'}``; None without both clean
  and mislabelled samples. Non-finite scores count as the least suspicious."""
  from sklearn.metrics import average_precision_score, roc_auc_score

  s = np.asarray(score, np.float64)
  y = np.asarray(mislabelled, bool)
  if y.all() or not y.any():
    return None
  finite = np.isfinite(s)
  suspicion = -np.where(finite, s, s[finite].max() + 1.0 if finite.any() else 0.0)
  k = int(y.sum())
  top = ranking(s)[:k]
  return {"auroc": float(roc_auc_score(y, suspicion)),
          "auprc": float(average_precision_score(y, suspicion)),
          "precision_at_k": float(y[top].mean()), "k": k, "base_rate": float(y.mean())}


def write_for_run(path: str, ds, train_eval: Dict[str, np.ndarray], instance_weight,
                  label_score: str, last_epochs: int) -> Dict[str, np.ndarray]:
  """The trainer's end-of-run call: ``ds`` a :class:`gdw_jax.data.BiasedDataset`,
  ``train_eval`` the final model's eval-mode ``pred`` and ``ce`` on the training set (given
  labels), ``instance_weight`` the recorded ``[E, N]`` weights."""
  weight = None if instance_weight is None else weight_score(instance_weight, last_epochs)
  partial = getattr(ds, "candidates", None) is not None and "probs" in train_eval
  cols = table(ids=ds.train_ids, given=ds.y_train, pred=train_eval["pred"],
               p_given=np.exp(-np.asarray(train_eval["ce"], np.float64)),
               label_score="candidates" if partial else label_score, weight=weight,
               class_names=ds.class_names,
               true_labels=ds.y_train_true if ds.truth_known else None,
               candidates=ds.candidates if partial else None,
               probs=train_eval.get("probs"))
  write_csv(path, cols)
  return cols


def score_columns(cols: Dict[str, np.ndarray], label_score: Optional[str] = None
                  ) -> Dict[str, np.ndarray]:
  """``{'probability': p_given, 'weight': ...}``: every score the CSV holds, by name."""
  out = {"probability": cols["p_given"]}
  if "weight" in cols:
    out["weight"] = cols["weight"]
  elif label_score == "weight":
    out["weight"] = cols["score"]
  return out


def summarize(path: str, label_score: Optional[str] = None) -> Dict[str, Any]:
  """Detection numbers of each score in ``path`` (when the CSV has the truth)."""
  cols = read_csv(path)
  out: Dict[str, Any] = {"num_samples": int(cols["rank"].shape[0]), "label_score": label_score}
  if "mislabelled" in cols:
    out["num_mislabelled"] = int(cols["mislabelled"].sum())
    out["scores"] = {name: detection(s, cols["mislabelled"])
                     for name, s in score_columns(cols, label_score).items()}
  return out


def top(cols: Dict[str, np.ndarray], k: int) -> Dict[str, np.ndarray]:
  """The first ``k`` rows (the CSV is in rank order)."""
  return {name: v[:k] for name, v in cols.items()}


def path_in(workdir: str) -> str:
  return os.path.join(workdir, FILE)

