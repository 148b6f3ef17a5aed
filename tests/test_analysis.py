"""Unit tests of gdw_jax.analysis on hand-made arrays and workdirs (no training)."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from gdw_jax import methods
from gdw_jax.analysis import load_run, report, stats, weight_fn


# ----------------------------------------------------------------------- detection AUC


def test_auc_perfect_inverted_and_chance():
  noisy = np.array([False, False, True, True])
  assert stats.detection_auc([0.9, 0.8, 0.1, 0.2], noisy) == 1.0   # noisy weighted lowest
  assert stats.detection_auc([0.1, 0.2, 0.9, 0.8], noisy) == 0.0   # noisy weighted highest
  assert stats.detection_auc([0.5, 0.5, 0.5, 0.5], noisy) == 0.5   # constant: all ties


def test_auc_counts_pairs_by_hand():
  # clean {0.9, 0.3} vs noisy {0.5, 0.1}: pairs (0.9>0.5) (0.9>0.1) (0.3<0.5) (0.3>0.1) -> 3/4.
  w = [0.9, 0.5, 0.3, 0.1]
  noisy = [False, True, False, True]
  assert stats.detection_auc(w, noisy) == pytest.approx(0.75)
  # A tie counts one half: clean {1, 1} vs noisy {1, 0}: 0.5 + 1 + 0.5 + 1 = 3 of 4 pairs.
  assert stats.detection_auc([1.0, 1.0, 1.0, 0.0], [False, False, True, True]) == 0.75
  # Clean 0.2 vs noisy {0.4, 0.1, 0.3}: wins 1 of 3.
  assert stats.detection_auc([0.2, 0.4, 0.1, 0.3], [False, True, True, True]) == \
      pytest.approx(1 / 3)


def test_auc_drops_unseen_and_undefined_cases():
  w = [0.9, np.nan, 0.1, 0.2]            # the NaN sample (never seen) is ignored
  assert stats.detection_auc(w, [False, True, True, False]) == pytest.approx(1.0)
  assert stats.detection_auc([0.3, 0.4], [False, False]) is None   # no noisy sample
  assert stats.detection_auc([0.3, np.nan], [False, True]) is None  # the only noisy one unseen
  with pytest.raises(ValueError, match="shape"):
    stats.detection_auc([0.1, 0.2, 0.3], [True, False])


def test_auc_per_epoch_and_quantiles():
  iw = np.array([[0.1, 0.9, 0.5], [0.9, 0.1, np.nan]])
  noisy = np.array([False, True, False])
  auc = stats.auc_per_epoch(iw, noisy)
  np.testing.assert_allclose(auc, [0.0, 1.0])
  q = stats.weight_quantiles(iw, ~noisy)
  np.testing.assert_allclose(q[0], [0.2, 0.3, 0.4])  # 25/50/75% of {0.1, 0.5}
  np.testing.assert_allclose(q[1], [0.9, 0.9, 0.9])  # the unseen sample is left out


def test_lowest_weight_precision():
  w = [0.9, 0.1, 0.2, 0.8, 0.3]
  noisy = [False, True, False, False, True]
  # The 2 lowest weights are samples 1 (noisy) and 2 (clean): half of them are noisy.
  assert stats.lowest_weight_precision(w, noisy) == 0.5
  assert stats.lowest_weight_precision(w, noisy, k=3) == pytest.approx(2 / 3)
  assert stats.lowest_weight_precision(w, [False] * 5) is None


def test_is_constant():
  assert stats.is_constant(np.ones((3, 4)))
  assert stats.is_constant([np.nan, 1.0, 1.0])
  assert not stats.is_constant([1.0, 0.99])


# ----------------------------------------------------------------------- class-level maps


def test_class_weight_maps_by_hand():
  # 3 classes; rows are W* of 4 samples.
  w = np.array([[0.5, 0.1, 0.2],     # given 0, true 0 (clean)
                [0.7, 0.3, 0.4],     # given 0, true 0 (clean)
                [0.1, 0.9, 0.6],     # given 1, true 2 (mislabelled)
                [np.nan] * 3])       # unseen in the last epoch
  y = np.array([0, 0, 1, 2])
  t = np.array([0, 0, 2, 1])
  maps = stats.class_weight_maps(w, y, t)
  np.testing.assert_allclose(maps["clean"][0], [0.6, 0.2, 0.3])
  assert np.isnan(maps["clean"][1:]).all()
  np.testing.assert_allclose(maps["mislabelled"][1], [0.1, 0.9, 0.6])
  assert np.isnan(maps["mislabelled"][[0, 2]]).all()
  np.testing.assert_array_equal(maps["clean_count"], [2, 0, 0])
  np.testing.assert_array_equal(maps["mislabelled_count"], [0, 1, 0])


def test_true_class_column_by_hand():
  w = np.array([[0.1, 0.9, 0.5, 0.7],    # given 1, true 0: true col 0.1, others (2, 3) 0.6
                [0.2, 0.4, 0.9, 0.6],    # given 2, true 3: true col 0.6, others (0, 1) 0.3
                [0.3, 0.3, 0.3, 0.3]])   # clean: ignored
  out = stats.true_class_column(w, [1, 2, 0], [0, 3, 0])
  assert out["count"] == 2
  assert out["true_column"] == pytest.approx(0.35)
  assert out["other_columns"] == pytest.approx(0.45)
  assert stats.true_class_column(w, [0, 0, 0], [0, 0, 0]) is None


def test_per_class_accuracy_head_tail_and_corruption():
  acc = stats.per_class_accuracy([0, 1, 1, 2, 0], [0, 1, 2, 2, 0], 4)
  np.testing.assert_allclose(acc[:3], [100.0, 100.0, 50.0])
  assert np.isnan(acc[3])
  head, tail = stats.head_tail_split([10, 50, 50, 5, 20])
  np.testing.assert_array_equal(head, [1, 2])      # C // 2 = 2 largest (tie by index)
  np.testing.assert_array_equal(tail, [0, 3, 4])
  m = stats.realised_corruption(noisy_labels=[0, 1, 1, 1], true_labels=[0, 0, 1, 1],
                                num_classes=3)
  np.testing.assert_allclose(m[:2], [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
  assert np.isnan(m[2]).all()


# ----------------------------------------------------------------------- weight functions


def _two_head_method():
  """A CMW-Net-like stand-in: classes {0, 2} use a decreasing head, class 1 an increasing one."""
  family = jnp.array([0, 1, 0])

  def weight_fn(state, loss, labels):
    head = family[labels]
    return jnp.where(head == 0, jnp.exp(-state["a"] * loss), 1 - jnp.exp(-loss))

  return methods.Method("fake", lambda rng: {"a": jnp.float32(1.0)}, None, True, weight_fn)


def test_weight_function_groups_heads():
  m = _two_head_method()
  wf = weight_fn.evaluate(m, {"a": jnp.float32(0.5)}, num_classes=3, loss_max=4.0, points=5,
                          class_counts=[10, 100, 30])
  np.testing.assert_allclose(wf.losses, [0, 1, 2, 3, 4])
  assert [c.classes.tolist() for c in wf.curves] == [[1], [0, 2]]   # largest family first
  np.testing.assert_allclose(wf.curves[1].weights, np.exp(-0.5 * wf.losses), rtol=1e-6)
  np.testing.assert_allclose(wf.curves[0].weights, 1 - np.exp(-wf.losses), rtol=1e-6)


def test_group_curves_and_describe():
  w = np.array([[1, 2], [3, 4], [1, 2 + 1e-9], [3, 5]], float)
  assert [g.tolist() for g in weight_fn.group_curves(w)] == [[0, 2], [1], [3]]
  assert weight_fn.describe_classes([3], [5, 6, 7, 8]) == "class 3 (n=8)"
  assert weight_fn.describe_classes([0, 2], [5, 6, 7]) == "classes 0, 2 (n=5-7)"


# ----------------------------------------------------------------------- robustness


def _write(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f)


def test_load_run_missing_and_truncated(tmp_path):
  with pytest.raises(FileNotFoundError):
    load_run(str(tmp_path / "nope"))
  run = load_run(str(tmp_path))
  assert run.config is None and run.weights is None and run.metrics == []
  assert run.title == "unknown · noise unknown · unknown"
  with open(tmp_path / "metrics.jsonl", "w") as f:  # a run killed mid-write
    f.write('{"epoch": 0, "test_acc": 50.0}\n{"epoch": 1, "test_a')
  (tmp_path / "final.json").write_text("{not json")
  run = load_run(str(tmp_path))
  assert [r["epoch"] for r in run.metrics] == [0]
  assert run.final is None and len(run.problems) == 1 and "final.json" in run.problems[0]


def test_report_skips_what_is_missing(tmp_path):
  """config + metrics only (a run killed early): final numbers recomputed from the metrics,
  learning curves drawn, every other section skipped with its reason."""
  _write(tmp_path / "config.json", {"method": "mwnet", "dataset": "digits",
                                    "noise_type": "flip", "noise_rate": 0.2})
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for e in range(3):
      f.write(json.dumps({"epoch": e, "train_loss": 2.0 - e / 2, "test_acc": 50.0 + 10 * e,
                          "train_acc_noisy": 0.4, "train_acc_true": 0.5}) + "\n")
  path = report.write_report(str(tmp_path))
  text = open(path).read()
  assert text.startswith("# Run report: digits · flip noise 20% · mwnet")
  assert "figures/learning_curves.png" in text
  assert os.path.getsize(tmp_path / "figures" / "learning_curves.png") > 10_000
  assert "final.json is missing: numbers from the 3 epochs logged" in text
  assert "| best test accuracy | 70.00% at epoch 3 of 3 |" in text
  skipped = text.split("## Skipped")[1]
  for reason in ("labels.npz is missing",
                 "data.json is missing", "sample_weights.npz is missing",
                 "predictions.npz is missing"):
    assert reason in skipped, reason
  summary = json.load(open(tmp_path / "analysis.json"))
  assert summary["figures"] == ["learning_curves.png"]
  assert summary["detection_auc"] is None and summary["last5_acc"] == 60.0


def _synthetic_workdir(path, num_classes=100, epochs=4, seed=0):
  """A long-tailed, 30%-noisy, 100-class GDW-like run written by hand (no weight net state)."""
  rng = np.random.default_rng(seed)
  counts = np.maximum((60 * 0.1 ** (np.arange(num_classes) / (num_classes - 1))).astype(int), 2)
  true = np.repeat(np.arange(num_classes), counts)
  noisy_mask = rng.random(len(true)) < 0.3
  given = np.where(noisy_mask, rng.integers(0, num_classes, len(true)), true)
  noisy_mask = given != true
  # Weights that separate the noise better each epoch: the AUC must rise.
  iw = np.stack([rng.random(len(true)) - e * 0.2 * noisy_mask for e in range(epochs)]).astype(
      np.float32)
  w_star = rng.random((len(true), num_classes)).astype(np.float32)
  _write(path / "config.json", {"method": "gdw", "dataset": "synthetic100",
                                "noise_type": "uniform", "noise_rate": 0.3,
                                "imbalance_factor": 0.1, "imbalance_type": "exp"})
  _write(path / "data.json", {"num_classes": num_classes, "num_train": len(true),
                              "train_class_counts_true": counts.tolist()})
  with open(path / "metrics.jsonl", "w") as f:
    for e in range(epochs):
      f.write(json.dumps({"epoch": e, "train_loss": 3.0 - e / 3, "meta_loss": 2.0,
                          "test_acc": 20.0 + e, "test_loss": 3.0}) + "\n")
  np.savez(path / "labels.npz", noisy_labels=given, true_labels=true)
  np.savez(path / "sample_weights.npz", instance_weight=iw, final_weights=w_star,
           noisy_labels=given, true_labels=true)
  test = np.repeat(np.arange(num_classes), 5)
  np.savez(path / "predictions.npz", test_labels=test,
           test_pred=np.where(rng.random(len(test)) < 0.5, test, 0))
  return iw, noisy_mask


def test_report_on_a_large_long_tailed_run(tmp_path):
  """100 classes, long-tailed, no method state: every figure but the weight function."""
  iw, noisy = _synthetic_workdir(tmp_path)
  report.write_report(str(tmp_path))
  summary = json.load(open(tmp_path / "analysis.json"))
  assert set(summary["figures"]) == {"corruption.png", "learning_curves.png",
                                     "weights_over_training.png", "class_weight_maps.png",
                                     "per_class_accuracy.png"}
  assert summary["skipped"] == ["Learned weighting function: method_state.msgpack is missing",
                                "Label issues: label_issues.csv is missing"]
  auc = stats.auc_per_epoch(iw, noisy)
  assert np.all(np.diff(auc) > 0)
  assert summary["detection_auc"] == pytest.approx(auc[-1])
  assert summary["head_acc"] is not None and summary["tail_acc"] is not None
  for name in summary["figures"]:
    assert os.path.getsize(tmp_path / "figures" / name) > 10_000


def test_weight_function_figure_draws_one_line_per_head(tmp_path):
  from gdw_jax.analysis import plots
  _synthetic_workdir(tmp_path, num_classes=3)   # train counts per class: 60, 18, 6
  run = load_run(str(tmp_path))
  wf = weight_fn.evaluate(_two_head_method(), {"a": jnp.float32(1.0)}, num_classes=3)
  ax = plots.weight_function(run, wf).axes[0]
  assert len(ax.get_lines()) == 2
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["classes 0, 2 (n=6-60)",
                                                                 "class 1 (n=18)"]


def test_report_survives_inconsistent_files(tmp_path):
  """Weights of another run's size and a method state of the wrong shape: noted, not fatal."""
  _synthetic_workdir(tmp_path, num_classes=10)
  np.savez(tmp_path / "sample_weights.npz", instance_weight=np.ones((2, 7), np.float32))
  with open(tmp_path / "method_state.msgpack", "wb") as f:
    f.write(b"\x80")  # an empty msgpack map: not the weight net's state
  from configs import digits
  _write(tmp_path / "config.json", {**digits.get_config().to_dict(), "method": "gdw"})
  path = report.write_report(str(tmp_path))
  text = open(path).read()
  assert "figures/learning_curves.png" in text and "figures/per_class_accuracy.png" in text
  skipped = json.load(open(tmp_path / "analysis.json"))["skipped"]
  assert skipped[0].startswith("Learned weighting function: could not rebuild the weight net")
  assert skipped[1:] == [
      "Clean vs mislabelled weights: sample_weights.npz (7 samples) does not match labels.npz "
      "(240)", "GDW class-level weights: sample_weights.npz has no final_weights",
      "Label issues: label_issues.csv is missing"]
