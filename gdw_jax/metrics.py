"""What a run records: per-epoch metric rows, the per-sample weight history, and their writers.

:class:`Recorder` accumulates the loop's per-step outputs on the host. Everything it holds is in
:meth:`Recorder.state_dict`, which goes into every checkpoint, so a resumed run ends with the
same ``metrics.jsonl`` rows (up to wall times) and the same ``sample_weights.npz`` bytes as an
uninterrupted one. Per-step values are summed in float64, in step order, whatever the flush
points (epoch ends, checkpoints), so the sums do not depend on where a run was interrupted.

One ``metrics.jsonl`` row per epoch:

* ``epoch`` (0-based), ``step`` (updates done), ``lr``;
* ``train_loss`` (mean CE on the seen labels), ``train_acc_noisy`` / ``train_acc_true`` (train
  accuracy on the seen / clean labels), and every scalar a method reports, e.g. ``meta_loss``
  (sample-weighted means over the epoch's batches);
* ``test_acc`` (%), ``test_loss``;
* realised per-sample weights over the epoch (the instance weight, or for class-level weights
  the entry of the seen label): ``weight_mean``, ``weight_std``, ``weight_min``,
  ``weight_max``, ``weight_clean_mean`` / ``weight_noisy_mean`` (samples whose seen label is
  right / wrong; None when there are none);
* ``wall_time_s`` (since the run started, summed over resumed sessions), ``epoch_time_s``,
  ``steps_per_s``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from gdw_jax import fileio


def instance_weight(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """One number per sample: the weight itself, or for class-level weights the label column."""
  if weights.shape[1] == 1:
    return weights[:, 0]
  return np.take_along_axis(weights, labels[:, None], axis=1)[:, 0]


class Recorder:
  """Host-side accumulators of one run's training loop (all of them checkpointed)."""

  def __init__(self, metric_names, num_epochs: int, labels: np.ndarray, noise_mask: np.ndarray,
               weight_dim: int):
    self.names = list(metric_names)
    self.labels, self.noise_mask = labels, noise_mask
    n = labels.shape[0]
    self.instance_w = np.full((num_epochs, n), np.nan, np.float32)  # weight history
    self.epoch_w = np.full((n, weight_dim), np.nan, np.float32)     # full weights, this epoch
    self.sums = np.zeros(len(self.names), np.float64)               # sum_s metric_s * n_s
    self.count = np.zeros((), np.float64)                           # sum_s n_s
    self.history: List[Dict[str, Any]] = []
    self.elapsed_before = 0.0        # wall seconds of earlier sessions (resume)
    self.epoch_elapsed_before = 0.0  # seconds earlier sessions spent in the current epoch
    self.meta_picked = None          # training positions of a method-picked meta set, this epoch

  def add(self, epoch: int, idx: np.ndarray, metrics, weights) -> None:
    """Record one step (host values: ``metrics`` name -> scalar, ``weights`` ``[B, k]``)."""
    w = np.asarray(weights, np.float32)
    self.epoch_w[idx] = w
    self.instance_w[epoch, idx] = instance_weight(w, self.labels[idx])
    self.sums += np.array([float(metrics[k]) for k in self.names], np.float64) * len(idx)
    self.count += len(idx)

  def end_epoch(self, epoch: int, step: int, test: Dict[str, Any], wall_time: float,
                epoch_time: float, epoch_steps: int) -> Dict[str, Any]:
    """Close the epoch: its metrics row (appended to :attr:`history`); resets the step sums.
    ``epoch_time``: this session's seconds in the epoch (earlier sessions' part is added)."""
    epoch_time += self.epoch_elapsed_before
    row: Dict[str, Any] = {"epoch": epoch, "step": step}
    row.update({k: float(v) for k, v in zip(self.names, self.sums / self.count)})
    iw = self.instance_w[epoch]
    seen = ~np.isnan(iw)
    clean, noisy = seen & ~self.noise_mask, seen & self.noise_mask
    row.update({
        "test_acc": test["acc"], "test_top5_acc": test.get("top5"), "test_loss": test["loss"],
        "weight_mean": float(iw[seen].mean()), "weight_std": float(iw[seen].std()),
        "weight_min": float(iw[seen].min()), "weight_max": float(iw[seen].max()),
        "weight_clean_mean": float(iw[clean].mean()) if clean.any() else None,
        "weight_noisy_mean": float(iw[noisy].mean()) if noisy.any() else None,
        "wall_time_s": wall_time, "epoch_time_s": epoch_time,
        "steps_per_s": epoch_steps / epoch_time if epoch_time > 0 else None,
    })
    for name, extra in test.get("extra", {}).items():  # further test sets, by name
      row.update({f"{name}_acc": extra["acc"], f"{name}_top5_acc": extra["top5"],
                  f"{name}_loss": extra["loss"]})
    self.history.append(row)
    self.sums[:] = 0.0
    self.count[...] = 0.0
    return row

  def start_epoch(self) -> None:
    self.epoch_w[:] = np.nan
    self.epoch_elapsed_before = 0.0

  def state_dict(self, elapsed: float, epoch_elapsed: float):
    """``(arrays, json)``: what a checkpoint must hold to resume this recorder exactly (copies:
    the checkpoint is written in the background while training goes on); ``elapsed``: the
    run's wall time so far, ``epoch_elapsed``: this session's seconds in the current epoch."""
    arrays = {"instance_weight": self.instance_w.copy(), "epoch_weights": self.epoch_w.copy(),
              "metric_sums": self.sums.copy(), "metric_count": self.count.copy()}
    picked = None if self.meta_picked is None else np.asarray(self.meta_picked).tolist()
    return arrays, {"history": list(self.history), "elapsed": elapsed,
                    "epoch_elapsed": self.epoch_elapsed_before + epoch_elapsed,
                    "metric_names": self.names, "meta_picked": picked}

  def load_state_dict(self, arrays, meta) -> None:
    if list(meta["metric_names"]) != self.names:
      raise ValueError(f"checkpoint records metrics {meta['metric_names']}, this run {self.names}")
    self.instance_w = np.array(arrays["instance_weight"], np.float32)
    self.epoch_w = np.array(arrays["epoch_weights"], np.float32)
    self.sums = np.array(arrays["metric_sums"], np.float64)
    self.count = np.array(arrays["metric_count"], np.float64)
    self.history = list(meta["history"])
    self.elapsed_before = float(meta["elapsed"])
    self.epoch_elapsed_before = float(meta.get("epoch_elapsed", 0.0))  # older checkpoints: 0
    picked = meta.get("meta_picked")
    self.meta_picked = None if picked is None else np.asarray(picked, np.int64)


class Writer:
  """``metrics.jsonl`` (one row per epoch) and, optionally, TensorBoard scalars.

  The file is written atomically (:mod:`gdw_jax.fileio`) after every row. On resume it is
  rewritten from the checkpointed rows, dropping any row a killed
  session wrote after its last checkpoint. TensorBoard uses ``tensorboardX`` (no TensorFlow);
  a resumed run appends a new event file, so epochs past the checkpoint appear twice there.
  """

  def __init__(self, workdir: str, rows: List[Dict[str, Any]], tensorboard: bool = False,
               enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb = None
    if not enabled:
      return
    self.text = "".join(json.dumps(r) + "\n" for r in rows)
    fileio.write_text(self.path, self.text)
    self.tb_dir = os.path.join(workdir, "tensorboard")
    if tensorboard:
      import tensorboardX  # optional extra: pip install gdw_jax[tensorboard]
      with fileio.writing(self.tb_dir):  # a failure is a WriteError naming the folder
        self.tb = tensorboardX.SummaryWriter(self.tb_dir)

  def write(self, row: Dict[str, Any]) -> None:
    if not self.enabled:
      return
    # Rewritten whole (atomic) rather than appended: a failing write (disk full) cannot leave
    # half a row; a few hundred rows cost nothing to rewrite once per epoch.
    self.text += json.dumps(row) + "\n"
    fileio.write_text(self.path, self.text)
    if self.tb is not None:
      with fileio.writing(self.tb_dir):
        for k, v in row.items():
          if k not in ("epoch", "step") and isinstance(v, (int, float)):
            self.tb.add_scalar(k, v, row["step"])
        self.tb.flush()

  def close(self) -> None:
    if self.tb is not None:
      tb, self.tb = self.tb, None
      with fileio.writing(self.tb_dir):
        tb.close()


def tensorboard_available() -> Optional[str]:
  """None if TensorBoard logging can run, else why not."""
  try:
    import tensorboardX  # noqa: F401
  except ImportError:
    return "tensorboard=True needs tensorboardX: pip install 'gdw_jax[tensorboard]'"
  return None
