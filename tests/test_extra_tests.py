"""Top-5 accuracy and further test sets: every evaluation reports top-1 and top-5; a source's
extra test sets (mini-WebVision: ILSVRC12's validation images of the same classes) are evaluated
at every epoch end, in memory and streamed, into metrics.jsonl, final.json, predictions.npz and
the report."""
import json
import os

import numpy as np

import jax.numpy as jnp

import run_helpers as rh
from gdw_jax import models, runs, train, train_step
from test_real_noise_sources import config_for, fake_mini_webvision


def _top_k_by_sort(logits, y, k):
  """The label among the k first of a stable descending sort (ties: lower class first)."""
  order = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
  return (order == y[:, None]).any(-1)


def test_in_top_k_is_a_stable_sort_and_contains_the_argmax():
  rng = np.random.default_rng(0)
  logits = rng.integers(0, 4, (200, 9)).astype(np.float32)  # many ties
  y = rng.integers(0, 9, 200)
  for k in (1, 3, 5):
    got = np.asarray(train_step.in_top_k(jnp.asarray(logits), jnp.asarray(y), k))
    np.testing.assert_array_equal(got, _top_k_by_sort(logits, y, k))
  top1 = np.asarray(train_step.in_top_k(jnp.asarray(logits), jnp.asarray(y), 1))
  np.testing.assert_array_equal(top1, logits.argmax(-1) == y)
  # fewer classes than k: every label is in the top k
  assert np.asarray(train_step.in_top_k(jnp.asarray(logits[:, :3]), jnp.asarray(y % 3), 5)).all()


def test_evaluation_reports_top5_over_padded_batches():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(10, 7)).astype(np.float32)
  y = rng.integers(0, 7, 10)
  logits_model = models.ModelFns(None, None, lambda params, state, x, train: (x, state))
  evaluate = train_step.make_eval_fn(logits_model, batch_size=4)  # 3 batches, the last padded
  out = evaluate({}, {}, x, y)
  assert out["acc"] == 100.0 * np.mean(x.argmax(-1) == y)
  assert out["top5"] == 100.0 * np.mean(_top_k_by_sort(x, y, 5))
  assert out["acc"] < out["top5"] < 100.0  # the data are chosen so that both bounds are strict


def _run(root, workdir, pipeline):
  c = config_for("mini_webvision", root, webvision_classes=6, method="erm", model="mlp",
                 mlp_hidden=(8,), num_epochs=2, batch_size=6, image_size=8, report=True,
                 input_pipeline=pipeline, image_mean=(0.5, 0.5, 0.5),
                 image_std=(0.25, 0.25, 0.25))
  if pipeline == "stream":
    c.stream_workers = 0
  train.train_and_evaluate(c, workdir)
  return rh.read_rows(workdir), rh.read_final(workdir)


def test_mini_webvision_run_evaluates_webvision_and_ilsvrc12_validation(tmp_path):
  root = str(tmp_path / "data")
  _, val, inet = fake_mini_webvision(root, classes=7, val_per_class=3)
  results = {}
  for pipeline in ("memory", "stream"):
    workdir = str(tmp_path / pipeline)
    rows, final = _run(root, workdir, pipeline)
    assert len(rows) == 2
    for row in rows:
      assert row["test_acc"] <= row["test_top5_acc"]
      assert row["imagenet_acc"] <= row["imagenet_top5_acc"]
    pred = np.load(os.path.join(workdir, "predictions.npz"))
    # the recorded accuracies are those of the saved predictions, on the first 6 classes only
    np.testing.assert_array_equal(pred["imagenet_labels"], [c for _, c in inet if c < 6])
    np.testing.assert_array_equal(pred["test_labels"], [c for _, c in val if c < 6])
    assert rows[-1]["imagenet_acc"] == 100.0 * np.mean(pred["imagenet_pred"]
                                                       == pred["imagenet_labels"])
    extra = final["extra_tests"]["imagenet"]
    assert extra["last_acc"] == rows[-1]["imagenet_acc"]
    assert extra["best_top5_acc"] == max(r["imagenet_top5_acc"] for r in rows)
    assert final["last_top5_acc"] == rows[-1]["test_top5_acc"]
    report = open(os.path.join(workdir, "report.md")).read()
    assert "test set `imagenet`" in report and "test top-5 accuracy" in report
    results[pipeline] = (rows, final)
  keys = ("test_acc", "test_top5_acc", "imagenet_acc", "imagenet_top5_acc", "imagenet_loss")
  for a, b in zip(results["memory"][0], results["stream"][0]):
    assert [a[k] for k in keys] == [b[k] for k in keys]  # the two input paths: the same numbers
  assert json.dumps(results["memory"][1]["extra_tests"]) == json.dumps(
      results["stream"][1]["extra_tests"])


def test_seed_summary_averages_the_further_test_sets():
  def final(seed, acc, top5):
    extra = {"last_acc": acc, "best_acc": acc + 1, "last5_acc": acc, "last_top5_acc": top5,
             "best_top5_acc": top5}
    return {"method": "erm", "dataset": "mini_webvision", "last5_acc": 50.0, "best_acc": 51.0,
            "last_acc": 50.0, "final_train_loss": 1.0, "seed": seed,
            "extra_tests": {"imagenet": extra}}

  out = runs.summarize([0, 1], [final(0, 40.0, 70.0), final(1, 44.0, 80.0)])
  imagenet = out["extra_tests"]["imagenet"]
  assert imagenet["mean"]["last_acc"] == 42.0 and imagenet["std"]["last_acc"] == 2.0
  assert imagenet["mean"]["last_top5_acc"] == 75.0 and imagenet["std"]["best_top5_acc"] == 5.0
  assert out["mean"]["last_acc"] == 50.0
