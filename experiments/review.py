"""Review a run's label issues in a browser: one HTML file, opened from disk.

    python -m experiments.review WORKDIR [--top N] [--thumb 64] [--out FILE.html]

Writes ``WORKDIR/review.html`` (or ``--out``): the training samples of ``label_issues.csv``, most
suspicious first (all of them unless ``--top``), each with its thumbnail, id, given and predicted
label, p(given), the method's score and weight, and GDW's class-level weights where the run has
them. In the page: filter, sort, decide per sample (``k`` keep, ``p`` accept the predicted label,
a digit for another class, ``x`` remove; kept in the browser across reloads) and export
``corrections.csv``; retrain with ``--config.label_corrections=corrections.csv``
(docs/own_data.md). The workdir is only read; nothing but the page is written.

Thumbnails come from the run's own data: image files read by id (``dataset=folder``); any other
dataset is rebuilt from ``config.json`` (:func:`experiments.label_issues.load_images`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def folder_thumbnails(root: str, ids, size: int):
  """Data URIs of the image files ``root/<id>``, at most ``size`` pixels a side."""
  from PIL import Image

  from gdw_jax.analysis import review
  out = []
  for rid in ids:
    with Image.open(os.path.join(root, rid)) as img:
      img.thumbnail((size, size))
      mode = "L" if img.mode in ("L", "1", "I", "I;16", "F") else "RGB"
      out.append(review.thumbnail(np.asarray(img.convert(mode)), size))
  return out


def thumbnails(run, ids, size: int):
  """One thumbnail per id, from the run's own data."""
  from experiments import label_issues as label_issues_cli
  from gdw_jax.analysis import review
  config = run.config
  if config is None:
    raise ValueError(f"{run.workdir} has no readable config.json: cannot find the images")
  if config.dataset == "folder":
    return folder_thumbnails(os.path.expanduser(config.data_root), ids, size)
  return [review.thumbnail(x, size) for x in label_issues_cli.load_images(run.workdir, ids)]


def write_review(workdir: str, out: str = "", top: int = 0, thumb: int = 64,
                 images: bool = True) -> str:
  """Build and write the page; returns its path. ``top`` 0: every sample."""
  from gdw_jax.analysis import review, workdir as workdir_lib
  run = workdir_lib.load_run(workdir)
  table = review.review_table(run, top or None)
  pics = thumbnails(run, table["id"], thumb) if images else None
  return review.write_page(out or os.path.join(workdir, review.FILE), table, pics)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("workdir")
  p.add_argument("--out", default="", help="page path (default WORKDIR/review.html)")
  p.add_argument("--top", type=int, default=0, help="only the N most suspicious (0: all)")
  p.add_argument("--thumb", type=int, default=64, help="largest thumbnail side, pixels")
  p.add_argument("--no-images", action="store_true", help="no thumbnails (ids only)")
  args = p.parse_args(argv)
  if args.top < 0 or args.thumb < 8:
    print("error: --top must be >= 0 and --thumb >= 8", file=sys.stderr)
    return 2
  start = time.time()
  try:
    path = write_review(args.workdir, args.out, args.top, args.thumb, not args.no_images)
  except (ValueError, OSError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(f"-> {path} ({os.path.getsize(path) / 1e6:.1f} MB, {time.time() - start:.1f} s); "
        f"open it in a browser, export corrections.csv, retrain with "
        f"--config.label_corrections=corrections.csv")
  return 0


if __name__ == "__main__":
  sys.exit(main())
