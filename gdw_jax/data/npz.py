"""``dataset=npz``: a user's arrays in one ``.npz`` file (``data_path``).

Keys (``np.savez(path, x_train=..., y_train=..., ...)``):

* ``x_train`` ``[n, H, W, C]`` uint8 or float, any ``H, W, C``; ``y_train`` ``[n]``: the labels as
  given (integers ``0..K-1``). Both required.
* optional: ``y_train_true`` (known clean labels: research mode, ``y_train`` are then the noisy
  ones), ``x_meta`` / ``y_meta`` (a trusted set), ``x_test`` / ``y_test``, ``ids_train`` (one str
  or int id per training image; default: its position), ``class_names`` (``K`` names),
  ``candidates`` ``[n, K]`` bool or 0/1 (candidate sets, partial labels: each row must contain
  ``y_train``, and ``y_train_true`` where given; :mod:`gdw_jax.data.partial`).

Any other key is an error (a typo such as ``x_val`` would otherwise be ignored silently). The file
is read with ``allow_pickle=False``: ids and names must be stored as str / int arrays, not
object arrays. Modes and checks: :mod:`gdw_jax.data.own`.
"""
from __future__ import annotations

import os

import numpy as np

from gdw_jax.data import own, sources

KEYS = ("x_train", "y_train", "y_train_true", "x_meta", "y_meta", "x_test", "y_test",
        "ids_train", "class_names", "candidates")
PAIRS = (("x_meta", "y_meta"), ("x_test", "y_test"))


def read(path: str) -> dict:
  """The arrays of ``path`` (every known key that is present), with file-level checks."""
  where = f"data_path {path}"
  if not path:
    raise ValueError("dataset=npz needs data_path=FILE.npz (docs/own_data.md)")
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise ValueError(f"{where} does not exist")
  try:
    with np.load(path, allow_pickle=False) as z:
      unknown = [k for k in z.files if k not in KEYS]
      if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; known keys: "
                         f"{', '.join(KEYS)}")
      arrays = {k: z[k] for k in z.files}
  except ValueError as e:
    if "allow_pickle" in str(e) or "Object arrays" in str(e):
      raise ValueError(f"{where} holds an object array; store ids and class names as str "
                       f"arrays (np.array(ids, dtype=str))") from None
    if str(e).startswith(where):
      raise
    raise ValueError(f"{where} is not a readable .npz file ({e})") from None
  except (OSError, EOFError) as e:
    raise ValueError(f"{where} is not a readable .npz file ({type(e).__name__}: {e})") from None
  for key in ("x_train", "y_train"):
    if key not in arrays:
      raise ValueError(f"{where} has no {key} (keys: {', '.join(sorted(arrays)) or 'none'}); "
                       f"x_train [n, H, W, C] and y_train [n] are required")
  for a, b in PAIRS:
    if (a in arrays) != (b in arrays):
      have, lack = (a, b) if a in arrays else (b, a)
      raise ValueError(f"{where} has {have} but no {lack}: give both or neither")
  return arrays


@sources.register("npz")
def npz(config) -> sources.Source:
  """A user's arrays from ``config.data_path`` (see the module docstring)."""
  path = config.data_path
  arrays = read(path)
  names = arrays.get("class_names")
  if names is not None and names.ndim != 1:
    raise ValueError(f"data_path {path}: class_names must be 1-D, got shape {names.shape}")
  return own.make_source(
      config, "npz", arrays["x_train"], arrays["y_train"], y_true=arrays.get("y_train_true"),
      x_meta=arrays.get("x_meta"), y_meta=arrays.get("y_meta"), x_test=arrays.get("x_test"),
      y_test=arrays.get("y_test"), ids=arrays.get("ids_train"),
      class_names=None if names is None else names.astype(str).tolist(),
      candidates=arrays.get("candidates"), where=f"data_path {path}", info={"data_path": os.path.abspath(os.path.expanduser(path))})
