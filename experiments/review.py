"""Review a run's label issues in a browser: one HTML file, opened from disk.

    python -m experiments.review WORKDIR [--top N] [--thumb 64] [--out FILE.html]
    python -m experiments.review WORKDIR --label-studio tasks.json [--top 500] [--image-url PREFIX]
    python -m experiments.review WORKDIR --from-label-studio export.json [--out corrections.csv]

Writes ``WORKDIR/review.html`` (or ``--out``): the training samples of ``label_issues.csv``, most
suspicious first (all of them unless ``--top``), each with its thumbnail, id, given and predicted
label, p(given), the method's score and weight, and GDW's class-level weights where the run has
them. In the page: filter, sort, decide per sample (``k`` keep, ``p`` accept the predicted label,
a digit for another class, ``x`` remove; kept in the browser across reloads) and export
``corrections.csv``; retrain with ``--config.label_corrections=corrections.csv``
(docs/own_data.md). The workdir is only read; nothing but the page is written.

For teams, ``--label-studio`` writes the ``--top`` (default 500) most suspicious samples as Label
Studio import tasks with the model's suggestion as a pre-annotation, and the project's labeling
interface beside them (``tasks_label_config.xml``); ``--from-label-studio`` turns the project's
JSON export into ``corrections.csv`` (default: beside the export).
:mod:`gdw_jax.analysis.label_studio` has the formats.

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


def write_label_studio(workdir: str, out: str, top: int, image_url: str = "") -> str:
  """The ``top`` most suspicious samples as Label Studio tasks (``out``) and the labeling
  interface beside them; returns the interface's path."""
  from gdw_jax import fileio
  from gdw_jax.analysis import label_studio, review, workdir as workdir_lib
  run = workdir_lib.load_run(workdir)
  table = review.review_table(run, top)
  if not image_url:
    if run.config is None or run.config.dataset != "folder":
      raise ValueError("--label-studio needs --image-url PREFIX (the URL of the images; the "
                       "sample id is appended) unless the run read an image folder")
    image_url = label_studio.local_files_prefix(os.path.expanduser(run.config.data_root))
  tasks = label_studio.tasks(table, top, image_url, f"gdw_jax {run.method}")
  fileio.write_json(out, tasks)
  config_path = os.path.splitext(out)[0] + "_label_config.xml"
  fileio.write_text(config_path, label_studio.labeling_config(table["classes"]))
  return config_path


def from_label_studio(workdir: str, export: str, out: str) -> int:
  """Label Studio's JSON export -> corrections.csv; returns the number of rows."""
  from gdw_jax.analysis import label_studio, review, workdir as workdir_lib
  from gdw_jax.data import corrections
  run = workdir_lib.load_run(workdir)
  names = review.class_names_of(run) or [str(c) for c in range(run.num_classes or 0)]
  rows, reviewed = label_studio.corrections_rows(label_studio.read_export(export), names, export)
  corrections.write(out, rows, reviewed or os.path.abspath(workdir))
  return len(rows)


def _run(args) -> str:
  """Do what the arguments ask; the line to print."""
  start = time.time()
  if args.label_studio:
    config_path = write_label_studio(args.workdir, args.label_studio, args.top or 500,
                                     args.image_url)
    return (f"-> {args.label_studio} (the top {args.top or 500} as Label Studio tasks), "
            f"labeling interface {config_path}")
  if args.from_label_studio:
    out = args.out or os.path.join(os.path.dirname(args.from_label_studio), "corrections.csv")
    n = from_label_studio(args.workdir, args.from_label_studio, out)
    return f"-> {out} ({n} reviewed samples); retrain with --config.label_corrections={out}"
  path = write_review(args.workdir, args.out, args.top, args.thumb, not args.no_images)
  return (f"-> {path} ({os.path.getsize(path) / 1e6:.1f} MB, {time.time() - start:.1f} s); "
          f"open it in a browser, export corrections.csv, retrain with "
          f"--config.label_corrections=corrections.csv")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("workdir")
  p.add_argument("--out", default="", help="page path (default WORKDIR/review.html); with "
                 "--from-label-studio the corrections.csv (default beside the export)")
  p.add_argument("--top", type=int, default=0, help="only the N most suspicious (0: all; "
                 "--label-studio: 500)")
  p.add_argument("--thumb", type=int, default=64, help="largest thumbnail side, pixels")
  p.add_argument("--no-images", action="store_true", help="no thumbnails (ids only)")
  p.add_argument("--label-studio", default="", metavar="TASKS.json",
                 help="write Label Studio import tasks instead of the page")
  p.add_argument("--image-url", default="", help="--label-studio: URL prefix of the images "
                 "(default: Label Studio's local-files URL of the image folder)")
  p.add_argument("--from-label-studio", default="", metavar="EXPORT.json",
                 help="turn a Label Studio JSON export into corrections.csv")
  args = p.parse_args(argv)
  if args.top < 0 or args.thumb < 8:
    print("error: --top must be >= 0 and --thumb >= 8", file=sys.stderr)
    return 2
  if args.label_studio and args.from_label_studio:
    print("error: give --label-studio or --from-label-studio, not both", file=sys.stderr)
    return 2
  try:
    print(_run(args))
  except (ValueError, OSError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
