"""Reports of real (tiny) digits runs of erm, mwnet and gdw: figures, numbers, CLI, comparison."""
import json
import os

import jax
import numpy as np
import pytest
from flax import serialization

import analysis_runs
from experiments import report as report_cli
from gdw_jax.analysis import load_run, stats, weight_fn

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALWAYS = {"learning_curves.png", "corruption.png", "per_class_accuracy.png"}
EXPECTED = {  # the figures each method must produce: weights only where they are learned
    "erm": ALWAYS,
    "mwnet": ALWAYS | {"weight_function.png", "weights_over_training.png"},
    "gdw": ALWAYS | {"weight_function.png", "weights_over_training.png",
                     "class_weight_maps.png"},
}


@pytest.fixture(scope="module")
def runs():
  return analysis_runs.workdirs()


def _assert_png(path):
  assert os.path.getsize(path) > 10_000, path  # a drawn figure, not an empty canvas
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC, path


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_trainer_writes_report_with_every_figure(runs, method):
  workdir = runs[method]
  text = open(os.path.join(workdir, "report.md")).read()
  summary = json.load(open(os.path.join(workdir, "analysis.json")))
  assert set(summary["figures"]) == EXPECTED[method], summary["skipped"]
  for name in EXPECTED[method]:
    _assert_png(os.path.join(workdir, "figures", name))
    assert f"(figures/{name})" in text
  assert f"· {method}" in text.splitlines()[0]          # the title names the method
  assert "uniform noise 40%" in text.splitlines()[0]
  for section in ("## Final metrics", "## Configuration", "## Data and realised corruption"):
    assert section in text
  final = json.load(open(os.path.join(workdir, "final.json")))
  assert f"{final['last5_acc']:.2f}%" in text


def test_erm_skips_weights_and_splits_head_tail(runs):
  run = load_run(runs["erm"])
  summary = json.load(open(os.path.join(runs["erm"], "analysis.json")))
  assert summary["weights_constant"] and summary["detection_auc"] is None
  assert any("no learned weighting function" in s for s in summary["skipped"])
  # Long-tailed run: head/tail accuracies are the means of the per-class test accuracies.
  acc = stats.per_class_accuracy(run.predictions["test_pred"], run.predictions["test_labels"],
                                 10)
  head, tail = stats.head_tail_split(run.train_counts)
  assert run.train_counts[head].min() >= run.train_counts[tail].max()
  assert summary["head_acc"] == pytest.approx(np.mean(acc[head]))
  assert summary["tail_acc"] == pytest.approx(np.mean(acc[tail]))
  assert "Test accuracy: head" in open(os.path.join(runs["erm"], "report.md")).read()


def test_detection_auc_on_a_hand_made_case():
  """Clean weights 0.9, 0.5, 0.5; noisy 0.5, 0.1; one unseen (NaN): of the 6 (clean, noisy)
  pairs, 4 ordered right and 2 ties -> (4 + 2/2) / 6."""
  w = np.array([0.9, 0.5, 0.5, 0.5, 0.1, np.nan])
  noisy = np.array([False, False, False, True, True, True])
  assert stats.detection_auc(w, noisy) == pytest.approx(5 / 6)
  assert stats.detection_auc(w[:3], noisy[:3]) is None  # no noisy sample: undefined


@pytest.mark.parametrize("method", ["mwnet", "gdw"])
def test_detection_numbers_match_saved_weights(runs, method):
  run = load_run(runs[method])
  summary = json.load(open(os.path.join(runs[method], "analysis.json")))
  last = run.weights["instance_weight"][-1]
  noisy = run.weights["noisy_labels"] != run.weights["true_labels"]
  # independently: the share of (clean, noisy) pairs whose clean sample weighs more (ties 1/2),
  # over the samples with a weight that epoch
  seen = np.isfinite(last)
  clean_w, noisy_w = last[seen & ~noisy][:, None], last[seen & noisy][None, :]
  pairs = np.mean((clean_w > noisy_w) + 0.5 * (clean_w == noisy_w))
  assert summary["detection_auc"] == pytest.approx(pairs, abs=1e-9)
  assert summary["weight_noisy_mean"] == pytest.approx(float(np.mean(last[noisy])), rel=1e-6)
  assert f"AUC **{summary['detection_auc']:.3f}**" in \
      open(os.path.join(runs[method], "report.md")).read()


@pytest.mark.parametrize("method", ["mwnet", "gdw"])
def test_weight_function_is_the_trained_net(runs, method):
  """The curve comes from the restored final state, not from a fresh initialisation."""
  run = load_run(runs[method])
  method_obj, state = weight_fn.rebuild_method(run)
  wf = weight_fn.weight_function(run, loss_max=6.0, points=7)
  assert len(wf.curves) == 1 and wf.curves[0].classes.tolist() == list(range(10))
  direct = np.asarray(method_obj.weight_fn(state, wf.losses.astype(np.float32),
                                           np.zeros(7, np.int32)))
  np.testing.assert_allclose(wf.curves[0].weights, direct, rtol=1e-6)
  fresh = method_obj.init(jax.random.PRNGKey(0))
  assert serialization.to_bytes(fresh) != serialization.to_bytes(state)
  init_curve = np.asarray(method_obj.weight_fn(fresh, wf.losses.astype(np.float32),
                                               np.zeros(7, np.int32)))
  assert np.abs(init_curve - direct).max() > 1e-4


def test_cli_regenerates_reports_and_compares(runs, tmp_path, capsys):
  dirs = [runs[m] for m in ("erm", "mwnet", "gdw")]
  os.remove(os.path.join(runs["mwnet"], "report.md"))
  assert report_cli.main(dirs + ["--out", str(tmp_path / "cmp")]) == 0
  printed = capsys.readouterr().out.split()
  assert printed[:3] == [os.path.join(d, "report.md") for d in dirs]
  assert os.path.exists(os.path.join(runs["mwnet"], "report.md"))
  text = open(tmp_path / "cmp" / "report.md").read()
  rows = [line for line in text.splitlines() if line.startswith("| [")]
  assert [r.split("]")[0][3:] for r in rows] == ["erm", "mwnet", "gdw"]
  for name in ("compare_curves.png", "compare_weight_functions.png"):
    _assert_png(tmp_path / "cmp" / "figures" / name)
  cmp = json.load(open(tmp_path / "cmp" / "comparison.json"))
  assert [r["method"] for r in cmp["runs"]] == ["erm", "mwnet", "gdw"]
  assert report_cli.main([str(tmp_path / "missing")]) == 2
