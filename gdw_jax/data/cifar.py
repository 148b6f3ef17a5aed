"""CIFAR-10 / CIFAR-100 sources: tfds or the original python archive, label files, CIFAR-N.

Images are loaded once into memory as uint8 ``[n, 32, 32, 3]`` arrays, **in archive order**
(the order of ``data_batch_1..5`` / ``train`` in the archives; the order the official code
indexes, so its splits and index-based label files line up). Augmentation and normalisation run
on device (:mod:`gdw_jax.data.augment`).

Where the images come from (config keys, all optional):

* ``cifar_archive``: path to ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` (or the
  folder it unpacks to). Read directly, no TensorFlow, no tfds preparation. The pickles inside
  are read with an unpickler that only allows NumPy array reconstruction.
* otherwise tfds ``cifar10`` / ``cifar100`` through ``tfds.data_source`` (array_record, no
  TensorFlow needed to read) in ``data_dir`` (default: tfds' ``~/tensorflow_datasets``). tfds
  stores the records shuffled; each carries its archive position in ``id`` (``train_00042``),
  from which the archive order is restored. Preparing the tfds files needs TensorFlow once and
  the binary archive in the manual dir (docs/cifar.md). Never downloads: a missing dataset is an
  error saying how to prepare it.

Noisy labels other than the synthetic ones of :mod:`gdw_jax.data.corruption`:

* ``label_file``: a ``.npy`` of integer labels, one per training image in archive order (PLC's
  feature-dependent noise files have 45,000: the first 45k images; the pool is then those).
* ``cifar_n``: a human label set of tfds ``cifar10_n`` (``aggre_label``, ``worse_label``,
  ``random_label1..3``) or ``cifar100_n`` (``noise_label``); images and clean labels then come
  from that tfds dataset too.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np

from gdw_jax.data import augment, label_files, sources

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
BINARY_ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}
_ARCHIVE_MEMBERS = {  # (folder, training files, test file, label key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels"),
}
HUMAN_LABELS = {
    "cifar10": ("aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"),
    "cifar100": ("noise_label",),
}
PLC_TRAIN_FRACTION = 0.9  # PLC / CMW-Net feature-dependent noise: first 90% of the images


class DataNotFoundError(ValueError):
  """The dataset is not where the config says; the message says how to prepare it."""


class CifarArrays(NamedTuple):
  x_train: np.ndarray                # [n, 32, 32, 3] uint8
  y_train: np.ndarray                # [n] int64 clean labels
  x_test: np.ndarray
  y_test: np.ndarray
  archive_order: bool                # images are in the archives' order
  extra: Dict[str, np.ndarray]       # further per-training-image labels (CIFAR-N)


# ---- tfds ------------------------------------------------------------------------------------


def _how_to_prepare(name: str, data_dir: Optional[str]) -> str:
  where = data_dir or "~/tensorflow_datasets"
  base = name.split("_")[0]
  extra = (f" plus the CIFAR-N label files (see tfds' {name} manual download instructions)"
           if name.endswith("_n") else "")
  return (f"either pass the python archive (--config.cifar_archive=/path/{ARCHIVES[base]}), or "
          f"prepare tfds {name} once, with tensorflow installed: put {BINARY_ARCHIVES[base]}"
          f"{extra} in a manual dir M and run `tfds build {name} --data_dir={where} "
          f"--manual_dir=M --file_format=array_record` (docs/cifar.md)")


def _open_tfds(name: str, split: str, data_dir: Optional[str]):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # noqa: BLE001 - tfds raises many types; re-raised below if prepared
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      raise DataNotFoundError(f"tfds dataset {name} is not prepared in "
                              f"{builder.data_dir}; {_how_to_prepare(name, data_dir)}") from None
    raise DataNotFoundError(
        f"tfds dataset {name} in {builder.data_dir} cannot be read as array_record "
        f"({type(e).__name__}: {e}); rebuild it with --file_format=array_record "
        f"(docs/cifar.md)") from e


def _archive_positions(ids: Sequence) -> Optional[np.ndarray]:
  """Archive positions from tfds ids (``train_00042`` -> 42), or None if they are not a
  permutation of ``0..n-1`` (e.g. mocked data)."""
  pos = np.empty(len(ids), np.int64)
  for i, rid in enumerate(ids):
    rid = rid.decode() if isinstance(rid, bytes) else str(rid)
    tail = rid.rsplit("_", 1)[-1]
    if not tail.isdigit():
      return None
    pos[i] = int(tail)
  if not np.array_equal(np.sort(pos), np.arange(len(ids))):
    return None
  return pos


def _read_split(ds, label_keys: Sequence[str]):
  n = len(ds)
  images = np.empty((n, 32, 32, 3), np.uint8)
  labels = {k: np.empty(n, np.int64) for k in label_keys}
  ids = []
  for i in range(n):
    ex = ds[i]
    images[i] = ex["image"]
    for k in label_keys:
      labels[k][i] = ex[k]
    ids.append(ex["id"])
  pos = _archive_positions(ids)
  if pos is not None:  # record i belongs at archive position pos[i]
    inv = np.argsort(pos)
    images = images[inv]
    labels = {k: v[inv] for k, v in labels.items()}
  return images, labels, pos is not None


def load_tfds(name: str, data_dir: Optional[str] = None, human_label: str = "") -> CifarArrays:
  """tfds ``cifar10`` / ``cifar100`` (or with ``human_label``, ``cifar10_n`` / ``cifar100_n``)."""
  tfds_name = f"{name}_n" if human_label else name
  keys = ["label"] + ([human_label] if human_label else [])
  x_tr, y_tr, order_tr = _read_split(_open_tfds(tfds_name, "train", data_dir), keys)
  x_te, y_te, _ = _read_split(_open_tfds(tfds_name, "test", data_dir), ["label"])
  extra = {human_label: y_tr[human_label]} if human_label else {}
  return CifarArrays(x_tr, y_tr["label"], x_te, y_te["label"], order_tr, extra)


# ---- the original python archives --------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
  """Only what the CIFAR pickles need (dicts, lists, str, a NumPy uint8 array)."""

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
      ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
      ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
  }

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR archive "
                                   f"(only NumPy arrays are expected)")
    return super().find_class(module, name)


def _unpickle(data: bytes) -> dict:
  # latin1: the archives were pickled by Python 2 (as the official code reads them).
  d = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
  return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _archive_files(path: str, name: str, members: Sequence[str]) -> Dict[str, bytes]:
  """The raw bytes of ``members`` from the archive (or the folder it unpacks to)."""
  folder = _ARCHIVE_MEMBERS[name][0]
  if os.path.isdir(path):
    root = path if os.path.exists(os.path.join(path, members[0])) else os.path.join(path, folder)
    out = {}
    for m in members:
      f = os.path.join(root, m)
      if not os.path.exists(f):
        raise DataNotFoundError(f"{f} not found: {path} is not the unpacked {ARCHIVES[name]}")
      with open(f, "rb") as fh:
        out[m] = fh.read()
    return out
  try:
    with tarfile.open(path, "r:*") as tar:
      names = set(tar.getnames())
      missing = [f"{folder}/{m}" for m in members if f"{folder}/{m}" not in names]
      if missing:
        raise DataNotFoundError(f"{path} has no {missing[0]}: is it {ARCHIVES[name]}?")
      return {m: tar.extractfile(f"{folder}/{m}").read() for m in members}
  except tarfile.TarError as e:
    raise DataNotFoundError(f"{path} is not a readable {ARCHIVES[name]}: {e}") from None


def read_python_archive(path: str, name: str) -> CifarArrays:
  """The python-version archive (``.tar.gz`` or the folder it unpacks to), in archive order."""
  _, train_files, test_file, label_key = _ARCHIVE_MEMBERS[name]
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise DataNotFoundError(f"CIFAR archive {path} does not exist; download {ARCHIVES[name]} "
                            f"from https://www.cs.toronto.edu/~kriz/cifar.html (docs/cifar.md)")
  files = _archive_files(path, name, [*train_files, test_file])

  def arrays(members):
    try:
      batches = [_unpickle(files[m]) for m in members]
      x = np.concatenate([np.asarray(b["data"], np.uint8) for b in batches])
      y = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
      x = x.reshape(-1, 3, 32, 32)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
      raise ValueError(f"{path} does not hold valid {ARCHIVES[name]} batches: "
                       f"{type(e).__name__}: {e}") from None
    return x.transpose(0, 2, 3, 1).copy(), y  # NCHW rows -> NHWC

  x_tr, y_tr = arrays(train_files)
  x_te, y_te = arrays([test_file])
  return CifarArrays(x_tr, y_tr, x_te, y_te, True, {})


# ---- label files -------------------------------------------------------------------------------


def load_label_file(path: str, num_images: int, num_classes: int) -> np.ndarray:
  """Integer labels from a ``.npy`` file, one per training image in archive order.

  Accepted lengths: ``num_images`` (every training image) or ``int(0.9 * num_images)`` (PLC's
  files: the first 45,000 CIFAR images; the rest is held out).
  """
  if not os.path.exists(os.path.expanduser(path)):
    raise DataNotFoundError(f"label file {os.path.expanduser(path)} does not exist")
  plc = int(PLC_TRAIN_FRACTION * num_images)
  return label_files.load(path, num_classes, (num_images, plc),
                          f"{num_images} (one per training image) or {plc} (PLC: the first "
                          f"{plc} images)")


# ---- the registered sources ------------------------------------------------------------------


def load(name: str, config) -> sources.Source:
  """The CIFAR source ``name`` as ``config`` asks (see the module docstring for the keys)."""
  k = NUM_CLASSES[name]
  # cifar_archive / cifar_n / augment are configs/cifar.py's keys, not base_config's: a config
  # built from base_config (own recipes, tests) reads CIFAR from tfds, all labels, augmented.
  archive = config.get("cifar_archive", "") or ""
  data_dir = config.data_dir or None
  human = config.get("cifar_n", "") or ""
  label_file = config.label_file
  if human and human not in HUMAN_LABELS[name]:
    raise ValueError(f"unknown cifar_n label set {human!r} for {name}; valid: "
                     f"{', '.join(HUMAN_LABELS[name])}")
  if human and (archive or label_file):
    raise ValueError("cifar_n human labels come from tfds; do not combine them with "
                     "cifar_archive or label_file")

  arr = read_python_archive(archive, name) if archive else load_tfds(name, data_dir, human)
  needs_order = [what for what, on in (("label_file", label_file),
                                       ("split_rng=legacy",
                                        config.split_rng == "legacy")) if on]
  if needs_order and not arr.archive_order:
    raise ValueError(f"{' and '.join(needs_order)} need the images in archive order, which "
                     f"these tfds records do not give (their ids are not train_<index>)")
  x, y, noisy = arr.x_train, arr.y_train, arr.extra.get(human)
  if label_file:
    noisy = load_label_file(label_file, y.shape[0], k)
    x, y = x[:noisy.shape[0]], y[:noisy.shape[0]]
  transform = (augment.cifar_train_transform if config.get("augment", True)
               else augment.cifar_no_augment)
  return sources.Source(name, x, y, arr.x_test, arr.y_test, k, y_pool_noisy=noisy,
                        augment=transform, preprocess=augment.normalize)


@sources.register("cifar10")
def cifar10(config) -> sources.Source:
  """CIFAR-10: 50,000 training / 10,000 test 32x32 colour images, 10 classes."""
  return load("cifar10", config)


@sources.register("cifar100")
def cifar100(config) -> sources.Source:
  """CIFAR-100: 50,000 training / 10,000 test 32x32 colour images, 100 (fine) classes."""
  return load("cifar100", config)
