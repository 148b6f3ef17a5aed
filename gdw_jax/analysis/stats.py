"""Numbers behind the figures: detection AUC, weight statistics, class-level maps, accuracies.

Pure NumPy functions of arrays (no files, no plotting), so each is easy to test by hand.

Convention for noisy-sample detection: the learned weight is read as a *cleanliness* score.
With ``clean = ~noise_mask``,

    AUC = P(w_clean > w_noisy) + 1/2 P(w_clean = w_noisy)

over all (clean, noisy) pairs, i.e. ``roc_auc_score(clean, w)``. 1.0: every mislabelled sample
gets a lower weight than every clean one; 0.5: chance (and what constant weights give); below
0.5: the weighting favours the noisy samples.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np


def detection_auc(weights, noise_mask) -> Optional[float]:
  """ROC AUC of ``weights`` for telling clean (high weight) from noisy samples.

  Samples with a non-finite weight (never seen in that epoch) are left out. ``None`` when the
  remaining samples are all clean or all noisy (the AUC is undefined).
  """
  from sklearn.metrics import roc_auc_score
  w = np.asarray(weights, np.float64)
  noisy = np.asarray(noise_mask, bool)
  if w.shape != noisy.shape:
    raise ValueError(f"weights {w.shape} and noise mask {noisy.shape} differ in shape")
  keep = np.isfinite(w)
  w, noisy = w[keep], noisy[keep]
  if noisy.all() or not noisy.any():
    return None
  return float(roc_auc_score(~noisy, w))


def lowest_weight_precision(weights, noise_mask, k: Optional[int] = None) -> Optional[float]:
  """Fraction of mislabelled samples among the ``k`` lowest-weighted ones (ties by index).

  With ``k`` = the number of mislabelled samples (the default) this is the R-precision: the
  share of noise a "drop the k lowest weights" cleaning step would catch. ``None`` without
  mislabelled samples. Non-finite weights are left out.
  """
  w = np.asarray(weights, np.float64)
  noisy = np.asarray(noise_mask, bool)
  keep = np.isfinite(w)
  w, noisy = w[keep], noisy[keep]
  k = int(noisy.sum()) if k is None else int(k)
  if k <= 0 or not noisy.any():
    return None
  lowest = np.argsort(w, kind="stable")[:k]
  return float(noisy[lowest].mean())


def auc_per_epoch(instance_weight, noise_mask):
  """``[E]`` detection AUC of each epoch's weights (``instance_weight`` is ``[E, N]``); NaN where
  undefined."""
  return np.array([np.nan if (a := detection_auc(row, noise_mask)) is None else a
                   for row in np.asarray(instance_weight)])


def is_constant(weights) -> bool:
  """True when every finite weight is the same (ERM's all-ones): nothing was learned."""
  w = np.asarray(weights, np.float64)
  w = w[np.isfinite(w)]
  return w.size == 0 or bool(np.all(w == w[0]))


def weight_quantiles(instance_weight, mask, q=(25, 50, 75)) -> np.ndarray:
  """``[E, len(q)]`` per-epoch percentiles of the weights of the samples in ``mask``."""
  w = np.asarray(instance_weight, np.float64)[:, np.asarray(mask, bool)]
  out = np.full((w.shape[0], len(q)), np.nan)
  for e, row in enumerate(w):
    row = row[np.isfinite(row)]
    if row.size:
      out[e] = np.percentile(row, q)
  return out


def class_weight_maps(class_weights, noisy_labels, true_labels) -> Dict[str, np.ndarray]:
  """Mean class-level weight by (given label, class column), for clean and mislabelled samples.

  ``class_weights`` is GDW's ``W*`` ``[N, C]``; entry ``[y, c]`` of each map is the mean of
  ``W*[i, c]`` over the samples ``i`` whose given label is ``y`` (NaN if there is none). Row
  ``y``'s diagonal entry is the target column, fixed by the zero-mean constraint; the
  off-diagonal entries carry GDW's class-level step. Rows that are not finite (samples not seen
  in the last epoch) are left out. Also returns the sample counts per given label.
  """
  w = np.asarray(class_weights, np.float64)
  y, t = np.asarray(noisy_labels), np.asarray(true_labels)
  c = w.shape[1]
  seen = np.all(np.isfinite(w), axis=1)
  out = {}
  for name, mask in (("clean", (y == t) & seen), ("mislabelled", (y != t) & seen)):
    sums = np.zeros((c, c))
    np.add.at(sums, y[mask], w[mask])
    counts = np.bincount(y[mask], minlength=c).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
      out[name] = sums / counts[:, None]
    out[name + "_count"] = counts
  return out


def true_class_column(class_weights, noisy_labels, true_labels) -> Optional[Dict[str, float]]:
  """For mislabelled samples: mean ``W*`` on the true-class column vs the other non-target ones.

  With given label ``y`` and true class ``t != y``, the softmax-CE gradient pushes the logit of
  ``t`` down with weight ``W*[i, t]``; a class-level weighting that has spotted the error should
  make ``W*[i, t]`` smaller than the weights of the unrelated classes ``j not in {y, t}``.
  Returns ``{'true_column', 'other_columns', 'count'}`` or ``None`` without mislabelled samples
  (or with fewer than 3 classes, where no other column exists).
  """
  w = np.asarray(class_weights, np.float64)
  y, t = np.asarray(noisy_labels), np.asarray(true_labels)
  n, c = w.shape
  mask = (y != t) & np.all(np.isfinite(w), axis=1)
  if c < 3 or not mask.any():
    return None
  w, y, t = w[mask], y[mask], t[mask]
  rows = np.arange(len(y))
  true_col = w[rows, t]
  others = np.ones_like(w, bool)
  others[rows, y] = False
  others[rows, t] = False
  other_cols = np.sum(np.where(others, w, 0.0), axis=1) / (c - 2)
  return {"true_column": float(true_col.mean()), "other_columns": float(other_cols.mean()),
          "count": int(mask.sum())}


def per_class_accuracy(pred, labels, num_classes: int) -> np.ndarray:
  """``[C]`` accuracy in % of each true class (NaN for a class absent from ``labels``)."""
  pred, labels = np.asarray(pred), np.asarray(labels)
  hits = np.bincount(labels, weights=(pred == labels).astype(np.float64), minlength=num_classes)
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return 100.0 * hits / counts


def head_tail_split(train_counts):
  """``(head, tail)`` class indices: the ``C // 2`` classes with most training samples are the
  head (ties by class index), the rest the tail. For the 'step' profile this is exactly its two
  halves; for 'exp' it is the usual many/few split by halves."""
  counts = np.asarray(train_counts)
  order = np.lexsort((np.arange(len(counts)), -counts))  # by count desc, then index
  k = len(counts) // 2
  return np.sort(order[:k]), np.sort(order[k:])


def realised_corruption(noisy_labels, true_labels, num_classes: int) -> np.ndarray:
  """``[C, C]`` empirical transition matrix: row ``t`` = distribution of given labels among
  samples of true class ``t`` (NaN row for an absent class)."""
  m = np.zeros((num_classes, num_classes))
  np.add.at(m, (np.asarray(true_labels), np.asarray(noisy_labels)), 1.0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return m / m.sum(axis=1, keepdims=True)


def accuracy_summary(history, prefix: str = "test") -> Dict[str, Any]:
  """Last, best (and its epoch), mean of the last 5 top-1 accuracies and the last and best top-5
  of one test set over the metrics rows (``prefix_acc``, ``prefix_top5_acc``); None without it."""
  accs = [r.get(f"{prefix}_acc") for r in history]
  top5 = [r.get(f"{prefix}_top5_acc") for r in history]
  has = bool(accs) and accs[-1] is not None  # no test set: every accuracy is None
  has5 = has and all(t is not None for t in top5)  # rows from before top-5 was recorded: none
  return {"last_acc": accs[-1] if has else None, "best_acc": max(accs) if has else None,
          "best_epoch": int(np.argmax(accs)) if has else None,
          "last5_acc": float(np.mean(accs[-5:])) if has else None,
          "last_top5_acc": top5[-1] if has5 else None, "best_top5_acc": max(top5) if has5 else None}
