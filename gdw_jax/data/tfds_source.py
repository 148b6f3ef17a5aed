"""``dataset=tfds``: any tfds image-classification dataset, by name (``tfds_name``).

Read through ``tfds.data_source`` (array_record files, random access, no TensorFlow at run
time) from ``data_dir`` (default: tfds' ``~/tensorflow_datasets``); never downloads. Keys:

* ``tfds_name`` (e.g. ``mnist``, ``fashion_mnist``, ``beans``); ``tfds_image_key`` /
  ``tfds_label_key``: the feature names (default ``image`` / ``label``; the label must be a
  ``ClassLabel``, which gives the number of classes and the class names).
* ``tfds_train_split`` (``train``), ``tfds_test_split`` (``test``; empty: no test set),
  ``tfds_meta_split`` (empty: none): a trusted set. Any tfds split expression works
  (``train[:1000]`` as trusted set with ``train[1000:]`` as training split).

The image shape comes from the dataset's features; images of unknown or varying size need
``image_size``. The id of a training record is its ``id`` feature where the dataset has one,
else its index in the training split. Modes and checks: :mod:`gdw_jax.data.own`.

With ``input_pipeline=stream`` no image is decoded up front: each split becomes an
:class:`~gdw_jax.data.image_table.ImageTable` over its records (the labels are read once, the
images stay encoded until a worker needs them); ids are record positions.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from gdw_jax.data import image_table, own, sources

CHUNK = 256


def how_to_prepare(name: str, data_dir: Optional[str]) -> str:
  where = data_dir or "~/tensorflow_datasets"
  return (f"prepare it once, with tensorflow installed: `tfds build {name} --data_dir={where} "
          f"--file_format=array_record` (docs/own_data.md)")


def open_split(name: str, split: str, data_dir: Optional[str], key: str):
  """``tfds.data_source`` of one split; a clear error if it is not prepared or has no split."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001 - tfds raises its own DatasetNotFoundError etc.
    raise ValueError(f"tfds_name: unknown tfds dataset {name!r} ({type(e).__name__}: "
                     f"{str(e).splitlines()[0] if str(e) else ''})") from None
  splits = list(builder.info.splits.keys()) if builder.info.splits else []
  base = split.split("[", 1)[0]
  if splits and base not in splits:
    raise ValueError(f"{key}: tfds dataset {name} has no split {base!r} (splits: "
                     f"{', '.join(splits)})")
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # noqa: BLE001
    if not builder.is_prepared():
      raise ValueError(f"tfds_name: dataset {name} is not prepared in {builder.data_dir}; "
                       f"{how_to_prepare(name, data_dir)}") from None
    raise ValueError(f"{key}: cannot read split {split!r} of tfds dataset {name} as "
                     f"array_record ({type(e).__name__}: {e}); "
                     f"{how_to_prepare(name, data_dir)}") from None


def _features(ds, name: str, image_key: str, label_key: str):
  """``(image feature, number of classes, class names)``, checked."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  features = ds.dataset_info.features
  keys = ", ".join(features.keys())
  if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
    raise ValueError(f"tfds_image_key: {name} has no image feature {image_key!r} (features: "
                     f"{keys})")
  label = features[label_key] if label_key in features else None
  if not isinstance(label, tfds.features.ClassLabel):
    raise ValueError(f"tfds_label_key: {name} has no class-label feature {label_key!r} "
                     f"(features: {keys})")
  return features[image_key], label.num_classes, list(label.names)


def _records(ds, what: str, progress: bool):
  """Every record of ``ds``, in order (``__getitems__`` in chunks where the source has it)."""
  n = len(ds)
  bar = tqdm(total=n, disable=not progress, desc=f"reading {what}", unit="img", leave=False)
  out = []
  for start in range(0, n, CHUNK):
    keys = list(range(start, min(start + CHUNK, n)))
    try:
      chunk = ds.__getitems__(keys)
    except (TypeError, AttributeError, NotImplementedError):
      chunk = [ds[i] for i in keys]
    out.extend(chunk)
    bar.update(len(keys))
  bar.close()
  return out


def _read_split(ds, image_key: str, label_key: str, size: int, channels: int, what: str,
                progress: bool) -> Tuple[np.ndarray, np.ndarray, list]:
  """``(images [n, H, W, C] uint8, labels [n], record ids or None)``."""
  records = _records(ds, what, progress)
  arrays, labels, ids = [], [], []
  for i, ex in enumerate(records):
    a = np.asarray(ex[image_key])
    if a.ndim == 2:
      a = a[..., None]
    if size or (channels and channels != a.shape[-1]):
      a = _convert(a, size, channels)
    if arrays and a.shape != arrays[0].shape:
      raise ValueError(f"{what}: record {i} is {a.shape[0]}x{a.shape[1]}x{a.shape[2]}, record "
                       f"0 is {'x'.join(map(str, arrays[0].shape))}; set image_size (and "
                       f"image_channels) to resize every image")
    arrays.append(a.astype(np.uint8, copy=False))
    labels.append(int(ex[label_key]))
    if "id" in ex:
      rid = ex["id"]
      ids.append(rid.decode() if isinstance(rid, bytes) else str(rid))
  if not arrays:
    raise ValueError(f"{what}: the split is empty")
  return np.stack(arrays), np.asarray(labels, np.int64), ids if len(ids) == len(arrays) else None


def _convert(a: np.ndarray, size: int, channels: int) -> np.ndarray:
  """Resize ``a`` ``[H, W, C]`` to ``size`` (bilinear) and convert to ``channels`` with Pillow."""
  im = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
  c = channels or (1 if a.shape[-1] == 1 else 3)
  im = im.convert("L" if c == 1 else "RGB")
  if size:
    im = im.resize((size, size), Image.Resampling.BILINEAR)
  out = np.asarray(im, np.uint8)
  return out[..., None] if c == 1 else out


@sources.register("tfds")
def tfds_source(config) -> sources.Source:
  """``config.tfds_name`` through ``tfds.data_source`` (see the module docstring)."""
  name = config.tfds_name
  if not name:
    raise ValueError("dataset=tfds needs tfds_name=NAME (e.g. mnist; docs/own_data.md)")
  data_dir = config.data_dir or None
  img_key, lbl_key = config.tfds_image_key, config.tfds_label_key
  opts = dict(size=int(config.image_size), channels=int(config.image_channels),
              progress=bool(config.progress))
  train_ds = open_split(name, config.tfds_train_split, data_dir, "tfds_train_split")
  feature, k, names = _features(train_ds, name, img_key, lbl_key)
  if image_table.streaming(config):
    return _stream_source(config, name, data_dir, names, feature)
  shape = tuple(feature.shape)
  if None in shape[:2] and not opts["size"]:
    raise ValueError(f"tfds {name}: images have no fixed size {shape}; set image_size")
  x, y, ids = _read_split(train_ds, img_key, lbl_key, what=f"tfds {name} "
                          f"{config.tfds_train_split}", **opts)
  parts = {}
  for key in ("tfds_meta_split", "tfds_test_split"):
    if config[key]:
      ds = open_split(name, config[key], data_dir, key)
      parts[key] = _read_split(ds, img_key, lbl_key, what=f"tfds {name} {config[key]}", **opts)
  meta, test = parts.get("tfds_meta_split"), parts.get("tfds_test_split")
  if ids is not None and len(set(ids)) != len(ids):
    ids = None  # ids that are not unique (mocked data) identify nothing: use positions
  return own.make_source(
      config, "tfds", x, y, x_meta=None if meta is None else meta[0],
      y_meta=None if meta is None else meta[1], x_test=None if test is None else test[0],
      y_test=None if test is None else test[1], ids=ids, class_names=names,
      where=f"tfds {name}", info={"tfds_name": name, "train_split": config.tfds_train_split,
                                  "feature_shape": list(shape)})


def _stream_table(config, name: str, split: str, data_dir, channels: int):
  reader = image_table.TfdsReader(name, split, data_dir, config.tfds_image_key,
                                  config.tfds_label_key)
  labels = reader.labels(progress=bool(config.progress))
  if not len(labels):
    raise ValueError(f"tfds {name} {split}: the split is empty")
  return image_table.ImageTable(reader, None, int(config.image_size), channels), labels


def _stream_source(config, name: str, data_dir, names, feature) -> sources.Source:
  """The splits of ``config`` as record tables (``input_pipeline=stream``)."""
  shape = tuple(feature.shape)
  channels = int(config.image_channels) or (shape[-1] if shape[-1] in (1, 3) else 3)
  x, y = _stream_table(config, name, config.tfds_train_split, data_dir, channels)
  parts = {key: _stream_table(config, name, config[key], data_dir, channels)
           for key in ("tfds_meta_split", "tfds_test_split") if config[key]}
  meta, test = parts.get("tfds_meta_split"), parts.get("tfds_test_split")
  return own.make_source(
      config, "tfds", x, y, x_meta=None if meta is None else meta[0],
      y_meta=None if meta is None else meta[1], x_test=None if test is None else test[0],
      y_test=None if test is None else test[1], class_names=names, where=f"tfds {name}",
      info={"tfds_name": name, "train_split": config.tfds_train_split,
            "feature_shape": list(shape), "input_pipeline": "stream"})
