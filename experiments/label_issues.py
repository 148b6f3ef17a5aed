"""The most suspicious labels of a finished run, printed and drawn.

    python -m experiments.label_issues WORKDIR [--top K] [--out FILE.png]

Reads ``WORKDIR/label_issues.csv`` (written by every run; most suspicious first), prints its
first ``K`` rows (default 25) and writes a PNG grid of those images, each titled with its rank,
given and predicted label (class names where known) and ``p(given)``: by default
``WORKDIR/label_issues_top<K>.png``. The images come from the run's own data: image files are
read directly by id (``dataset=folder``); any other dataset is rebuilt from ``config.json``
(deterministic: the same training set and ids).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np


def load_images(workdir: str, ids) -> np.ndarray:
  """The training images with these ids, ``[k, H, W, C]``, from the run's own data."""
  from gdw_jax import data
  from gdw_jax.analysis import workdir as workdir_lib
  from gdw_jax.data import images

  run = workdir_lib.load_run(workdir)
  if run.config is None:
    raise ValueError(f"{workdir} has no readable config.json: cannot find the images")
  config = run.config
  if config.dataset == "folder":
    size = int(config.image_size) or None
    return np.stack([images.decode(os.path.join(os.path.expanduser(config.data_root), i),
                                   size and (size, size), int(config.image_channels))[0]
                     for i in ids])
  config.progress = False
  ds = data.build(config)
  row = {rid: i for i, rid in enumerate(ds.train_ids)}
  missing = [i for i in ids if i not in row]
  if missing:
    raise ValueError(f"id {missing[0]!r} of label_issues.csv is not in the rebuilt training set "
                     f"(did the data change since the run?)")
  return ds.x_train[[row[i] for i in ids]]


def _display(x: np.ndarray) -> np.ndarray:
  """An image for imshow: uint8 as is; float scaled to [0, 1] per image; 1 channel squeezed."""
  x = np.asarray(x)
  if x.dtype != np.uint8:
    lo, hi = float(x.min()), float(x.max())
    x = (x - lo) / (hi - lo if hi > lo else 1.0)
  return x[..., 0] if x.shape[-1] == 1 else x


def draw_grid(cols, x: np.ndarray, path: str) -> str:
  """A grid of the images in ``x`` with the CSV rows ``cols`` as titles; saved to ``path``."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  k = x.shape[0]
  ncols = min(5, k)
  nrows = math.ceil(k / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(2.3 * ncols, 2.9 * nrows), squeeze=False)
  named = "given_class" in cols
  for i, ax in enumerate(axes.flat):
    ax.axis("off")
    if i >= k:
      continue
    ax.imshow(_display(x[i]), cmap="gray" if x.shape[-1] == 1 else None)
    given = cols["given_class"][i] if named else cols["given_label"][i]
    pred = cols["predicted_class"][i] if named else cols["predicted_label"][i]
    ax.set_title(f"#{cols['rank'][i]} given {given}\npred {pred}  p={cols['p_given'][i]:.2g}",
                 fontsize=8, color="C3" if cols.get("mislabelled", [0] * k)[i] else "black")
  fig.suptitle("Most suspicious labels (red: known to be wrong)" if "mislabelled" in cols
               else "Most suspicious labels", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def print_top(cols, k: int) -> None:
  names = [c for c in ("rank", "id", "given_label", "predicted_label", "given_class",
                       "predicted_class", "p_given", "score", "true_label") if c in cols]
  print(" | ".join(names))
  for i in range(k):
    cells = [f"{cols[c][i]:.4g}" if c in ("p_given", "score") else str(cols[c][i])
             for c in names]
    print(" | ".join(cells))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("workdir")
  p.add_argument("--top", type=int, default=25, help="how many of the most suspicious labels")
  p.add_argument("--out", default=None, help="PNG path (default WORKDIR/label_issues_top<K>.png)")
  args = p.parse_args(argv)

  from gdw_jax.analysis import label_issues
  path = label_issues.path_in(args.workdir)
  if not os.path.isfile(path):
    print(f"error: {path} does not exist (runs write it when they finish)", file=sys.stderr)
    return 2
  if args.top < 1:
    print("error: --top must be >= 1", file=sys.stderr)
    return 2
  cols = label_issues.top(label_issues.read_csv(path), args.top)
  k = len(cols["rank"])
  print_top(cols, k)
  try:
    x = load_images(args.workdir, list(cols["id"]))
  except ValueError as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  out = args.out or os.path.join(args.workdir, f"label_issues_top{k}.png")
  print(f"-> {draw_grid(cols, x, out)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
