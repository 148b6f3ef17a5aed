"""Label Studio for teams: the most suspicious samples as import tasks, and its export back.

:func:`tasks` turns the first rows of a review table (:func:`gdw_jax.analysis.review.review_table`)
into tasks of Label Studio's JSON import format (a ``data`` object and a ``predictions`` list,
labelstud.io/guide/predictions): ``data.image`` is the image's URL (a prefix plus the sample id,
by default Label Studio's local-files URL of the file), the other ``data`` keys say what the run
knew (id, given label, rank, p(given), score; shown as Data Manager columns) and the one
prediction is the model's suggestion, a ``choices`` result of the control ``label`` on the
object ``image``, with the method's score as its ``score`` (the lowest, most suspicious, sort
first in the Data Manager). :func:`labeling_config` is the project's matching labeling
interface: one choice per class plus :data:`REMOVE`.

:func:`corrections_rows` reads Label Studio's JSON export (a list of tasks, each with its
``annotations``; cancelled ones are skipped, the last remaining one counts) back into
``corrections.csv`` rows: the chosen class keeps or relabels the sample, :data:`REMOVE` removes
it; tasks nobody annotated are left out.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

FROM_NAME, TO_NAME = "label", "image"
REMOVE = "(remove from training)"


def local_files_prefix(image_root: str) -> str:
  """Label Studio's local-files URL of ``image_root`` for a document root of ``/``
  (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/``)."""
  return "/data/local-files/?d=" + quote(os.path.abspath(image_root).lstrip("/") + "/")


def tasks(table: Dict[str, Any], top: int, image_prefix: str,
          model_version: str = "gdw_jax") -> List[Dict[str, Any]]:
  """The first ``top`` rows of ``table`` as Label Studio import tasks."""
  names = table["classes"]
  out = []
  for i in range(min(top, len(table["id"]))):
    rid = table["id"][i]
    out.append({
        "data": {"image": image_prefix + quote(rid), "id": rid, "rank": table["rank"][i],
                 "given_label": names[table["given"][i]], "p_given": table["p"][i],
                 "score": table["score"][i], "workdir": table["workdir"]},
        "predictions": [{
            "model_version": model_version,
            "score": table["score"][i],
            "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                        "value": {"choices": [names[table["pred"][i]]]}}],
        }],
    })
  return out


def labeling_config(class_names: Sequence[str]) -> str:
  """The labeling interface the tasks need: the image, the given label, one choice a class."""
  choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in
                      list(class_names) + [REMOVE])
  return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n'
          f'  <Header value="Given label"/>\n  <Text name="given_label" value="$given_label"/>\n'
          f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single">\n'
          f"{choices}\n  </Choices>\n</View>\n")


def _choice(task: Dict[str, Any], where: str) -> Optional[str]:
  """The class chosen in the task's last annotation that was not cancelled (None: none)."""
  done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
  if not done:
    return None
  for item in done[-1].get("result") or []:
    if item.get("type") == "choices" and item.get("from_name") == FROM_NAME:
      picked = (item.get("value") or {}).get("choices") or []
      if len(picked) != 1:
        raise ValueError(f"{where}: expected one choice, got {picked}")
      return str(picked[0])
  return None


def corrections_rows(export: Any, class_names: Sequence[str], path: str = "export"
                     ) -> Tuple[List[Tuple[str, str, str]], Optional[str]]:
  """``([(id, action, new_label)], workdir)`` of a Label Studio JSON export (see the module
  docstring); errors name the file and task."""
  if not isinstance(export, list):
    raise ValueError(f"{path}: a Label Studio JSON export is a list of tasks, got "
                     f"{type(export).__name__}")
  rows, workdir = [], None
  for k, task in enumerate(export):
    where = f"{path} task {k} (id {task.get('id', '?')})" if isinstance(task, dict) \
        else f"{path} task {k}"
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict) or "id" not in data or "given_label" not in data:
      raise ValueError(f"{where}: no data.id / data.given_label (not a task of "
                       f"experiments.review --label-studio)")
    workdir = workdir or data.get("workdir")
    choice = _choice(task, where)
    if choice is None:
      continue
    if choice == REMOVE:
      rows.append((str(data["id"]), "remove", ""))
    elif choice not in class_names:
      raise ValueError(f"{where}: choice {choice!r} is not a class of the run")
    elif choice == str(data["given_label"]):
      rows.append((str(data["id"]), "keep", ""))
    else:
      rows.append((str(data["id"]), "relabel", choice))
  return rows, workdir


def read_export(path: str) -> Any:
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise ValueError(f"{path} is not JSON ({e})") from None
