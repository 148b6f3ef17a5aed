"""``dataset=folder``: an image folder, ``data_root/<class>/<image files>``.

* ``data_root``: the training images; the classes are its subfolders, sorted by name.
* ``label_csv`` (optional): ``path,label`` rows (``path`` relative to ``data_root``, ``label`` a
  class name or index) that override the folder's label of those files: how noisy-label sets
  such as ANIMAL-10N and Clothing1M ship their labels. A third column (``path,label,candidates``)
  gives candidate sets (partial labels), classes separated by ``|``; an image the CSV does not
  list has its own label as its only candidate.
* ``meta_root`` (optional): a trusted set in the same layout; ``test_root`` (optional): a test
  set in the same layout. Their subfolders must be training classes.

Files are decoded with Pillow (:mod:`gdw_jax.data.images`: png, jpg, bmp, gif, webp, tif),
converted to ``image_channels`` (0: as stored, all alike) and resized to ``image_size`` (0: as
stored, all alike). The id of a training image is its path relative to ``data_root``. An
unreadable file is an error naming it, or with ``skip_bad_images=true`` is skipped and counted
(a warning, and ``data.json``). Modes and checks: :mod:`gdw_jax.data.own`. With
``input_pipeline=stream`` nothing is decoded up front (:func:`image_table.load_items`).
"""
from __future__ import annotations

import os

import numpy as np
from absl import logging

from gdw_jax.data import image_table, images, own, sources


def _override_labels(items, rel, csv_path: str, root: str, names, candidates=None):
  """``items`` with the labels of ``label_csv`` put in; the number of rows applied. Its
  ``candidates`` column (if any) fills ``candidates`` (relative path -> bool row)."""
  rows = images.read_label_csv(csv_path, names, candidates=candidates)
  position = {r: i for i, r in enumerate(rel)}
  items = list(items)
  for path, (label, line) in rows.items():
    if path not in position:
      raise ValueError(f"label_csv: {csv_path} line {line}: {path} is not an image file under "
                       f"data_root {root}")
    i = position[path]
    items[i] = (items[i][0], label)
  return items, len(rows)


def _skipped_note(key: str, decoded) -> dict:
  if not decoded.skipped:
    return {}
  n = len(decoded.skipped)
  logging.warning("%s: skipped %d unreadable image file(s) (skip_bad_images=true), e.g. %s", key,
                  n, decoded.skipped[0][1])
  return {f"{key}_skipped_images": n,
          f"{key}_skipped_examples": [p for p, _ in decoded.skipped[:10]]}


@sources.register("folder")
def folder(config) -> sources.Source:
  """The image folder(s) of ``config`` (see the module docstring)."""
  root = config.data_root
  if not root:
    raise ValueError("dataset=folder needs data_root=FOLDER laid out as FOLDER/<class>/<images> "
                     "(docs/own_data.md)")
  items, rel, names = images.list_class_folder(root, "data_root")
  info = {"data_root": os.path.abspath(os.path.expanduser(root))}
  given = {}  # relative path -> candidate row, from label_csv's candidates column
  if config.label_csv:
    items, n_rows = _override_labels(items, rel, config.label_csv, root, names, given)
    info.update(label_csv=os.path.abspath(os.path.expanduser(config.label_csv)),
                labels_from_csv=n_rows)
  train = image_table.load_items(items, config, "data_root")
  info.update(_skipped_note("data_root", train))
  parts = {}
  for key in ("meta_root", "test_root"):
    if config[key]:
      part_items, _, _ = images.list_class_folder(config[key], key, names)
      decoded = image_table.load_items(part_items, config, key, reference=train.reference)
      info.update(_skipped_note(key, decoded))
      info[key] = os.path.abspath(os.path.expanduser(config[key]))
      parts[key] = decoded
  meta, test = parts.get("meta_root"), parts.get("test_root")
  return own.make_source(
      config, "folder", train.x, train.labels,
      x_meta=None if meta is None else meta.x, y_meta=None if meta is None else meta.labels,
      x_test=None if test is None else test.x, y_test=None if test is None else test.labels,
      ids=[rel[i] for i in train.kept], class_names=names, where=f"data_root {root}", info=info,
      candidates=_candidates(given, [rel[i] for i in train.kept], train.labels, len(names)))


def _candidates(given, kept_rel, labels, num_classes: int):
  """The ``[n, C]`` candidate mask of the kept training images: the CSV's row, or the image's
  own label alone where the CSV lists none (None without a candidates column)."""
  if not given:
    return None
  mask = np.zeros((len(kept_rel), num_classes), bool)
  mask[np.arange(len(kept_rel)), np.asarray(labels, np.int64)] = True
  for i, path in enumerate(kept_rel):
    if path in given:
      mask[i] = given[path]
  return mask
