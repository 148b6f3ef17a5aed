"""The practitioner's loop: a trained run's review page (experiments.review), its data and
thumbnails, and a workdir that the page's writer only reads."""
import json
import os
import re

import numpy as np
import pytest

from configs import own_data
from gdw_jax import train
from gdw_jax.analysis import label_issues, review, workdir as workdir_lib

EPOCHS = 4  # enough for a ranking with the wrong labels on top; the loop, not accuracy, is tested


def own_config(root, **overrides):
  """configs/own_data.py on the digits folder example, short and quiet."""
  c = own_data.get_config(f"root={root},epochs={EPOCHS}")
  c.progress, c.checkpoint, c.report = False, False, False
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
  """The digits folder example (1197 training images, 36% wrong) and a 4-epoch GDW run on it."""
  from experiments import digits_folder
  base = tmp_path_factory.mktemp("review")
  root = base / "digits_folder"
  digits_folder.write(str(root))
  work = base / "run"
  train.train_and_evaluate(own_config(root), str(work))
  return root, work


def page_data_from_text(text):
  """The JSON a page carries."""
  m = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', text, re.S)
  return json.loads(m.group(1))


def page_data(path):
  return page_data_from_text(open(path, encoding="utf-8").read())


def snapshot(folder):
  return {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in os.listdir(folder)}


def test_review_page_holds_every_sample_ranked_with_thumbnails(folder_run):
  from experiments import review as cli
  _, work = folder_run
  before = snapshot(work)
  assert cli.main([str(work)]) == 0
  after = snapshot(work)
  assert set(after) - set(before) == {"review.html"}  # the workdir is only read
  assert all(after[p] == before[p] for p in before)
  data = page_data(work / "review.html")
  cols = label_issues.read_csv(work / "label_issues.csv")
  assert data["id"] == cols["id"].tolist() and len(data["id"]) == data["total"] == 1197
  assert data["given"] == cols["given_label"].tolist()
  assert data["pred"] == cols["predicted_label"].tolist()
  np.testing.assert_allclose(data["p"], cols["p_given"], rtol=1e-5)
  assert data["classes"] == [str(c) for c in range(10)] and data["label_score"]
  assert all(u.startswith("data:image/png;base64,") for u in data["img"])
  assert len(set(data["img"][:50])) == 50
  # GDW's class-level weights, row by row the sample's W* of sample_weights.npz.
  run = workdir_lib.load_run(str(work))
  row = {i: k for k, i in enumerate(run.labels["ids"])}
  first = data["id"][0]
  np.testing.assert_allclose(data["cw"][0], run.weights["final_weights"][row[first]], rtol=1e-5)
  assert data["workdir"] == os.path.abspath(work) and data["key"].startswith("gdw-review:")


def test_review_top_and_no_images_and_errors(folder_run, tmp_path, capsys):
  from experiments import review as cli
  _, work = folder_run
  out = tmp_path / "top.html"
  assert cli.main([str(work), "--top", "20", "--no-images", "--out", str(out)]) == 0
  data = page_data(out)
  assert len(data["id"]) == 20 and data["total"] == 1197 and data["img"] is None
  assert cli.main([str(tmp_path)]) == 2
  assert "no readable label_issues.csv" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / "review.html")


def test_page_text_cannot_be_ended_by_an_id():
  table = {"workdir": "/w", "title": "t", "classes": ["a", "b"], "label_score": "probability",
           "rank": [1], "id": ["x</script><b>"], "given": [0], "pred": [1], "p": [0.1],
           "score": [0.1], "weight": None, "cw": None, "total": 1}
  text = review.render(table)
  assert "x</script>" not in text and text.count("</script>") == 2
  assert page_data_from_text(text)["id"] == ["x</script><b>"]
  with pytest.raises(ValueError, match="2 images for 1 rows"):
    review.render(table, ["data:,", "data:,"])


def test_thumbnail_of_float_and_large_images_is_a_small_png():
  import base64
  import io
  from PIL import Image
  big = np.random.default_rng(0).random((200, 100, 3)).astype(np.float32)
  uri = review.thumbnail(big, 64)
  img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
  assert img.size == (32, 64) and img.mode == "RGB"
  small = review.thumbnail(np.zeros((8, 8, 1), np.uint8))
  assert Image.open(io.BytesIO(base64.b64decode(small.split(",", 1)[1]))).size == (8, 8)
