"""Atomic file writes: write to a temporary name, then rename onto the target.

A reader (or a run resumed after a kill) never sees half a file: the target holds either the
old content or the new one.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np


def atomic(path: str, write: Callable[[str], None]) -> None:
  """``write(tmp)`` then rename ``tmp`` onto ``path``."""
  root, ext = os.path.splitext(path)
  tmp = f"{root}.tmp{ext}"  # keep the extension: np.savez appends .npz unless it is there
  write(tmp)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  atomic(path, write)


def write_json(path: str, obj) -> None:
  """Atomic, indented JSON; creates the parent folder if needed."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_text(path, json.dumps(obj, indent=2))


def write_bytes(path: str, payload: bytes) -> None:
  def write(tmp):
    with open(tmp, "wb") as f:
      f.write(payload)
  atomic(path, write)


def save_npz(path: str, **arrays) -> None:
  atomic(path, lambda tmp: np.savez(tmp, **arrays))
