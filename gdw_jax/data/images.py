"""Image files to arrays: the reader every file-based source shares.

:func:`read_images` turns a list of ``(path, label)`` pairs into one uint8 ``[n, H, W, C]`` array:
each file is decoded with Pillow, converted to 1 (grayscale) or 3 (RGB) channels and resized to
a fixed ``(H, W)`` (bilinear). A file Pillow cannot read is an error naming it, or, with
``skip_bad``, left out and reported (``Decoded.skipped``). Images whose channel counts or sizes
differ are an error unless a fixed ``channels`` / ``size`` converts them all.

:func:`list_class_folder` lists the usual ``root/<class>/<file>`` layout (classes sorted by
name, files by path) and :func:`read_label_csv` reads ``path,label`` rows that override the
folder's labels (noisy-label datasets ship their labels this way). Sources built on these
(:mod:`gdw_jax.data.folder`; lists such as Clothing1M's) only decide which files and labels.

Every error is a :class:`ImageError` (a ``ValueError``, so the trainer reports it as one line
before anything is written) whose message starts with the config key it concerns.
"""
from __future__ import annotations

import concurrent.futures
import csv
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from gdw_jax.data import partial

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# Decoding threads: Pillow releases the GIL while it decodes, so a few threads help.
MAX_WORKERS = 8


class ImageError(ValueError):
  """A file or folder that cannot be used as image data (the message names it)."""


class Decoded(NamedTuple):
  x: np.ndarray                     # [n, H, W, C] uint8, in the order of the items kept
  labels: np.ndarray                # [n] int64
  kept: np.ndarray                  # [n] positions in the input list of the items kept
  skipped: List[Tuple[str, str]]    # (path, reason) of each unreadable file left out
  reference: Tuple[str, Tuple[int, int, int], int]  # (path, shape, native channels) of the first


def channels_of(mode: str) -> int:
  """1 for Pillow's grayscale modes, 3 for everything else (alpha is dropped)."""
  return 1 if mode in GRAYSCALE_MODES else 3


def _size_tuple(size: Union[int, Sequence[int], None]) -> Optional[Tuple[int, int]]:
  if not size:
    return None
  if isinstance(size, int):
    return (size, size)
  h, w = size
  return (int(h), int(w))


def decode(path: str, size: Optional[Tuple[int, int]] = None,
           channels: int = 0) -> Tuple[np.ndarray, int]:
  """``(image, native_channels)``: ``[H, W, C]`` uint8 with ``C = channels`` (0: the file's own,
  1 or 3), resized to ``size = (H, W)`` if given. Raises :class:`ImageError` naming the file."""
  try:
    with Image.open(path) as im:
      native = channels_of(im.mode)
      c = channels or native
      im = im.convert("L" if c == 1 else "RGB")  # decodes the whole file (truncation shows here)
      if size is not None and im.size != (size[1], size[0]):
        im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
      a = np.asarray(im, np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
          Image.DecompressionBombError) as e:
    raise ImageError(f"cannot read image {path} ({type(e).__name__}: {e})") from None
  return (a[..., None] if c == 1 else a), native


def read_images(items: Sequence[Tuple[str, int]], *, size=None, channels: int = 0,
                skip_bad: bool = False, key: str = "images", progress: bool = True,
                reference: Optional[Tuple[str, Tuple[int, int, int], int]] = None) -> Decoded:
  """Decode ``items`` (``(path, label)`` pairs) into one uint8 array.

  ``size``: ``H`` (square) or ``(H, W)``; 0 / None keeps each file's size (then all must
  agree). ``channels``: 1 or 3 converts every image; 0 keeps each file's own (then all must
  agree). ``skip_bad``: leave out unreadable files (listed in ``skipped``) instead of raising.
  ``key``: the config key the files come from, for messages. ``reference``: ``(path, shape,
  native_channels)`` of an image decoded earlier (another split) that these must agree with.
  """
  if channels not in (0, 1, 3):
    raise ImageError(f"image_channels must be 0 (as stored), 1 or 3, got {channels}")
  size = _size_tuple(size)
  paths = [p for p, _ in items]
  workers = min(MAX_WORKERS, os.cpu_count() or 1, max(1, len(paths)))

  def one(path):
    try:
      return decode(path, size, channels)
    except ImageError as e:
      return e

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    results = list(tqdm(pool.map(one, paths), total=len(paths), disable=not progress,
                        desc=f"reading {key}", unit="img", leave=False))
  kept, arrays, skipped = [], [], []
  ref = reference
  for i, r in enumerate(results):
    if isinstance(r, ImageError):
      if not skip_bad:
        raise ImageError(f"{key}: {r}; set skip_bad_images=true to skip unreadable files")
      skipped.append((paths[i], str(r)))
      continue
    image, native = r
    if ref is None:
      ref = (paths[i], image.shape, native)
    _check_same(key, ref, paths[i], image.shape, native, channels, size)
    kept.append(i)
    arrays.append(image)
  if not arrays:
    raise ImageError(f"{key}: none of the {len(paths)} image files could be read"
                     + (f" (first: {skipped[0][1]})" if skipped else ""))
  labels = np.asarray([items[i][1] for i in kept], np.int64)
  return Decoded(np.stack(arrays), labels, np.asarray(kept, np.int64), skipped, ref)


def _check_same(key, ref, path, shape, native, channels, size) -> None:
  ref_path, ref_shape, ref_native = ref
  if not channels and native != ref_native:
    kinds = {1: "grayscale (1 channel)", 3: "colour (3 channels)"}
    raise ImageError(f"{key}: images of mixed channel counts: {path} is {kinds[native]} but "
                     f"{ref_path} is {kinds[ref_native]}; set image_channels=1 or 3 to convert "
                     f"every image")
  if size is None and shape[:2] != ref_shape[:2]:
    raise ImageError(f"{key}: images of different sizes: {path} is {shape[0]}x{shape[1]} but "
                     f"{ref_path} is {ref_shape[0]}x{ref_shape[1]}; set image_size to resize "
                     f"every image")


def _image_files(folder: str) -> List[str]:
  """Image files under ``folder`` (any depth, hidden entries skipped), sorted by path."""
  out = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    out.extend(os.path.join(dirpath, f) for f in filenames
               if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
  return sorted(out)


def list_class_folder(root: str, key: str, class_names: Optional[Sequence[str]] = None
                      ) -> Tuple[List[Tuple[str, int]], List[str], Tuple[str, ...]]:
  """``(items, relative_paths, class_names)`` of an image folder ``root/<class>/<files>``.

  Without ``class_names`` the classes are the subfolders, sorted by name. With them (the
  training classes, for a trusted or test folder) every subfolder must be one of them; a
  training class may be absent. Relative paths use ``/`` whatever the platform.
  """
  root = os.path.expanduser(root)
  if not os.path.exists(root):
    raise ImageError(f"{key}: folder {root} does not exist")
  if not os.path.isdir(root):
    raise ImageError(f"{key}: {root} is not a folder")
  folders = sorted(d for d in os.listdir(root)
                   if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
  if not folders:
    raise ImageError(f"{key}: folder {root} has no class subfolders (expected "
                     f"{root}/<class>/<image files>)")
  names = tuple(folders) if class_names is None else tuple(class_names)
  index = {n: i for i, n in enumerate(names)}
  items, rel = [], []
  for name in folders:
    if name not in index:
      raise ImageError(f"{key}: class folder {os.path.join(root, name)} is not a training class "
                       f"(training classes: {', '.join(names)})")
    files = _image_files(os.path.join(root, name))
    if not files:
      raise ImageError(f"{key}: class folder {os.path.join(root, name)} has no image files "
                       f"({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    items.extend((f, index[name]) for f in files)
    rel.extend(os.path.relpath(f, root).replace(os.sep, "/") for f in files)
  return items, rel, names


def read_label_csv(path: str, class_names: Sequence[str], key: str = "label_csv",
                   candidates: Optional[Dict[str, Any]] = None) -> Dict[str, Tuple[int, int]]:
  """``{relative_path: (label, line)}`` from a CSV of ``path,label`` rows.

  An optional first row ``path,label`` is a header. A label is a class name, or else an integer
  class index in ``[0, len(class_names))``. Paths are relative to the image root (``./`` and
  ``\\`` are normalised). A path listed twice, a malformed row or an unknown label is an error
  naming the file and line.

  A third column ``candidates`` (header ``path,label,candidates``) gives each row's candidate
  set, classes separated by ``|`` (partial labels, :mod:`gdw_jax.data.partial`): the file's
  first row decides (2 or 3 columns); the sets go into ``candidates`` (``{relative_path: bool
  [C]}``) when it is given, else a 3-column file is an error.
  """
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ImageError(f"{key}: file {path} does not exist")
  index = {n: i for i, n in enumerate(class_names)}
  out: Dict[str, Tuple[int, int]] = {}
  width = label_csv_width(path) if candidates is not None else 2
  expected = ",".join(["path", "label", "candidates"][:width])
  with open(path, newline="", encoding="utf-8") as f:
    for line, row in enumerate(csv.reader(f), start=1):
      if not row or (len(row) == 1 and not row[0].strip()):
        continue
      if line == 1 and [c.strip().lower() for c in row] == expected.split(","):
        continue
      if len(row) != width:
        raise ImageError(f"{key}: {path} line {line}: expected '{expected}', got {row}")
      rel = os.path.normpath(row[0].strip()).replace("\\", "/").replace(os.sep, "/")
      out_label = _csv_label(row[1].strip(), index, len(class_names))
      if out_label is None:
        raise ImageError(f"{key}: {path} line {line}: label {row[1].strip()!r} is neither a "
                         f"class name ({', '.join(class_names)}) nor an integer in "
                         f"[0, {len(class_names)})")
      if rel in out:
        raise ImageError(f"{key}: {path} lists {rel} twice (lines {out[rel][1]} and {line})")
      out[rel] = (out_label, line)
      if width == 3:
        where = f"{key}: {path} line {line}"
        try:
          cand = partial.parse_candidate_list(row[2], index, len(class_names), where)
        except ValueError as e:
          raise ImageError(str(e)) from None
        if not cand[out_label]:
          raise ImageError(f"{where}: label {row[1].strip()!r} is not among its candidates "
                           f"{row[2].strip()!r}")
        candidates[rel] = cand
  return out


def label_csv_width(path: str) -> int:
  """3 when the first non-empty row of the CSV ``path`` has three columns (a ``candidates``
  column), else 2."""
  with open(os.path.expanduser(path), newline="", encoding="utf-8") as f:
    for row in csv.reader(f):
      if row and any(c.strip() for c in row):
        return 3 if len(row) == 3 else 2
  return 2


def _csv_label(text: str, index: Dict[str, int], k: int) -> Optional[int]:
  if text in index:
    return index[text]
  try:
    value = int(text)
  except ValueError:
    return None
  return value if 0 <= value < k else None
