"""Atomic file writes: write to a temporary name, then rename onto the target.

A reader (or a run resumed after a kill) never sees half a file: the target holds either the
old content or the new one. A write that fails (disk full, a read-only workdir) leaves the target
as it was, removes its temporary file, and raises :class:`WriteError` naming the target; the
command line stops with exit status 4 (``docs/scaling.md``).
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Callable

import numpy as np


class WriteError(OSError):
  """A file of the run could not be written (its message names the path and the reason)."""


def reason(e: BaseException) -> str:
  """An error's reason on one line (an OSError's ``strerror`` without its path)."""
  text = getattr(e, "strerror", None) or str(e) or type(e).__name__
  return " ".join(str(text).split())


@contextlib.contextmanager
def writing(path: str):
  """Turn an ``OSError`` inside the block into a :class:`WriteError` naming ``path``."""
  try:
    yield
  except WriteError:
    raise
  except OSError as e:
    error = WriteError(f"cannot write {path}: {reason(e)}")
    error.errno = e.errno
    raise error from e


def makedirs(path: str) -> None:
  with writing(path):
    os.makedirs(path, exist_ok=True)


def atomic(path: str, write: Callable[[str], None]) -> None:
  """``write(tmp)`` then rename ``tmp`` onto ``path``; on failure ``path`` is untouched."""
  root, ext = os.path.splitext(path)
  tmp = f"{root}.tmp{ext}"  # keep the extension: np.savez appends .npz unless it is there
  with writing(path):
    try:
      write(tmp)
      os.replace(tmp, path)
    except BaseException:
      if os.path.isfile(tmp):
        os.remove(tmp)
      raise


def write_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  atomic(path, write)


def write_json(path: str, obj) -> None:
  """Atomic, indented JSON; creates the parent folder if needed."""
  makedirs(os.path.dirname(os.path.abspath(path)))
  write_text(path, json.dumps(obj, indent=2))


def write_bytes(path: str, payload: bytes) -> None:
  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(payload)
  atomic(path, write)


def save_npz(path: str, **arrays) -> None:
  atomic(path, lambda tmp: np.savez(tmp, **arrays))
