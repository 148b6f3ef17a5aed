"""List files of images: the generic ``dataset=list`` source and the readers the real-noise
sources share.

A *labelled list* has one ``path label`` line per image (whitespace between them; ``label`` an
integer class index), the layout of WebVision's ``info/*_filelist*.txt``, Clothing1M's
``*_label_kv.txt`` and ILSVRC12's ``val.txt`` as the noisy-label papers ship them. A *key list*
has one ``path`` per line (Clothing1M's ``*_key_list.txt``). Paths are relative to an image
root. Every format error names the file and line.

``dataset=list``: ``train_list`` (required), ``meta_list`` (a trusted set) and ``test_list``,
each a labelled list with paths relative to ``data_root`` (default: the list file's folder).
Decoded up front or streamed like every image source (:func:`image_table.load_items`).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging

from gdw_jax.data import image_table, images, own, sources

Entry = Tuple[str, int, int]  # (relative path, label, line)


def _lines(path: str, key: str):
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise images.ImageError(f"{key}: list file {path} does not exist")
  with open(path, encoding="utf-8") as f:
    for line, text in enumerate(f, start=1):
      text = text.strip()
      if text:
        yield line, text


def read_labelled(path: str, key: str, num_classes: int = 0) -> List[Entry]:
  """``[(path, label, line)]`` of a ``path label`` list; ``num_classes`` > 0 checks the range."""
  out = []
  for line, text in _lines(path, key):
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
      raise images.ImageError(f"{key}: {path} line {line}: expected 'path label', got {text!r}")
    try:
      label = int(parts[1])
    except ValueError:
      raise images.ImageError(f"{key}: {path} line {line}: label {parts[1]!r} is not an "
                              f"integer class index") from None
    if label < 0 or (num_classes and label >= num_classes):
      raise images.ImageError(f"{key}: {path} line {line}: label {label} is outside "
                              f"[0, {num_classes or 'inf'})")
    out.append((parts[0], label, line))
  return out


def read_keys(path: str, key: str) -> List[Tuple[str, int]]:
  """``[(path, line)]`` of a key list (one path per line)."""
  return [(text, line) for line, text in _lines(path, key)]


def labels_of(keys: Sequence[Tuple[str, int]], kv: Dict[str, int], key: str, list_path: str,
              kv_path: str) -> List[Tuple[str, int]]:
  """The ``(path, label)`` of every listed key; a key without a label is an error naming it."""
  out = []
  for rel, line in keys:
    if rel not in kv:
      raise images.ImageError(f"{key}: {list_path} line {line}: {rel} has no label in {kv_path}")
    out.append((rel, kv[rel]))
  return out


def under(root: str, entries: Sequence[Tuple[str, int]]) -> List[Tuple[str, int]]:
  """``(root/path, label)`` pairs."""
  root = os.path.expanduser(root)
  return [(os.path.join(root, rel), label) for rel, label in entries]


def skipped_note(key: str, decoded) -> dict:
  """What ``data.json`` says about the files of ``key`` that were left out."""
  if not decoded.skipped:
    return {}
  n = len(decoded.skipped)
  logging.warning("%s: skipped %d unreadable image file(s) (skip_bad_images=true), e.g. %s", key,
                  n, decoded.skipped[0][1])
  return {f"{key}_skipped_images": n,
          f"{key}_skipped_examples": [p for p, _ in decoded.skipped[:10]]}


def load_parts(config, train_items, parts: Dict[str, Optional[list]], train_key: str):
  """Decode (or table) the training items and each named part (``None`` parts are skipped), all
  alike; ``(train, {name: decoded}, info)``."""
  train = image_table.load_items(train_items, config, train_key)
  info = skipped_note(train_key, train)
  out = {}
  for name, items in parts.items():
    if items is not None:
      out[name] = image_table.load_items(items, config, name, reference=train.reference)
      info.update(skipped_note(name, out[name]))
  return train, out, info


def xy(decoded) -> Tuple[Optional[object], Optional[object]]:
  return (None, None) if decoded is None else (decoded.x, decoded.labels)


@sources.register("list")
def list_source(config) -> sources.Source:
  """``train_list`` / ``meta_list`` / ``test_list`` (see the module docstring)."""
  if not config.train_list:
    raise ValueError("dataset=list needs train_list=FILE of 'path label' lines "
                     "(docs/real_noise.md)")
  k = int(config.num_classes)

  def items(key):
    if not config[key]:
      return None
    root = config.data_root or os.path.dirname(os.path.abspath(config[key]))
    return under(root, [(p, y) for p, y, _ in read_labelled(config[key], key, k)])

  train_rel = [p for p, _, _ in read_labelled(config.train_list, "train_list", k)]
  train_items = items("train_list")
  train, parts, info = load_parts(config, train_items, {"meta_list": items("meta_list"),
                                                        "test_list": items("test_list")},
                                  "train_list")
  x_meta, y_meta = xy(parts.get("meta_list"))
  x_test, y_test = xy(parts.get("test_list"))
  info.update(train_list=os.path.abspath(config.train_list))
  return own.make_source(config, "list", train.x, train.labels, x_meta=x_meta, y_meta=y_meta,
                         x_test=x_test, y_test=y_test,
                         ids=[train_rel[i] for i in train.kept],
                         where=f"train_list {config.train_list}", info=info)
