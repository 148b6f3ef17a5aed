"""``label_corrections``: a reviewed ``corrections.csv`` applied to the given labels of own data.

The file is what the review page exports (``python -m experiments.review``): an optional first
comment ``# workdir: PATH`` (the run that was reviewed), a header ``id,action,new_label`` and one
row per reviewed training sample, ``action`` one of :data:`ACTIONS`:

* ``keep``: the given label stays (counted as reviewed);
* ``relabel``: ``new_label`` (a class name, or a class index) replaces the given label;
* ``remove``: the sample leaves the training set.

Only given labels can be corrected (practitioner data, or research data with its given noisy
labels): the trusted set cannot be changed this way (its samples are not training samples, or,
with ``trusted_ids``, are refused). Every bad row (an id that is not a training sample, a label
that is not a class, a repeated id, an unknown action) is a one-line error naming the file and
line, raised while the data are built, before the run writes anything. :func:`apply` returns the
corrected source and the record that the run keeps as ``corrections_applied.json``.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from gdw_jax import fileio

ACTIONS = ("keep", "relabel", "remove")
HEADER = ["id", "action", "new_label"]
APPLIED = "corrections_applied.json"
WORKDIR_COMMENT = "# workdir:"


@dataclasses.dataclass
class Row:
  line: int
  id: str
  action: str
  label: Optional[int]  # relabel only


@dataclasses.dataclass
class Corrections:
  path: str
  rows: List[Row]
  source_workdir: Optional[str] = None  # the reviewed run, from the '# workdir:' comment


def _label(text: str, class_names: Sequence[str]) -> Optional[int]:
  """A class name, else an integer index in range; None if neither."""
  if text in class_names:
    return list(class_names).index(text)
  try:
    value = int(text)
  except ValueError:
    return None
  return value if 0 <= value < len(class_names) else None


def _row(where: str, line: int, cells: List[str], class_names, seen: Dict[str, int]) -> Row:
  if len(cells) == 2:
    cells = cells + [""]
  if len(cells) != 3:
    raise ValueError(f"{where} line {line}: expected 'id,action,new_label', got {cells}")
  rid, action, text = (c.strip() for c in cells)
  if action not in ACTIONS:
    raise ValueError(f"{where} line {line}: action {action!r} is not one of "
                     f"{', '.join(ACTIONS)}")
  if rid in seen:
    raise ValueError(f"{where} lists id {rid!r} twice (lines {seen[rid]} and {line})")
  seen[rid] = line
  if action != "relabel":
    if text:
      raise ValueError(f"{where} line {line}: {action} takes no new_label (got {text!r})")
    return Row(line, rid, action, None)
  label = _label(text, class_names)
  if label is None:
    shown = ", ".join(class_names[:20]) + (" ..." if len(class_names) > 20 else "")
    raise ValueError(f"{where} line {line}: new_label {text!r} is not a class ({shown}; or a "
                     f"class index 0..{len(class_names) - 1})")
  return Row(line, rid, action, label)


def read(path: str, class_names: Sequence[str]) -> Corrections:
  """Parse ``path`` (see the module docstring); errors name the file and line."""
  path = os.path.expanduser(path)
  where = f"label_corrections: {path}"
  if not os.path.isfile(path):
    raise ValueError(f"label_corrections: file {path} does not exist")
  out = Corrections(os.path.abspath(path), [])
  seen: Dict[str, int] = {}
  header = False
  with open(path, newline="", encoding="utf-8") as f:
    for line, cells in enumerate(csv.reader(f), start=1):
      if not cells or not "".join(cells).strip():
        continue
      if cells[0].startswith("#"):
        text = ",".join(cells)
        if text.startswith(WORKDIR_COMMENT) and out.source_workdir is None:
          out.source_workdir = text[len(WORKDIR_COMMENT):].strip()
        continue
      if not header:
        if [c.strip().lower() for c in cells] != HEADER:
          raise ValueError(f"{where} line {line}: the header must be {','.join(HEADER)}, got "
                           f"{','.join(cells)}")
        header = True
        continue
      out.rows.append(_row(where, line, cells, class_names, seen))
  if not header:
    raise ValueError(f"{where} has no header row {','.join(HEADER)}")
  return out


def _positions(corr: Corrections, ids: np.ndarray, trusted: Optional[np.ndarray]) -> List[int]:
  """Pool position of each row's id; an unknown or trusted id is an error naming the line."""
  position = {str(v): i for i, v in enumerate(ids)}
  trusted_set = set() if trusted is None else {int(t) for t in trusted}
  out = []
  for r in corr.rows:
    if r.id not in position:
      raise ValueError(f"label_corrections: {corr.path} line {r.line}: {r.id!r} is not the id "
                       f"of a training sample")
    if position[r.id] in trusted_set:
      raise ValueError(f"label_corrections: {corr.path} line {r.line}: {r.id!r} is in the "
                       f"trusted set (trusted_ids), which label_corrections cannot change")
    out.append(position[r.id])
  return out


def apply(config, src, ids: np.ndarray, trusted: Optional[np.ndarray]
          ) -> Tuple[Any, np.ndarray, Dict[str, Any]]:
  """``(source with corrected given labels, pool positions removed, record)`` of
  ``config.label_corrections`` on ``src`` (a :class:`~gdw_jax.data.sources.Source` whose pool
  has these ``ids``; ``trusted``: pool positions of ``trusted_ids``)."""
  if src.y_pool_noisy is None and src.truth_known:
    raise ValueError(f"label_corrections: the {src.name} labels are the truth here (clean or "
                     f"research labels, not given ones); corrections apply to given labels")
  names = list(src.class_names or [str(c) for c in range(src.num_classes)])
  corr = read(config.label_corrections, names)
  positions = _positions(corr, ids, trusted)
  given = np.array(src.y_pool if src.y_pool_noisy is None else src.y_pool_noisy, np.int64)
  relabelled, removed, kept = [], [], 0
  for r, pos in zip(corr.rows, positions):
    if r.action == "remove":
      removed.append(r.id)
    elif r.action == "relabel" and r.label != given[pos]:
      relabelled.append({"id": r.id, "from": names[given[pos]], "to": names[r.label]})
      given[pos] = r.label
    else:  # keep, or a relabel to the label it has
      kept += 1
  src = (src._replace(y_pool=given) if src.y_pool_noisy is None
         else src._replace(y_pool_noisy=given))
  drop = np.asarray(sorted(p for r, p in zip(corr.rows, positions) if r.action == "remove"),
                    np.int64)
  record = {"file": corr.path, "source_workdir": corr.source_workdir,
            "rows": len(corr.rows), "num_relabelled": len(relabelled),
            "num_removed": len(removed), "num_kept": kept,
            "num_changed": len(relabelled) + len(removed),
            "relabelled": relabelled, "removed": removed}
  return src, drop, record


def write(path: str, rows: Sequence[Tuple[str, str, str]],
          workdir: Optional[str] = None) -> None:
  """Write ``(id, action, new_label)`` rows as a corrections file (atomically), after the
  ``# workdir:`` line when the reviewed run is known."""
  buf = io.StringIO()
  if workdir:
    buf.write(f"{WORKDIR_COMMENT} {str(workdir).replace(chr(10), ' ').replace(chr(13), ' ')}\n")
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(HEADER)
  for row in rows:
    if row[1] not in ACTIONS:
      raise ValueError(f"unknown action {row[1]!r} for id {row[0]!r}")
    w.writerow(row)
  fileio.write_bytes(path, buf.getvalue().encode("utf-8"))


def summary(record: Dict[str, Any]) -> Dict[str, Any]:
  """The record without its per-sample lists (what data.json says)."""
  return {k: v for k, v in record.items() if k not in ("relabelled", "removed")}
