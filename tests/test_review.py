"""The practitioner's loop: a trained run's review page (experiments.review), its data and
thumbnails, and a workdir that the page's writer only reads."""
import json
import os
import pathlib
import re
import shutil
import time

import numpy as np
import pytest

from configs import own_data
from gdw_jax import train, validation
from gdw_jax.analysis import label_issues, review, workdir as workdir_lib
from gdw_jax.validation import ConfigError

EPOCHS = 4  # enough for a ranking with the wrong labels on top; the loop, not accuracy, is tested


def own_config(root, method="gdw", epochs=EPOCHS, **overrides):
  """configs/own_data.py on the digits folder example, short and quiet."""
  c = own_data.get_config(f"root={root},method={method},epochs={epochs}")
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


# ---------------------------------------------------------------------------------------------
# label_corrections: a reviewed corrections.csv applied to the given labels


def write_corrections(path, rows, workdir=None):
  lines = ([f"# workdir: {workdir}"] if workdir else []) + ["id,action,new_label"] + rows
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_corrections_relabel_and_remove_exactly_the_rows_given(folder_run, tmp_path):
  root, work = folder_run
  cols = label_issues.read_csv(work / "label_issues.csv")
  ids, given = cols["id"], cols["given_label"]
  other = (given[0] + 1) % 10
  csv_path = write_corrections(tmp_path / "c.csv", [
      f"{ids[0]},relabel,{other}", f"{ids[1]},remove,", f"{ids[2]},keep,",
      f"{ids[3]},relabel,{given[3]}"], workdir=work)
  plain = validation.build_data(own_config(root))
  ds = validation.build_data(own_config(root, label_corrections=csv_path))
  assert ds.num_train == plain.num_train - 1 and ids[1] not in set(ds.train_ids)
  before = dict(zip(plain.train_ids, plain.y_train))
  after = dict(zip(ds.train_ids, ds.y_train))
  changed = {i for i in after if after[i] != before[i]}
  assert changed == {ids[0]} and after[ids[0]] == other
  rec = ds.label_corrections
  assert (rec["num_relabelled"], rec["num_removed"], rec["num_kept"], rec["rows"]) == (1, 1, 2, 4)
  assert rec["relabelled"] == [{"id": ids[0], "from": str(given[0]), "to": str(other)}]
  assert rec["removed"] == [ids[1]] and rec["source_workdir"] == str(work)
  assert ds.summary()["label_corrections"]["num_changed"] == 2
  np.testing.assert_array_equal(ds.y_meta, plain.y_meta)  # the trusted set is untouched


BAD = {
    "unknown id": (["nope.png,remove,"], "line 2: 'nope.png' is not the id of a training"),
    "not a class": (["{id},relabel,cat"], "line 2: new_label 'cat' is not a class"),
    "index out of range": (["{id},relabel,10"], "line 2: new_label '10' is not a class"),
    "repeated id": (["{id},keep,", "{id},remove,"], "lists id '{id}' twice (lines 2 and 3)"),
    "unknown action": (["{id},fix,3"], "line 2: action 'fix' is not one of keep, relabel"),
    "label on remove": (["{id},remove,3"], "line 2: remove takes no new_label"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_corrections_are_one_line_errors_before_anything_is_written(folder_run, tmp_path,
                                                                        case):
  root, work = folder_run
  first = label_issues.read_csv(work / "label_issues.csv")["id"][0]
  rows, message = BAD[case]
  csv_path = write_corrections(tmp_path / "c.csv", [r.format(id=first) for r in rows])
  out = tmp_path / "run"
  with pytest.raises(ConfigError) as e:
    train.train_and_evaluate(own_config(root, label_corrections=csv_path), str(out))
  assert str(e.value).startswith(f"label_corrections: {csv_path} ")
  assert message.format(id=first) in str(e.value) and "\n" not in str(e.value)
  assert not out.exists()


def test_corrections_cannot_touch_the_trusted_set_or_clean_labels(folder_run, tmp_path):
  root, work = folder_run
  trusted_id = label_issues.read_csv(work / "label_issues.csv")["id"][-1]
  (tmp_path / "trusted.txt").write_text(trusted_id + "\n")
  csv_path = write_corrections(tmp_path / "c.csv", [f"{trusted_id},remove,"])
  config = own_config(root, label_corrections=csv_path, meta_root="",
                      trusted_ids=str(tmp_path / "trusted.txt"),
                      allow_missing_meta_classes=True)
  with pytest.raises(ConfigError, match="is in the trusted set"):
    validation.build_data(config)
  with pytest.raises(ConfigError, match="corrections apply to given labels"):
    validation.build_data(own_config(root, label_corrections=csv_path, given_labels="clean",
                                     meta_root="", meta_per_class=2))
  with pytest.raises(ConfigError, match="label_corrections: file .*missing.csv does not exist"):
    validation.build_data(own_config(root, label_corrections=str(tmp_path / "missing.csv")))
  (tmp_path / "noheader.csv").write_text(f"{trusted_id},remove,\n")
  with pytest.raises(ConfigError, match="line 1: the header must be id,action,new_label"):
    validation.build_data(own_config(root, label_corrections=str(tmp_path / "noheader.csv")))


def test_retrain_records_the_corrections_and_reports_accuracy_before_and_after(folder_run,
                                                                              tmp_path):
  root, work = folder_run
  cols = label_issues.read_csv(work / "label_issues.csv")
  rows = [f"{i},relabel,{p}" for i, p in zip(cols["id"][:30], cols["predicted_label"][:30])]
  csv_path = write_corrections(tmp_path / "c.csv", rows + [f"{cols['id'][30]},remove,"],
                               workdir=work)
  out = tmp_path / "retrained"
  # A short ERM retrain: what is tested is the record and the report, not the method.
  final = train.train_and_evaluate(own_config(root, "erm", 2, label_corrections=csv_path,
                                              report=True), str(out))
  rec = json.loads((out / "corrections_applied.json").read_text())
  assert rec["num_changed"] == 31 and rec["num_removed"] == 1
  assert {r["id"] for r in rec["relabelled"]} == set(cols["id"][:30])
  labels = np.load(out / "labels.npz")
  assert len(labels["ids"]) == 1196
  assert json.loads((out / "data.json").read_text())["label_corrections"]["num_relabelled"] == 30
  text = (out / "report.md").read_text()
  previous = json.loads((work / "final.json").read_text())
  assert "## Label corrections" in text and "**31 labels changed**" in text
  assert (f"| mean of the last 5 epochs | {previous['last5_acc']:.2f}% | "
          f"{final['last5_acc']:.2f}% |") in text


# ---------------------------------------------------------------------------------------------
# The page in a real browser: headless Chromium driven by selenium. Chromium and chromedriver are
# system packages (Debian: apt-get install -y chromium chromium-driver), which `.ci/run` installs.
# In CI (CI=true) a missing browser fails these tests; on a user's machine without one they are
# skipped with the line that installs it, so the README's test command passes on a clean machine
# with only pip. GDW_JAX_TEST_ARTIFACTS=DIR keeps the screenshot and timings there.

APT = "apt-get install -y chromium chromium-driver"


@pytest.fixture
def browser(tmp_path):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  found = {name: shutil.which(name) for name in ("chromium", "chromedriver")}
  missing = [name for name, path in found.items() if not path]
  if missing:
    why = f"the browser tests need {' and '.join(missing)} on PATH: {APT}"
    if os.environ.get("CI", "").lower() in ("1", "true"):
      pytest.fail(why)
    pytest.skip(why)
  downloads = tmp_path / "downloads"
  downloads.mkdir()
  options = webdriver.ChromeOptions()
  options.binary_location = found["chromium"]
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--window-size=1400,1000"):
    options.add_argument(arg)
  options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                            "download.prompt_for_download": False})
  driver = webdriver.Chrome(options=options, service=Service(found["chromedriver"]))
  driver.execute_cdp_cmd("Page.setDownloadBehavior",
                         {"behavior": "allow", "downloadPath": str(downloads)})
  driver.downloads = downloads
  yield driver
  driver.quit()


def artefact(path):
  """Copy ``path`` to $GDW_JAX_TEST_ARTIFACTS (if set): what a CI run keeps."""
  target = os.environ.get("GDW_JAX_TEST_ARTIFACTS")
  if target:
    os.makedirs(target, exist_ok=True)
    shutil.copy(path, target)


def open_page(driver, path):
  """Load the page from disk; seconds until its first rows were drawn."""
  from selenium.webdriver.support.ui import WebDriverWait
  start = time.perf_counter()
  driver.get(pathlib.Path(path).resolve().as_uri())
  WebDriverWait(driver, 60).until(
      lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
  return time.perf_counter() - start


def shown(driver, what="id"):
  return driver.execute_script(
      f"return Array.from(document.querySelectorAll('#body tr')).map(r => r.dataset.{what})")


def press(driver, *keys):
  from selenium.webdriver.common.action_chains import ActionChains
  for key in keys:
    ActionChains(driver).send_keys(key).perform()


def wait_for_file(path, timeout=20):
  end = time.time() + timeout
  while time.time() < end:
    if path.exists() and path.stat().st_size:
      return path.read_text()
    time.sleep(0.1)
  raise AssertionError(f"{path} was not downloaded")


def test_review_in_the_browser_decide_reload_export_retrain(folder_run, browser, tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import Select
  from experiments import review as cli
  root, work = folder_run
  page = tmp_path / "review.html"
  assert cli.main([str(work), "--out", str(page)]) == 0
  cols = label_issues.read_csv(work / "label_issues.csv")
  ids, given, pred = cols["id"].tolist(), cols["given_label"], cols["predicted_label"]
  open_page(browser, page)
  assert shown(browser) == ids[:50]  # most suspicious first
  assert browser.execute_script("return Array.from(document.images).filter("
                                "i => i.complete && i.naturalWidth > 0).length") == 50
  # Filter: given class of the top sample; the rows are that class's, still in rank order.
  g = int(given[0])
  Select(browser.find_element(By.ID, "f-given")).select_by_value(str(g))
  rows = [i for i, y in enumerate(given) if y == g]
  assert shown(browser) == [ids[i] for i in rows[:50]]
  # Keyboard: p (accept predicted), k, x, skip one, a digit, then x + undo on the next.
  other = next(c for c in range(10) if c not in (g, pred[rows[4]]))
  press(browser, "p", "k", "x", Keys.ARROW_DOWN, str(other), "x", Keys.ARROW_UP, "u")
  expected = {ids[rows[0]]: ("relabel", str(pred[rows[0]])) if pred[rows[0]] != g
              else ("keep", ""), ids[rows[1]]: ("keep", ""), ids[rows[2]]: ("remove", ""),
              ids[rows[4]]: ("relabel", str(other))}
  summary = browser.find_element(By.ID, "summary").text
  assert summary.startswith("reviewed 4 of 1197")
  browser.refresh()  # decisions survive a reload (local storage)
  open_page(browser, page)
  assert browser.find_element(By.ID, "summary").text.startswith("reviewed 4 of 1197")
  Select(browser.find_element(By.ID, "f-dec")).select_by_value("remove")
  assert shown(browser) == [ids[rows[2]]]
  Select(browser.find_element(By.ID, "f-dec")).select_by_value("")
  shot = tmp_path / "review_screenshot.png"
  browser.save_screenshot(str(shot))
  artefact(shot)
  browser.find_element(By.ID, "export").click()
  text = wait_for_file(browser.downloads / "corrections.csv")
  lines = text.splitlines()
  assert lines[:2] == [f"# workdir: {os.path.abspath(work)}", "id,action,new_label"]
  want = [f"{i},{expected[i][0]},{expected[i][1]}" for i in ids if i in expected]
  assert lines[2:] == want  # in rank order
  # Retrain on the exported file: exactly those labels changed, the removed sample is gone.
  out = tmp_path / "retrained"
  train.train_and_evaluate(own_config(root, "erm", 2, label_corrections=str(
      browser.downloads / "corrections.csv")), str(out))
  old, new = np.load(work / "labels.npz"), np.load(out / "labels.npz")
  before = dict(zip(old["ids"].tolist(), old["noisy_labels"].tolist()))
  after = dict(zip(new["ids"].tolist(), new["noisy_labels"].tolist()))
  assert set(before) - set(after) == {ids[rows[2]]}
  changed = {i: str(after[i]) for i in after if after[i] != before[i]}
  assert changed == {i: label for i, (action, label) in expected.items() if action == "relabel"}


def test_page_of_50000_rows_opens_and_pages_fast(browser, tmp_path):
  """A generated page of 50,000 ranked samples (16x16 thumbnails, all distinct): opens, filters,
  sorts and pages, with only the shown page's images decoded."""
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select
  n, rng = 50_000, np.random.default_rng(0)
  given, pred = rng.integers(0, 10, n), rng.integers(0, 10, n)
  score = np.sort(rng.random(n))
  table = {"workdir": str(tmp_path), "title": "50,000 rows", "classes": [f"c{c}" for c in
                                                                           range(10)],
           "label_score": "probability", "rank": list(range(1, n + 1)),
           "id": [f"img/{i:05d}.png" for i in range(n)], "given": given.tolist(),
           "pred": pred.tolist(), "p": score.tolist(), "score": score.tolist(), "weight": None,
           "cw": None, "total": n}
  images = [review.thumbnail(rng.integers(0, 256, (16, 16), dtype=np.uint8)) for _ in range(n)]
  page = review.write_page(str(tmp_path / "big.html"), table, images)
  seconds = open_page(browser, page)
  assert shown(browser) == table["id"][:50]
  assert browser.execute_script("return document.images.length") == 50
  start = time.perf_counter()
  browser.find_element(By.ID, "next").click()
  Select(browser.find_element(By.ID, "f-pred")).select_by_value("3")
  browser.find_element(By.CSS_SELECTOR, "th[data-sort=score]").click()  # ascending
  browser.find_element(By.CSS_SELECTOR, "th[data-sort=score]").click()  # descending
  interact = time.perf_counter() - start
  top = [i for i in np.argsort(-score, kind="stable") if pred[i] == 3][:50]
  assert shown(browser) == [table["id"][i] for i in top]
  timings = {"rows": n, "page_mb": round(os.path.getsize(page) / 1e6, 1),
             "open_s": round(seconds, 2), "page_filter_sort_s": round(interact, 2)}
  print(f"\n50,000-row review page: {timings}")
  (tmp_path / "review_timings.json").write_text(json.dumps(timings))
  artefact(tmp_path / "review_timings.json")
  assert seconds < 20 and interact < 10  # measured here: see docs/own_data.md


# ---------------------------------------------------------------------------------------------
# Label Studio: import tasks with the model's suggestion, its export back to corrections.csv


def test_label_studio_tasks_and_export_back_to_corrections(folder_run, tmp_path, capsys):
  from experiments import review as cli
  from gdw_jax.analysis import label_studio
  from gdw_jax.data import corrections
  root, work = folder_run
  cols = label_issues.read_csv(work / "label_issues.csv")
  assert cli.main([str(work), "--label-studio", str(tmp_path / "tasks.json"), "--top", "6"]) == 0
  tasks = json.loads((tmp_path / "tasks.json").read_text())
  assert [t["data"]["id"] for t in tasks] == cols["id"][:6].tolist()
  prefix = "/data/local-files/?d=" + str(root / "train").lstrip("/") + "/"
  for t, pred, given, score in zip(tasks, cols["predicted_label"], cols["given_label"],
                                   cols["score"]):
    assert t["data"]["image"] == prefix + t["data"]["id"]
    assert t["data"]["given_label"] == str(given) and t["data"]["workdir"] == str(work)
    [p] = t["predictions"]
    assert p["score"] == pytest.approx(score, rel=1e-5) and p["model_version"] == "gdw_jax gdw"
    assert p["result"] == [{"from_name": "label", "to_name": "image", "type": "choices",
                            "value": {"choices": [str(pred)]}}]
  xml = (tmp_path / "tasks_label_config.xml").read_text()
  assert '<Choices name="label" toName="image"' in xml and '<Image name="image"' in xml
  assert xml.count("<Choice value=") == 11 and label_studio.REMOVE in xml

  # What Label Studio exports once a team annotated: each task with its id and annotations.
  def annotated(task, choice, cancelled=False):
    result = [{"from_name": "label", "to_name": "image", "type": "choices",
               "value": {"choices": [choice]}}]
    return dict(task, id=100 + len(export), annotations=[
        {"result": result, "was_cancelled": cancelled}])
  export = []
  for task, choice in zip(tasks, [str(cols["predicted_label"][0]), str(cols["given_label"][1]),
                                  label_studio.REMOVE]):
    export.append(annotated(task, choice))
  export.append(annotated(tasks[3], "5", cancelled=True))  # skipped by the annotator
  export.append(dict(tasks[4], id=200, annotations=[]))  # not reviewed
  (tmp_path / "export.json").write_text(json.dumps(export))
  assert cli.main([str(work), "--from-label-studio", str(tmp_path / "export.json")]) == 0
  got = corrections.read(str(tmp_path / "corrections.csv"), [str(c) for c in range(10)])
  assert got.source_workdir == str(work)
  ids = cols["id"]
  assert [(r.id, r.action, r.label) for r in got.rows] == [
      (ids[0], "relabel", int(cols["predicted_label"][0])), (ids[1], "keep", None),
      (ids[2], "remove", None)]
  export[0]["annotations"][0]["result"][0]["value"]["choices"] = ["cat"]
  (tmp_path / "export.json").write_text(json.dumps(export))
  capsys.readouterr()
  assert cli.main([str(work), "--from-label-studio", str(tmp_path / "export.json"),
                   "--out", str(tmp_path / "bad.csv")]) == 2
  assert "task 0 (id 100): choice 'cat' is not a class of the run" in capsys.readouterr().err
  assert not (tmp_path / "bad.csv").exists()


def test_scripted_review_accepts_the_prediction_only_where_the_truth_agrees(folder_run, tmp_path):
  from experiments import review_gain
  from gdw_jax.data import corrections
  root, work = folder_run
  counts = review_gain.review(str(work), str(root / "truth.csv"), 40, str(tmp_path / "c.csv"))
  got = corrections.read(str(tmp_path / "c.csv"), [str(c) for c in range(10)])
  truth = dict(line.split(",") for line in (root / "truth.csv").read_text().split()[1:])
  cols = label_issues.read_csv(work / "label_issues.csv")
  assert [r.id for r in got.rows] == cols["id"][:40].tolist()
  for r, pred in zip(got.rows, cols["predicted_label"]):
    assert (r.action == "relabel") == (int(truth[r.id]) == pred != int(r.id.split("/")[0]))
  assert counts["fixed"] == sum(r.action == "relabel" for r in got.rows) > 20
  assert counts["wrong_before"] == 427 and counts["wrong_after"] == 427 - counts["fixed"]
  assert got.source_workdir == os.path.abspath(work)


def test_accuracy_before_is_read_from_final_json_or_a_seeds_launch_summary(tmp_path):
  from gdw_jax.analysis import report
  assert report._previous_final(None) is None
  assert report._previous_final(str(tmp_path)) is None
  (tmp_path / "summary.json").write_text(json.dumps({"method": "erm", "mean": {"last5_acc": 75.0}}))
  assert report._previous_final(str(tmp_path)) == {"last5_acc": 75.0, "method": "erm"}
  (tmp_path / "final.json").write_text(json.dumps({"method": "gdw", "last5_acc": 94.6}))
  assert report._previous_final(str(tmp_path))["last5_acc"] == 94.6
