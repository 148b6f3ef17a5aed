"""A review page of a run's label issues: one self-contained HTML file, opened from disk.

:func:`review_table` gathers what the workdir already holds (``label_issues.csv`` in rank order,
class names from ``data.json``, GDW's class-level weights ``W*`` from ``sample_weights.npz``
aligned by the ids of ``labels.npz``); :func:`write_page` puts it, with one thumbnail per row
(:func:`thumbnail`: a PNG data URI), into ``review_template.html`` beside this module and writes
the page atomically. Nothing else is read or written: the page needs no server and no network.

The page (plain JavaScript, no library) shows the rows a page at a time, so only the shown
thumbnails are decoded even with 50,000 rows; it filters (given class, predicted class, score
range, decision), sorts by any column, takes one decision per sample by mouse or keyboard, keeps
the decisions in the browser's local storage (keyed by workdir and run) and exports them as
``corrections.csv``: ``id,action,new_label`` rows (:data:`gdw_jax.data.corrections.ACTIONS`), after a first comment line
``# workdir: PATH`` naming the run reviewed (:func:`gdw_jax.data.corrections.read` skips it and
reports the run's accuracy beside the retrained one's).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from gdw_jax import fileio

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "review_template.html")
PLACEHOLDER = "/*__REVIEW_DATA__*/"
FILE = "review.html"


def class_names_of(run) -> Optional[List[str]]:
  """The run's class names (``data.json``), else None."""
  names = (run.data or {}).get("class_names")
  return None if names is None else [str(n) for n in names]


def _class_weight_rows(run, ids: np.ndarray) -> Optional[np.ndarray]:
  """``[n, K]`` GDW class-level weights ``W*`` of the last epoch for these ids (rank order),
  or None when the method's weights are per sample only or the files do not line up."""
  fw = (run.weights or {}).get("final_weights")
  train_ids = (run.labels or {}).get("ids")
  if fw is None or train_ids is None or fw.ndim != 2 or fw.shape[1] < 2:
    return None
  if fw.shape[0] != len(train_ids):
    return None
  row = {str(i): k for k, i in enumerate(train_ids)}
  if any(i not in row for i in ids):
    return None
  return np.asarray(fw, np.float64)[[row[i] for i in ids]]


def review_table(run, top: Optional[int] = None) -> Dict[str, Any]:
  """The page's data (no images): columns in rank order, at most ``top`` rows."""
  cols = run.label_issues
  if cols is None:
    seeds = sorted(d for d in os.listdir(run.workdir) if d.startswith("seed_"))
    hint = (f"; a launch of several seeds has one per run: give {run.workdir}/{seeds[0]}"
            if seeds else "")
    raise ValueError(f"{run.workdir} has no readable label_issues.csv (runs write it when they "
                     f"finish){hint}")
  n = len(cols["rank"]) if top is None else min(top, len(cols["rank"]))
  ids = cols["id"][:n]
  names = class_names_of(run)
  k = run.num_classes or int(max(cols["given_label"].max(), cols["predicted_label"].max())) + 1
  cw = _class_weight_rows(run, ids)

  def numbers(v):
    return [None if not np.isfinite(x) else float(f"{x:.6g}") for x in np.asarray(v)[:n]]

  return {
      "workdir": os.path.abspath(run.workdir), "title": run.title,
      "classes": names or [str(c) for c in range(k)],
      "label_score": (run.final or {}).get("label_score"),
      "rank": cols["rank"][:n].tolist(), "id": [str(i) for i in ids],
      "given": cols["given_label"][:n].tolist(), "pred": cols["predicted_label"][:n].tolist(),
      "p": numbers(cols["p_given"]), "score": numbers(cols["score"]),
      "weight": numbers(cols["weight"]) if "weight" in cols else None,
      "cw": None if cw is None else [numbers(r) for r in cw],
      "total": int(len(cols["rank"])),
  }


def _as_uint8(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.uint8:
    lo, hi = float(np.min(x)), float(np.max(x))
    x = np.round(255.0 * (x.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0))
    x = x.astype(np.uint8)
  return x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x


def thumbnail(image: np.ndarray, size: int = 64) -> str:
  """A PNG data URI of ``image`` (``[H, W, C]`` or ``[H, W]``) no larger than ``size`` pixels a
  side (small images are kept as they are: the page scales them up)."""
  img = Image.fromarray(_as_uint8(image))
  if max(img.size) > size:
    img.thumbnail((size, size))
  buf = io.BytesIO()
  img.save(buf, format="PNG", optimize=True)
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def storage_key(table: Dict[str, Any]) -> str:
  """The local-storage key of a page's decisions: the workdir and its ranked ids (a rerun
  into the same workdir with another ranking gets a fresh set)."""
  h = hashlib.sha1(table["workdir"].encode())
  h.update("\n".join(table["id"]).encode())
  return "gdw-review:" + h.hexdigest()[:16]


def render(table: Dict[str, Any], images: Optional[Sequence[str]] = None) -> str:
  """The HTML text of the page: the template with ``table`` (and ``images``, one data URI per
  row, or None) inlined as JSON."""
  data = dict(table, key=storage_key(table), img=list(images) if images is not None else None)
  if images is not None and len(images) != len(table["id"]):
    raise ValueError(f"{len(images)} images for {len(table['id'])} rows")
  # ASCII JSON (non-ASCII escaped); "</" escaped so that no id can end the script element.
  text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
  with open(TEMPLATE, encoding="utf-8") as f:
    template = f.read()
  if PLACEHOLDER not in template:
    raise ValueError(f"{TEMPLATE} lacks the placeholder {PLACEHOLDER}")
  return template.replace(PLACEHOLDER, text, 1)


def write_page(path: str, table: Dict[str, Any], images: Optional[Sequence[str]] = None) -> str:
  """Write the page atomically (a temporary file renamed onto ``path``); returns ``path``."""
  fileio.write_bytes(path, render(table, images).encode("utf-8"))
  return path
