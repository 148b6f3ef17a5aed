"""Figures of one run or of several: each function returns a matplotlib ``Figure``.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), not pyplot: no
global state, nothing to close, no display needed (works headless inside the trainer), and a
notebook still shows a returned figure inline. Every figure's title says dataset / noise /
method; every axis says what it measures and in which unit.

matplotlib is imported by the first figure drawn (:func:`_new_figure`), not with this module:
the trainer imports the analysis to write its end-of-run files, and a run with ``report=false``
never draws.
"""
from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np

from gdw_jax import fileio
from gdw_jax.analysis import stats
from gdw_jax.analysis.weight_fn import WeightFunction, describe_classes
from gdw_jax.analysis.workdir import Run

if TYPE_CHECKING:
  from matplotlib.figure import Figure

CLEAN, NOISY = "tab:blue", "tab:red"
HEAD, TAIL = "tab:blue", "tab:orange"


def _figure(ncols: int, title: str, width: float = 5.0, height: float = 4.0,
            layout: str = "tight") -> Figure:
  # "tight" is about twice as fast as "constrained" to save; colorbars need "constrained".
  fig = _new_figure(figsize=(width * ncols, height), layout=layout)
  # Wrap long titles (dataset · noise · imbalance · method) to the figure width (12 pt: ~10
  # characters per inch).
  fig.suptitle(textwrap.fill(title, int(10 * width * ncols)), fontsize=12)
  return fig


def _new_figure(**kwargs) -> Figure:
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel (see above)
  return Figure(**kwargs)


def _epoch_axis(*axes):
  from matplotlib.ticker import MaxNLocator  # pylint: disable=import-outside-toplevel
  for ax in axes:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _series(metrics: List[dict], key: str) -> np.ndarray:
  return np.array([np.nan if r.get(key) is None else float(r[key]) for r in metrics])


def _marker(ep):
  """Dots on each epoch while they can be told apart."""
  return "." if len(ep) <= 30 else None


def _epochs(metrics: List[dict]) -> np.ndarray:
  """1-based epoch numbers (the trainer logs 0-based ``epoch`` after each epoch ends)."""
  return np.array([int(r.get("epoch", i)) + 1 for i, r in enumerate(metrics)])


def save(fig: Figure, path: str) -> str:
  fileio.atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
  return path


def learning_curves(run: Run) -> Figure:
  """Losses (train CE on the given labels, meta CE, test CE) and accuracies per epoch.

  Train accuracy is shown against both the given (noisy) and the true labels: their gap shows
  how much of the noise the network has memorised.
  """
  m, ep = run.metrics, _epochs(run.metrics)
  mk = _marker(ep)
  fig = _figure(2, f"Learning curves: {run.title}")
  ax_loss, ax_acc = fig.subplots(1, 2)
  # Fixed colours per series, so the same quantity looks the same in every run's report.
  for key, label, style, color in (("train_loss", "train CE (given labels)", "-", "C0"),
                                   ("meta_loss", "meta CE (clean meta batch)", "--", "C1"),
                                   ("test_loss", "test CE (clean)", "-.", "C2")):
    y = _series(m, key)
    if np.isfinite(y).any():
      ax_loss.plot(ep, y, style, marker=mk, color=color, label=label)
  ax_loss.set(xlabel="epoch", ylabel="cross-entropy (nats)", title="losses")
  for key, label, scale, color in (("test_acc", "test (clean labels)", 1.0, "C0"),
                                   ("train_acc_true", "train vs true labels", 100.0, "C1"),
                                   ("train_acc_noisy", "train vs given labels", 100.0, "C2")):
    if key == "train_acc_true" and not run.truth_known:
      continue  # the given labels stood in for the unknown truth
    y = _series(m, key) * scale  # the trainer logs train accuracy as a fraction, test in %
    if np.isfinite(y).any():
      ax_acc.plot(ep, y, marker=mk, color=color, label=label)
  acc = _series(m, "test_acc")
  if np.isfinite(acc).any():
    best = int(np.nanargmax(acc))
    ax_acc.plot(ep[best], acc[best], "k*", ms=10, ls="none",
                label=f"best test {acc[best]:.1f}% (epoch {ep[best]})")
  ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  _epoch_axis(ax_loss, ax_acc)
  return fig


def weight_function(run: Run, wf: WeightFunction) -> Figure:
  """The learned weight as a function of the per-sample loss; one curve per head / family."""
  fig = _figure(1, f"Learned weighting function: {run.title}", width=6.5)
  ax = fig.subplots()
  counts = run.train_counts
  single = len(wf.curves) == 1
  for curve in wf.curves:
    label = "all classes" if single else describe_classes(curve.classes, counts)
    ax.plot(wf.losses, curve.weights, lw=2, label=label)
  what = "first-stage weight v = V(loss)" if run.method == "gdw" else "weight w = V(loss)"
  ax.set(xlabel="per-sample training loss (CE, nats)", ylabel=what,
         title="final weight net" + ("" if single else f": {len(wf.curves)} heads"))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, title=None if single else "head (train samples per class)",
            title_fontsize=8)
  return fig


def weights_over_training(run: Run) -> Figure:
  """Clean vs noisy weights: per-epoch median and IQR, detection AUC per epoch, final histogram.

  Weights are each sample's instance weight (GDW: its target-column ``W*[i, y]``).
  """
  iw = np.asarray(run.weights["instance_weight"], np.float64)
  noisy = run.noise_mask
  ep = np.arange(1, iw.shape[0] + 1)
  fig = _figure(3, f"Clean vs mislabelled sample weights: {run.title}", width=4.6)
  ax_w, ax_auc, ax_h = fig.subplots(1, 3)
  for mask, color, label in ((~noisy, CLEAN, "clean"), (noisy, NOISY, "mislabelled")):
    if not mask.any():
      continue
    q = stats.weight_quantiles(iw, mask)
    ax_w.plot(ep, q[:, 1], color=color, marker=_marker(ep), label=f"{label} (median)")
    ax_w.fill_between(ep, q[:, 0], q[:, 2], color=color, alpha=0.2, label=f"{label} (25-75%)")
  ax_w.set(xlabel="epoch", ylabel="instance weight", title="weight per epoch")
  auc = stats.auc_per_epoch(iw, noisy) if noisy.any() and (~noisy).any() else None
  if auc is not None:
    ax_auc.plot(ep, auc, color="k", marker=_marker(ep), label="ROC AUC")
    ax_auc.axhline(0.5, color="grey", ls="--", lw=0.8, label="chance")
    ax_auc.set_ylim(min(0.4, np.nanmin(auc) - 0.05), 1.0)
  ax_auc.set(xlabel="epoch", ylabel="ROC AUC (weight as cleanliness score)",
             title="noisy-sample detection")
  last = iw[-1]
  seen = np.isfinite(last)
  bins = np.linspace(np.nanmin(last), np.nanmax(last) + 1e-12, 31)
  for mask, color, label in ((~noisy, CLEAN, "clean"), (noisy, NOISY, "mislabelled")):
    if (mask & seen).any():
      ax_h.hist(last[mask & seen], bins=bins, color=color, alpha=0.55, label=label)
  ax_h.set(xlabel="instance weight (last epoch)", ylabel="samples", title="final weights")
  for ax in (ax_w, ax_auc, ax_h):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  _epoch_axis(ax_w, ax_auc)
  return fig


def _heatmap(ax, mat, vmin, vmax, annotate: bool, cmap="viridis"):
  im = ax.imshow(mat, vmin=vmin, vmax=vmax, cmap=cmap, aspect="equal")
  c = mat.shape[0]
  if c <= 20:
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
  if annotate:
    for i in range(c):
      for j in range(mat.shape[1]):
        if np.isfinite(mat[i, j]):
          r, g, b, _ = im.cmap(im.norm(mat[i, j]))
          dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # text readable on the cell colour
          ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                  color="white" if dark else "black")
  return im


def class_weight_maps(run: Run, maps: Dict[str, np.ndarray]) -> Figure:
  """GDW's mean ``W*`` by (given label, class column), clean vs mislabelled, one colour scale."""
  c = maps["clean"].shape[0]
  both = np.concatenate([maps["clean"].ravel(), maps["mislabelled"].ravel()])
  both = both[np.isfinite(both)]
  vmin, vmax = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
  fig = _figure(2, f"GDW class-level weights W* (last epoch): {run.title}", width=5.2,
                height=4.6, layout="constrained")
  axes = fig.subplots(1, 2)
  for ax, name in zip(axes, ("clean", "mislabelled")):
    im = _heatmap(ax, maps[name], vmin, vmax, annotate=c <= 10)
    n = int(maps[name + "_count"].sum())
    ax.set(xlabel="class column j of W*", ylabel="given (possibly noisy) label y",
           title=f"{name} samples (n={n}); diagonal = target column")
  fig.colorbar(im, ax=axes, shrink=0.8, label="mean W*[i, j]")
  return fig


def per_class_accuracy(run: Run) -> Figure:
  """Test accuracy per class, with each class's training count; head vs tail if long-tailed."""
  k = run.num_classes or int(run.predictions["test_labels"].max()) + 1
  acc = stats.per_class_accuracy(run.predictions["test_pred"], run.predictions["test_labels"], k)
  counts = run.train_counts
  lt = run.long_tailed and counts is not None
  order = np.lexsort((np.arange(k), -counts)) if lt else np.arange(k)
  colors = [HEAD] * k
  title = "test accuracy per class"
  if lt:
    head, tail = stats.head_tail_split(counts)
    colors = [HEAD if c in set(head.tolist()) else TAIL for c in order]
    title += (f": head {np.nanmean(acc[head]):.1f}%, tail {np.nanmean(acc[tail]):.1f}%")
  fig = _figure(1, f"Per-class accuracy: {run.title}", width=min(max(6.5, 0.35 * k + 2), 14))
  ax = fig.subplots()
  x = np.arange(k)
  ax.bar(x, acc[order], color=colors)
  handles = []
  if lt:
    from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel
    handles += [Patch(color=HEAD, label=f"head ({len(head)} largest classes)"),
                Patch(color=TAIL, label=f"tail ({len(tail)})")]
  # Room above 100% for the legend, so it never hides a bar or the count line.
  ax.set(xlabel="class" + (" (sorted by training count)" if lt else ""),
         ylabel="test accuracy (%)", title=title, ylim=(0, 125), yticks=range(0, 101, 20))
  if k <= 30:
    ax.set_xticks(x, [str(c) for c in order])
  if counts is not None:
    ax2 = ax.twinx()
    handles += ax2.plot(x, counts[order], "k.--", lw=0.8, label="train samples (true label)")
    ax2.set_ylabel("training samples per class")
    ax2.set_ylim(0, counts.max() * 1.25)
  if handles:
    ax.legend(handles=handles, fontsize=8, loc="upper center", ncol=len(handles))
  ax.grid(alpha=0.3, axis="y")
  return fig


def corruption(run: Run, nominal: Optional[np.ndarray], realised: np.ndarray) -> Figure:
  """The corruption matrix asked for vs the one realised on this training set."""
  mats = [("nominal", nominal), ("realised", realised)] if nominal is not None else \
      [("realised", realised)]
  fig = _figure(len(mats), f"Label corruption P(given | true): {run.title}", width=4.8,
                height=4.4, layout="constrained")
  axes = np.atleast_1d(fig.subplots(1, len(mats)))
  c = realised.shape[0]
  for ax, (name, mat) in zip(axes, mats):
    im = _heatmap(ax, np.asarray(mat, np.float64), 0.0, 1.0, annotate=c <= 10, cmap="Blues")
    ax.set(xlabel="given label", ylabel="true label", title=name)
  fig.colorbar(im, ax=list(axes), shrink=0.8, label="probability")
  return fig


def lowest_weighted_samples(run: Run, images: np.ndarray, k: int = 16, ncols: int = 8,
                            epoch: int = -1) -> Figure:
  """The ``k`` training images with the lowest instance weight in ``epoch``.

  ``images`` are the training images in the run's training order (``x_pool[train_indices]``),
  NHWC. Titles give the weight and the given / true label; mislabelled samples in red.
  """
  w = np.asarray(run.weights["instance_weight"], np.float64)[epoch]
  w = np.where(np.isfinite(w), w, np.inf)  # never-seen samples last
  idx = np.argsort(w, kind="stable")[:k]
  y, t = run.noisy_labels, run.true_labels
  nrows = int(np.ceil(len(idx) / ncols))
  fig = _new_figure(figsize=(1.5 * ncols, 1.75 * nrows + 0.6), layout="constrained")
  caught = int(np.sum(y[idx] != t[idx]))
  fig.suptitle(textwrap.fill(f"{len(idx)} lowest-weighted training samples ({caught} "
                             f"mislabelled, in red): {run.title}", int(10 * 1.5 * ncols)),
               fontsize=10)
  axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
  for ax in axes:
    ax.axis("off")
  for ax, i in zip(axes, idx):
    img = np.asarray(images[i], np.float64)
    img = (img - img.min()) / max(img.max() - img.min(), 1e-12)  # any normalisation -> [0, 1]
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray_r", interpolation="nearest")
    wrong = y[i] != t[i]
    ax.set_title(f"w={w[i]:.3f}\ngiven {y[i]} / true {t[i]}", fontsize=7,
                 color=NOISY if wrong else "black")
  return fig


# ---------------------------------------------------------------- comparisons of several runs


def compare_curves(runs: Sequence[Run], labels: Sequence[str]) -> Figure:
  """Test accuracy, train loss and detection AUC per epoch, one line per run."""
  fig = _figure(3, "Comparison: " + _common_title(runs), width=4.6)
  ax_acc, ax_loss, ax_auc = fig.subplots(1, 3)
  for i, (run, label) in enumerate(zip(runs, labels)):
    color = f"C{i % 10}"  # one colour per run across the panels
    ep = _epochs(run.metrics)
    if run.metrics:
      ax_acc.plot(ep, _series(run.metrics, "test_acc"), marker=_marker(ep), color=color,
                  label=label)
      ax_loss.plot(ep, _series(run.metrics, "train_loss"), marker=_marker(ep), color=color,
                   label=label)
    noisy = run.noise_mask
    if run.weights is not None and noisy is not None and noisy.any() and (~noisy).any() \
        and not stats.is_constant(run.weights["instance_weight"]):
      auc = stats.auc_per_epoch(run.weights["instance_weight"], noisy)
      ax_auc.plot(np.arange(1, len(auc) + 1), auc, marker=_marker(auc), color=color,
                  label=label)
  ax_auc.axhline(0.5, color="grey", ls="--", lw=0.8)
  ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="clean test accuracy")
  ax_loss.set(xlabel="epoch", ylabel="train CE on given labels (nats)", title="training loss")
  ax_auc.set(xlabel="epoch", ylabel="ROC AUC (weight as cleanliness score)",
             title="noisy-sample detection")
  for ax in (ax_acc, ax_loss, ax_auc):
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  _epoch_axis(ax_acc, ax_loss, ax_auc)
  return fig


def compare_weight_functions(runs: Sequence[Run], labels: Sequence[str],
                             wfs: Sequence[Optional[WeightFunction]]) -> Figure:
  """Every run's learned weight-vs-loss curve(s) on one axis."""
  fig = _figure(1, "Learned weighting functions: " + _common_title(runs), width=6.5)
  ax = fig.subplots()
  for i, (run, label, wf) in enumerate(zip(runs, labels, wfs)):
    if wf is None:
      continue
    for j, curve in enumerate(wf.curves):  # a run's heads: same colour, different dashes
      suffix = "" if len(wf.curves) == 1 else ": " + describe_classes(curve.classes)
      ax.plot(wf.losses, curve.weights, lw=2, color=f"C{i % 10}",
              ls=("-", "--", "-.", ":")[j % 4], label=label + suffix)
  ax.set(xlabel="per-sample training loss (CE, nats)", ylabel="weight V(loss)",
         title="final weight nets (GDW: first-stage weight)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig


def _common_title(runs: Sequence[Run]) -> str:
  """What the runs share (dataset, noise, imbalance); methods differ so are left out."""
  parts = []
  for attr in ("dataset", "noise_desc", "imbalance_desc"):
    values = sorted({getattr(r, attr) for r in runs})
    parts.append(values[0] if len(values) == 1 else " / ".join(v or "balanced" for v in values))
  return " · ".join(p for p in parts if p)
