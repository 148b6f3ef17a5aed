"""Images by row, decoded on demand: the training pool of the streaming input path.

An :class:`ImageTable` stands where an in-memory source has its uint8 ``[n, H, W, C]`` array:
it has the array's ``shape`` (``H = W = image_size``, the size its transforms output), ``dtype``
and ``len``, and indexing it with positions gives the sub-table of those rows, so the dataset
code (meta split, trusted ids, noise) works on it unchanged. Pixels are only made by
:meth:`ImageTable.image`, which opens one row with its reader; turning a table into an array
(``np.asarray``) is an error, so nothing decodes a whole dataset by accident.

Readers are small picklable objects (they travel to grain's worker processes):

* :class:`FileReader`: image files by path (a folder, a list file);
* :class:`TfdsReader`: records of a tfds ``array_record`` split through ``tfds.data_source``,
  the image feature read as its encoded bytes (``SkipDecoding``) and decoded here with Pillow,
  like a file. The source is opened lazily, once per process.

Bad files: :func:`missing_files` finds listed files that do not exist (the sources raise or,
with ``skip_bad_images``, drop and count them before training); a file that exists but does not
decode is found when a worker reads it (:meth:`ImageTable.image` raises an
:class:`~gdw_jax.data.images.ImageError` naming it).
"""
from __future__ import annotations

import io
import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from gdw_jax.data import images


class FileReader:
  """Image files by path."""

  def __init__(self, paths: Sequence[str]):
    self.paths = np.asarray(list(paths), dtype=object)

  def __len__(self) -> int:
    return len(self.paths)

  def name(self, i: int) -> str:
    return str(self.paths[i])

  def mode(self, i: int) -> str:
    """Pillow's mode of file ``i``, from its header."""
    def header(path):
      with Image.open(path) as im:
        return im.mode

    return _load(header, self.paths[i], self.paths[i], load=False)

  def open(self, i: int):
    """The decoded ``PIL.Image`` of file ``i`` (fully loaded; errors name the file)."""
    return _load(Image.open, self.paths[i], self.paths[i])


class TfdsReader:
  """The records of one tfds split (``array_record``), their image feature decoded by Pillow."""

  def __init__(self, name: str, split: str, data_dir: Optional[str], image_key: str,
               label_key: str):
    self.tfds_name, self.split, self.data_dir = name, split, data_dir
    self.image_key, self.label_key = image_key, label_key
    self._source = None

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_source"] = None  # each process opens its own
    return state

  @property
  def source(self):
    if self._source is None:
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

      self._source = tfds.data_source(self.tfds_name, split=self.split, data_dir=self.data_dir,
                                      download=False,
                                      decoders={self.image_key: tfds.decode.SkipDecoding()})
    return self._source

  def __len__(self) -> int:
    return len(self.source)

  def name(self, i: int) -> str:
    return f"tfds {self.tfds_name} {self.split} record {int(i)}"

  def labels(self, progress: bool = False) -> np.ndarray:
    """Every record's label (reads each record once; the images stay encoded)."""
    n, out, chunk = len(self), [], 1024
    for start in tqdm(range(0, n, chunk), disable=not progress, unit="chunk", leave=False,
                      desc=f"labels of {self.tfds_name} {self.split}"):
      keys = list(range(start, min(start + chunk, n)))
      out.extend(int(r[self.label_key]) for r in self.source.__getitems__(keys))
    return np.asarray(out, np.int64)

  def mode(self, i: int) -> str:
    return self.open(i).mode

  def open(self, i: int):
    data = self.source[int(i)][self.image_key]
    return _load(lambda b: Image.open(io.BytesIO(b)), data, self.name(i))


def _load(opener, what, name: str, load: bool = True):
  try:
    im = opener(what)
    if load:
      im.load()  # decodes the whole file: a truncated JPEG fails here, not later
    return im
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
          Image.DecompressionBombError) as e:
    raise images.ImageError(f"cannot read image {name} ({type(e).__name__}: {e})") from None


class ImageTable:
  """Rows of a reader as a lazy ``[n, size, size, channels]`` uint8 image array."""

  ndim = 4
  dtype = np.dtype(np.uint8)

  def __init__(self, reader, rows: Optional[np.ndarray] = None, size: int = 0,
               channels: int = 3):
    self.reader = reader
    self.rows = (np.arange(len(reader), dtype=np.int64) if rows is None
                 else np.asarray(rows, np.int64))
    self.size, self.channels = int(size), int(channels)

  @property
  def shape(self) -> Tuple[int, int, int, int]:
    return (len(self.rows), self.size, self.size, self.channels)

  @property
  def nbytes(self) -> int:
    """What the decoded images would take in memory."""
    return int(np.prod(self.shape))

  def __len__(self) -> int:
    return len(self.rows)

  def __getitem__(self, idx) -> "ImageTable":
    if isinstance(idx, (int, np.integer)):
      raise TypeError("ImageTable rows are read with .image(i); index it with positions to get "
                      "a sub-table")
    return ImageTable(self.reader, self.rows[idx], self.size, self.channels)

  def __array__(self, dtype=None, copy=None):
    raise TypeError(f"an ImageTable of {len(self)} images is decoded batch by batch by the "
                    f"streaming input path, not turned into one array")

  def name(self, i: int) -> str:
    """The file (or record) of row ``i``, for messages and ids."""
    return self.reader.name(self.rows[i])

  def image(self, i: int):
    """The decoded ``PIL.Image`` of row ``i`` (raises :class:`images.ImageError` naming it)."""
    return self.reader.open(self.rows[i])

  def empty(self) -> "ImageTable":
    return self[np.zeros(0, np.int64)]

  def same_reader(self, other: Any) -> bool:
    return isinstance(other, ImageTable) and other.reader is self.reader


class ConcatReader:
  """Several tables' rows one after the other (a source's train, meta and test parts as one
  pool, so a run's rows index one reader)."""

  def __init__(self, tables: Sequence["ImageTable"]):
    self.parts = [(t.reader, t.rows) for t in tables]
    self.offsets = np.cumsum([0] + [len(t) for t in tables])

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def _where(self, i: int):
    k = int(np.searchsorted(self.offsets, i, side="right")) - 1
    reader, rows = self.parts[k]
    return reader, rows[int(i) - self.offsets[k]]

  def name(self, i: int) -> str:
    reader, row = self._where(i)
    return reader.name(row)

  def mode(self, i: int) -> str:
    reader, row = self._where(i)
    return reader.mode(row)

  def open(self, i: int):
    reader, row = self._where(i)
    return reader.open(row)


def concat(tables: Sequence[ImageTable]) -> ImageTable:
  """One table over the rows of ``tables`` in order (same size and channels)."""
  first = tables[0]
  if any((t.size, t.channels) != (first.size, first.channels) for t in tables):
    raise ValueError("concat: tables of different image sizes or channels")
  return ImageTable(ConcatReader(tables), None, first.size, first.channels)


def missing_files(paths: Sequence[str]) -> List[int]:
  """Positions of ``paths`` that are not files."""
  return [i for i, p in enumerate(paths) if not os.path.isfile(p)]


def first_channels(table: ImageTable, channels: int) -> int:
  """``channels`` if set (1 or 3), else the native channel count of the table's first image
  (every image is converted to it: streaming does not open each file up front)."""
  if channels or not len(table):
    return channels or 3
  return images.channels_of(table.reader.mode(table.rows[0]))


def streaming(config) -> bool:
  """Whether ``config`` streams its images (``input_pipeline=stream``)."""
  return config.input_pipeline == "stream"


def load_items(items: Sequence[Tuple[str, int]], config, key: str,
               reference=None) -> images.Decoded:
  """``(path, label)`` items as a source part: decoded into one array (``input_pipeline=memory``,
  :func:`images.read_images`) or an :class:`ImageTable` of the files (``stream``; nothing is
  decoded, but every listed file must exist: a missing one is an error naming it, or with
  ``skip_bad_images`` is left out and reported in ``skipped``). ``key``: the config key the
  files come from, for messages."""
  skip = bool(config.skip_bad_images)
  if not streaming(config):
    return images.read_images(items, size=int(config.image_size),
                              channels=int(config.image_channels), skip_bad=skip, key=key,
                              progress=bool(config.progress), reference=reference)
  paths = [p for p, _ in items]
  missing = set(missing_files(paths))
  if missing and not skip:
    first = paths[min(missing)]
    raise images.ImageError(f"{key}: image file {first} does not exist ({len(missing)} of "
                            f"{len(paths)} listed files are missing); set skip_bad_images=true "
                            f"to skip them")
  kept = np.asarray([i for i in range(len(paths)) if i not in missing], np.int64)
  if not len(kept):
    raise images.ImageError(f"{key}: none of the {len(paths)} listed image files exists")
  table = ImageTable(FileReader([paths[i] for i in kept]), None, int(config.image_size))
  channels = (reference[2] if reference is not None and not int(config.image_channels)
              else first_channels(table, int(config.image_channels)))
  table.channels = channels
  labels = np.asarray([items[i][1] for i in kept], np.int64)
  skipped = [(paths[i], "no such file") for i in sorted(missing)]
  return images.Decoded(table, labels, kept, skipped, (paths[kept[0]], table.shape[1:], channels))
