"""The real-noise datasets of the papers, each in its distributed layout, as named sources.

All four read ``data_root`` (the dataset's folder as downloaded and unpacked; preparation in
docs/real_noise.md), give the labels as the papers use them (noisy, truth unknown: the
practitioner mode of :mod:`gdw_jax.data.own`), and decode up front or stream
(``input_pipeline``) through :func:`gdw_jax.data.image_table.load_items`:

* ``clothing1m``: the key / label lists ``noisy_train_key_list.txt`` with
  ``noisy_label_kv.txt`` (training, 1M web images), ``clean_val_key_list.txt`` with
  ``clean_label_kv.txt`` (**the trusted set**, as MW-Net and ABSGD use it) and
  ``clean_test_key_list.txt`` (test); paths ``images/...`` relative to ``data_root``; the lists
  in ``data_root`` or ``data_root/annotations``; class names from ``category_names_eng.txt``.
* ``animal10n``: ``training/`` and ``testing/`` folders of ``<label>_<id>.jpg`` files (the label
  is the file name's integer prefix). The papers have no trusted set (CMW-Net picks its meta set
  from the training data by small loss).
* ``mini_webvision``: the first ``webvision_classes`` (50) classes of the Google part,
  ``info/train_filelist_google.txt`` (paths relative to ``data_root``); test: WebVision's
  validation images of those classes (``info/val_filelist.txt``, images in
  ``val_images_256/``); extra test set ``imagenet``: the same classes of ILSVRC12's validation
  set (``imagenet_val_root`` with a ``val.txt`` of ``path label`` lines, default
  ``data_root/imagenet/val``). No trusted set (small-loss meta set, as CMW-Net).
* ``webfg496``: one of its three sets (``web-bird``, ``web-aircraft``, ``web-car``) as class
  folders, ``data_root/train/<class>/`` and ``data_root/val/<class>/`` (test); the trusted set
  is ``meta_root`` in the same layout (CMW-Net: 10 images per class from the clean benchmark's
  training split).

Ids of training images are their paths relative to ``data_root``.
"""
from __future__ import annotations

import os
from typing import List, Tuple

from gdw_jax.data import images, lists, own, sources

CLOTHING1M_CLASSES = 14


def _root(config, name: str) -> str:
  root = config.data_root
  if not root:
    raise ValueError(f"dataset={name} needs data_root=FOLDER (the dataset as downloaded; "
                     f"docs/real_noise.md)")
  root = os.path.expanduser(root)
  if not os.path.isdir(root):
    raise images.ImageError(f"data_root: folder {root} does not exist")
  return root


def _source(config, name: str, root: str, train_rel: List[Tuple[str, int]], parts: dict,
            class_names=None, info=None, extra: dict = None):
  """Load the parts (paths relative to ``root``) and make the source; ``parts``: ``meta`` and
  ``test`` ``[(abs path, label)]`` or None; ``extra``: extra test sets, same form."""
  named = {**{k: v for k, v in parts.items()}, **(extra or {})}
  train, loaded, notes = lists.load_parts(config, lists.under(root, train_rel), named,
                                          f"{name} training list")
  x_meta, y_meta = lists.xy(loaded.get("meta"))
  x_test, y_test = lists.xy(loaded.get("test"))
  extra_tests = {k: lists.xy(loaded[k]) for k in (extra or {}) if loaded.get(k) is not None}
  info = {"data_root": os.path.abspath(root), **(info or {}), **notes}
  return own.make_source(config, name, train.x, train.labels, x_meta=x_meta, y_meta=y_meta,
                         x_test=x_test, y_test=y_test, ids=[train_rel[i][0] for i in train.kept],
                         class_names=class_names, where=f"{name} data_root {root}", info=info,
                         extra_tests=extra_tests or None)


# ---- Clothing1M ------------------------------------------------------------------------------


def _clothing_file(root: str, name: str) -> str:
  for folder in (root, os.path.join(root, "annotations")):
    if os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name)
  raise images.ImageError(f"clothing1m: {name} is neither in {root} nor in {root}/annotations")


@sources.register("clothing1m")
def clothing1m(config) -> sources.Source:
  """Clothing1M (see the module docstring): noisy training list, clean val as trusted set."""
  root = _root(config, "clothing1m")

  def kv(name):
    path = _clothing_file(root, name)
    return path, {p: y for p, y, _ in lists.read_labelled(path, name, CLOTHING1M_CLASSES)}

  noisy_path, noisy = kv("noisy_label_kv.txt")
  clean_path, clean = kv("clean_label_kv.txt")

  def part(list_name, labels, labels_path):
    path = _clothing_file(root, list_name)
    return lists.labels_of(lists.read_keys(path, list_name), labels, list_name, path,
                           labels_path)

  train = part("noisy_train_key_list.txt", noisy, noisy_path)
  meta = lists.under(root, part("clean_val_key_list.txt", clean, clean_path))
  test = lists.under(root, part("clean_test_key_list.txt", clean, clean_path))
  names = None
  names_path = os.path.join(os.path.dirname(noisy_path), "category_names_eng.txt")
  if os.path.isfile(names_path):
    with open(names_path, encoding="utf-8") as f:
      names = [line.strip() for line in f if line.strip()]
    if len(names) != CLOTHING1M_CLASSES:
      raise images.ImageError(f"clothing1m: {names_path} names {len(names)} classes, not "
                              f"{CLOTHING1M_CLASSES}")
  return _source(config, "clothing1m", root, train, {"meta": meta, "test": test}, names,
                 {"lists": os.path.dirname(noisy_path)})


# ---- ANIMAL-10N ------------------------------------------------------------------------------


def _animal_items(folder: str, key: str) -> List[Tuple[str, int]]:
  """``(file name, label)`` of every image in ``folder``, the label from ``<label>_<id>``."""
  if not os.path.isdir(folder):
    raise images.ImageError(f"animal10n: folder {folder} does not exist ({key})")
  out = []
  for name in sorted(os.listdir(folder)):
    if name.startswith(".") or not name.lower().endswith(images.IMAGE_EXTENSIONS):
      continue
    prefix = name.split("_", 1)[0]
    if not prefix.isdigit() or "_" not in name:
      raise images.ImageError(f"animal10n: {os.path.join(folder, name)} is not named "
                              f"<label>_<id>.<ext>")
    out.append((name, int(prefix)))
  if not out:
    raise images.ImageError(f"animal10n: {folder} has no image files ({key})")
  return out


@sources.register("animal10n")
def animal10n(config) -> sources.Source:
  """ANIMAL-10N (see the module docstring): labels from the file names, no trusted set."""
  root = _root(config, "animal10n")
  train = [(f"training/{n}", y) for n, y in _animal_items(os.path.join(root, "training"),
                                                          "training set")]
  test_folder = os.path.join(root, "testing")
  test = (lists.under(test_folder, _animal_items(test_folder, "test set"))
          if os.path.isdir(test_folder) else None)
  return _source(config, "animal10n", root, train, {"meta": None, "test": test},
                 [str(c) for c in range(10)])


# ---- mini-WebVision ---------------------------------------------------------------------------


@sources.register("mini_webvision")
def mini_webvision(config) -> sources.Source:
  """mini-WebVision (see the module docstring): Google images of the first classes; tests on
  WebVision's and ILSVRC12's validation images of those classes."""
  root = _root(config, "mini_webvision")
  k = int(config.webvision_classes)
  info_dir = os.path.join(root, "info")
  train = [(p, y) for p, y, _ in lists.read_labelled(
      os.path.join(info_dir, "train_filelist_google.txt"), "train_filelist_google.txt")
           if y < k]
  val = [(p, y) for p, y, _ in lists.read_labelled(
      os.path.join(info_dir, "val_filelist.txt"), "val_filelist.txt") if y < k]
  test = lists.under(os.path.join(root, "val_images_256"), val)
  extra, info = {}, {"webvision_classes": k}
  imagenet = config.imagenet_val_root or os.path.join(root, "imagenet", "val")
  if config.imagenet_val_root or os.path.isfile(os.path.join(imagenet, "val.txt")):
    entries = lists.read_labelled(os.path.join(imagenet, "val.txt"), "imagenet_val_root")
    extra["imagenet"] = lists.under(imagenet, [(p, y) for p, y, _ in entries if y < k])
    info["imagenet_val_root"] = os.path.abspath(imagenet)
  if not train:
    raise images.ImageError(f"mini_webvision: train_filelist_google.txt has no image of the "
                            f"first {k} classes")
  if config.num_classes and int(config.num_classes) != k:
    raise ValueError(f"mini_webvision: num_classes = {config.num_classes} but "
                     f"webvision_classes = {k}")
  config_k = _with_classes(config, k)
  return _source(config_k, "mini_webvision", root, train, {"meta": None, "test": test},
                 info=info, extra=extra)


def _with_classes(config, k: int):
  """``config`` with ``num_classes = k`` (a class absent from the data still counts)."""
  c = config.copy_and_resolve_references()
  c.num_classes = k
  return c


# ---- WebFG-496 -------------------------------------------------------------------------------


@sources.register("webfg496")
def webfg496(config) -> sources.Source:
  """One WebFG-496 set (see the module docstring): class folders train/ and val/ (test), the
  trusted set in ``meta_root``."""
  root = _root(config, "webfg496")
  items, rel, names = images.list_class_folder(os.path.join(root, "train"), "data_root/train")
  train = list(zip(rel, (y for _, y in items)))
  test_root = os.path.join(root, "val")
  test = (images.list_class_folder(test_root, "data_root/val", names)[0]
          if os.path.isdir(test_root) else None)
  meta = (images.list_class_folder(config.meta_root, "meta_root", names)[0]
          if config.meta_root else None)
  return _source(config, "webfg496", os.path.join(root, "train"), train,
                 {"meta": meta, "test": test}, names)
