"""Read what a training run left in its workdir; every file is optional.

The trainer (:func:`gdw_jax.train.train_and_evaluate`) writes ``config.json``, ``data.json``,
``labels.npz``, ``metrics.jsonl``, ``final.json``, ``sample_weights.npz``, ``predictions.npz``,
``method_state.msgpack`` and ``label_issues.csv`` (and ``corrections_applied.json`` when it
trained on reviewed labels). A run killed early, an older run or another
trainer may lack some of them: :func:`load_run` keeps ``None`` for each missing piece and the
analysis skips what it cannot draw, so one missing file never hides the rest. A run on given
labels whose truth is unknown (``labels.npz`` ``truth_known=False``) has no true labels:
everything that needs them is skipped.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

import ml_collections
import numpy as np

from gdw_jax.analysis import label_issues


@dataclasses.dataclass
class Run:
  """The files of one workdir, parsed. Arrays are NumPy; absent files are ``None``."""
  workdir: str
  config: Optional[Any] = None             # ml_collections.ConfigDict
  data: Optional[Dict[str, Any]] = None    # data.json: sizes, class counts, corruption matrix
  labels: Optional[Dict[str, np.ndarray]] = None
  metrics: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  final: Optional[Dict[str, Any]] = None
  weights: Optional[Dict[str, np.ndarray]] = None      # sample_weights.npz
  predictions: Optional[Dict[str, np.ndarray]] = None
  method_state_bytes: Optional[bytes] = None
  label_issues: Optional[Dict[str, np.ndarray]] = None  # label_issues.csv, in rank order
  corrections: Optional[Dict[str, Any]] = None  # corrections_applied.json (label_corrections)
  problems: List[str] = dataclasses.field(default_factory=list)  # unreadable files

  def get(self, key: str, default=None):
    """A config value, falling back to final.json, then ``default``."""
    if self.config is not None and key in self.config:
      return self.config[key]
    if self.final is not None and key in self.final:
      return self.final[key]
    return default

  @property
  def method(self) -> str:
    return str(self.get("method", "unknown"))

  @property
  def dataset(self) -> str:
    return str(self.get("dataset", (self.data or {}).get("dataset", "unknown")))

  @property
  def num_classes(self) -> Optional[int]:
    if self.data and "num_classes" in self.data:
      return int(self.data["num_classes"])
    if self.labels is not None and "corruption_matrix" in self.labels:
      return int(self.labels["corruption_matrix"].shape[0])
    return None

  @property
  def noisy_labels(self) -> Optional[np.ndarray]:
    for src in (self.labels, self.weights):
      if src is not None and "noisy_labels" in src:
        return np.asarray(src["noisy_labels"])
    return None

  @property
  def truth_known(self) -> bool:
    """False when the run's labels were used as given and their truth is unknown."""
    if self.labels is not None and "truth_known" in self.labels:
      return bool(self.labels["truth_known"])
    return True

  @property
  def true_labels(self) -> Optional[np.ndarray]:
    if not self.truth_known:
      return None
    for src in (self.labels, self.weights):
      if src is not None and "true_labels" in src:
        return np.asarray(src["true_labels"])
    return None

  @property
  def noise_mask(self) -> Optional[np.ndarray]:
    """``True`` where the training label seen differs from the true label."""
    y, t = self.noisy_labels, self.true_labels
    return None if y is None or t is None else y != t

  @property
  def train_counts(self) -> Optional[np.ndarray]:
    """Per-class training counts by *true* label: the imbalance the data was given."""
    if self.data and "train_class_counts_true" in self.data:
      return np.asarray(self.data["train_class_counts_true"])
    t, k = self.true_labels, self.num_classes
    return None if t is None else np.bincount(t, minlength=k or 0)

  @property
  def noise_desc(self) -> str:
    kind, rate = self.get("noise_type", None), self.get("noise_rate", None)
    if not self.truth_known:
      return "given labels (truth unknown)"
    if kind is None:
      return "noise unknown"
    if kind == "none" or not rate:
      return "no label noise"
    return f"{kind} noise {100 * float(rate):g}%"

  @property
  def imbalance_desc(self) -> str:
    f = self.get("imbalance_factor", 1.0)
    if f is None or float(f) >= 1.0:
      return ""
    return f"long-tailed {float(f):g} ({self.get('imbalance_type', 'exp')})"

  @property
  def long_tailed(self) -> bool:
    return bool(self.imbalance_desc)

  @property
  def title(self) -> str:
    """``dataset · noise · imbalance · method``: what every figure says on top."""
    parts = [self.dataset, self.noise_desc, self.imbalance_desc, self.method]
    return " · ".join(p for p in parts if p)

  @property
  def name(self) -> str:
    return os.path.basename(os.path.normpath(self.workdir))


def config_from_json(obj: Dict[str, Any]):
  """``config.json`` back to a ConfigDict (JSON lists stay lists where tuples were)."""
  return ml_collections.ConfigDict(obj)


def _read(path: str, kind: str):
  if kind == "json":
    with open(path) as f:
      return json.load(f)
  if kind == "jsonl":
    with open(path) as f:
      # A run killed mid-write can leave a truncated last line: keep the complete ones.
      rows = []
      for line in f:
        line = line.strip()
        if line:
          try:
            rows.append(json.loads(line))
          except json.JSONDecodeError:
            break
      return rows
  if kind == "csv":
    return label_issues.read_csv(path)
  if kind == "npz":
    out = {}
    with np.load(path, allow_pickle=False) as z:
      for k in z.files:
        try:
          out[k] = z[k]
        except ValueError:  # a pickled object (e.g. None saved by np.savez): not data
          pass
    return out
  with open(path, "rb") as f:
    return f.read()


_FILES = (  # (attribute, file name, kind)
    ("config", "config.json", "json"),
    ("data", "data.json", "json"),
    ("labels", "labels.npz", "npz"),
    ("metrics", "metrics.jsonl", "jsonl"),
    ("final", "final.json", "json"),
    ("weights", "sample_weights.npz", "npz"),
    ("predictions", "predictions.npz", "npz"),
    ("method_state_bytes", "method_state.msgpack", "bytes"),
    ("label_issues", "label_issues.csv", "csv"),
    ("corrections", "corrections_applied.json", "json"),
)


def load_run(workdir: str) -> Run:
  """Parse every known file of ``workdir``; missing or unreadable ones stay ``None``."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"no such workdir: {workdir}")
  run = Run(workdir=workdir)
  for attr, fname, kind in _FILES:
    path = os.path.join(workdir, fname)
    if not os.path.exists(path):
      continue
    try:
      value = _read(path, kind)
      if attr == "config":
        value = config_from_json(value)
      setattr(run, attr, value)
    except Exception as e:  # noqa: BLE001 -- a corrupt file must not stop the others
      run.problems.append(f"{fname}: {type(e).__name__}: {e}")
  return run
