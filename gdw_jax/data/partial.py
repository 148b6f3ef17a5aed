"""Candidate sets (partial labels): a boolean ``[n, C]`` mask per training set.

Each training sample comes with a set ``S_i`` of candidate classes that contains its true label
(ambiguous annotation, annotators who disagree, a coarse tag). Sources of the sets:

* **generated** from clean labels (``partial_rate`` q, ``partial_type``): the official PRODEN /
  CMW-Net ``partialize`` (``../shared/specs/partial_label.md`` §1), vectorised and *seeded*
  (the official numpy RNG is never seeded, so its sets differ from run to run; ours are a pure
  function of ``config.seed``):

  - ``binomial``: every non-true class enters ``S_i`` independently with probability q; a row
    where none entered gets one non-true class, uniform (the official ``while |S| == 1`` loop
    draws uniformly over all C classes and retries on the true one: the same distribution). So
    ``|S_i| >= 2`` and ``E|S| = 1 + (C-1) q + (1-q)^(C-1)`` (:func:`expected_size`).
  - ``pair``: class ``(y+1) mod C`` enters with probability q (no ``|S| >= 2`` guarantee).

* **given**: an npz ``candidates`` array (``[n, C]`` bool / 0-1), or a ``candidates`` column of
  the folder source's ``label_csv`` (class names or indices separated by ``|``).

The single label a partial-label learner "sees" (``BiasedDataset.y_train``: bookkeeping, and GDW's
``given`` target) is the given label where there is one, else a seeded uniform draw from the set.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

PARTIAL_TYPES = ("binomial", "pair")


def expected_size(num_classes: int, q: float, kind: str = "binomial") -> float:
  """``E|S|`` of the generator: ``1 + (C-1) q + (1-q)^(C-1)`` (binomial), ``1 + q`` (pair)."""
  if kind == "pair":
    return 1.0 + q
  return 1.0 + (num_classes - 1) * q + (1.0 - q) ** (num_classes - 1)


def partialize(y: np.ndarray, num_classes: int, q: float, kind: str = "binomial",
               rng: Optional[np.random.Generator] = None) -> np.ndarray:
  """Candidate sets ``[n, C]`` (bool) around the clean labels ``y`` (see the module docstring)."""
  if kind not in PARTIAL_TYPES:
    raise ValueError(f"unknown partial_type {kind!r}; valid: {', '.join(PARTIAL_TYPES)}")
  rng = np.random.default_rng(0) if rng is None else rng
  y = np.asarray(y, np.int64)
  n, c = y.shape[0], num_classes
  mask = np.zeros((n, c), bool)
  rows = np.arange(n)
  if kind == "pair":
    mask[rows, (y + 1) % c] = rng.random(n) < q
  else:
    mask = rng.random((n, c)) < q
    mask[rows, y] = False
    alone = ~mask.any(axis=1)
    # one non-true class, uniform: draw among the C-1 others, skip over the true one
    extra = rng.integers(0, c - 1, size=int(alone.sum()))
    extra = extra + (extra >= y[alone])
    mask[rows[alone], extra] = True
  mask[rows, y] = True
  return mask


def draw_member(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One uniform member of each row's set ``[n]`` (the single label a partial learner sees)."""
  u = rng.random(mask.shape[0])
  k = np.floor(u * mask.sum(axis=1)).astype(np.int64)
  return np.argmax(np.cumsum(mask, axis=1) > k[:, None], axis=1).astype(np.int64)


def check_candidates(mask, n: int, num_classes: int, where: str,
                     labels: Optional[np.ndarray] = None) -> np.ndarray:
  """``mask`` as a bool ``[n, C]`` array; one-line ValueError naming ``where`` and the row for a
  wrong shape or dtype, a row with no candidate, or a given ``labels[i]`` outside row ``i``."""
  mask = np.asarray(mask)
  if mask.shape != (n, num_classes):
    raise ValueError(f"{where} must be [n, C] = [{n}, {num_classes}] (one row of candidate "
                     f"classes per training image), got shape {mask.shape}")
  if mask.dtype != bool:
    if not (np.issubdtype(mask.dtype, np.number) and np.isin(mask, (0, 1)).all()):
      raise ValueError(f"{where} must be bool or 0/1, got dtype {mask.dtype}")
    mask = mask.astype(bool)
  empty = np.flatnonzero(~mask.any(axis=1))
  if empty.size:
    raise ValueError(f"{where}: row {int(empty[0])} has no candidate class "
                     f"({empty.size} such rows)")
  if labels is not None:
    outside = np.flatnonzero(~mask[np.arange(n), np.asarray(labels, np.int64)])
    if outside.size:
      i = int(outside[0])
      raise ValueError(f"{where}: row {i}: its given label {int(labels[i])} is not among its "
                       f"candidates {np.flatnonzero(mask[i]).tolist()} ({outside.size} such rows)")
  return mask


def parse_candidate_list(text: str, index: Dict[str, int], num_classes: int,
                         where: str) -> np.ndarray:
  """``"cat|dog|3"`` -> bool ``[C]`` row; an unknown class is a ValueError naming ``where``."""
  row = np.zeros(num_classes, bool)
  for part in text.split("|"):
    name = part.strip()
    if not name:
      continue
    if name in index:
      row[index[name]] = True
      continue
    try:
      value = int(name)
    except ValueError:
      value = -1
    if not 0 <= value < num_classes:
      raise ValueError(f"{where}: candidate {name!r} is neither a class name nor an integer in "
                       f"[0, {num_classes})")
    row[value] = True
  if not row.any():
    raise ValueError(f"{where}: the candidates column lists no class")
  return row


def summary(mask: np.ndarray, true_labels: Optional[np.ndarray], q: Optional[float],
            kind: str) -> Dict[str, object]:
  """What ``data.json`` and the report say about a run's candidate sets."""
  sizes = mask.sum(axis=1)
  out: Dict[str, object] = {
      "source": "generated" if q else "given", "mean_size": float(sizes.mean()),
      "min_size": int(sizes.min()), "max_size": int(sizes.max()),
      "num_classes": int(mask.shape[1])}
  if q:
    out.update(partial_rate=float(q), partial_type=kind,
               expected_mean_size=expected_size(mask.shape[1], q, kind))
  if true_labels is not None:
    out["contains_true_label"] = float(mask[np.arange(len(mask)), true_labels].mean())
  return out


def names_index(class_names: Optional[Sequence[str]]) -> Dict[str, int]:
  return {str(n): i for i, n in enumerate(class_names or ())}
