"""A user's own data: npz, image folder and tfds sources, research and practitioner modes, the
trusted meta set, runs without a test set, and every bad input as a one-line error before
anything is written."""
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import digits
from gdw_jax import data, train
from gdw_jax.analysis import label_issues
from gdw_jax.data import augment, images, sources
from gdw_jax.validation import ConfigError
from tests import run_helpers as rh

TIMING = ("wall_time_s", "epoch_time_s", "steps_per_s")


def tiny(method="erm", **overrides):
  """A 2-epoch digits-recipe config (small MLP, no checkpoints or report) with overrides."""
  c = digits.get_config(f"method={method},epochs=2")
  c.mlp_hidden, c.progress, c.checkpoint, c.report = (32,), False, False, False
  for key, value in overrides.items():
    c[key] = value
  return c


def digits_arrays():
  src = sources.load("digits", digits.get_config())
  return src


def practitioner_npz(path, n_meta_per_class=3, drop_meta_class=None, **extra):
  """Digits with 30% of the given labels changed, a trusted set taken from the clean pool."""
  src = digits_arrays()
  rng = np.random.default_rng(0)
  meta = np.concatenate([np.flatnonzero(src.y_pool == c)[:n_meta_per_class] for c in range(10)
                         if c != drop_meta_class])
  rest = np.setdiff1d(np.arange(len(src.y_pool)), meta)
  given = src.y_pool[rest].copy()
  flip = rng.random(len(rest)) < 0.3
  given[flip] = (given[flip] + rng.integers(1, 10, flip.sum())) % 10
  arrays = dict(x_train=src.x_pool[rest], y_train=given, x_meta=src.x_pool[meta],
                y_meta=src.y_pool[meta], ids_train=np.array([f"d{i}" for i in rest]))
  arrays.update(extra)
  np.savez(path, **arrays)
  return arrays, src.y_pool[rest]


# ---- npz -----------------------------------------------------------------------------------


def test_npz_source_any_shape_ids_names_and_per_channel_normalisation(tmp_path):
  rng = np.random.default_rng(1)
  x = rng.integers(0, 256, (40, 12, 10, 2), dtype=np.uint8)
  x[..., 1] //= 4  # channel 1 has another mean and spread
  y = np.arange(40) % 4
  path = tmp_path / "d.npz"
  np.savez(path, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8],
           ids_train=np.arange(100, 140), class_names=np.array(["a", "b", "c", "d"]))
  src = sources.load("npz", tiny(dataset="npz", data_path=str(path)))
  assert src.x_pool.shape == (40, 12, 10, 2) and src.x_pool.dtype == np.uint8
  assert src.num_classes == 4 and src.class_names == ("a", "b", "c", "d")
  assert src.ids.tolist() == [str(i) for i in range(100, 140)]
  assert not src.truth_known and src.y_pool_noisy is None  # given labels: practitioner
  z = np.asarray(src.preprocess(x))
  np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
  assert np.asarray(src.augment(None, x)).shape == x.shape  # no crop / flip asked for


def test_npz_y_train_true_is_research_mode_with_given_noisy_labels(tmp_path):
  src = digits_arrays()
  noisy = src.y_pool.copy()
  noisy[::5] = (noisy[::5] + 1) % 10
  np.savez(tmp_path / "r.npz", x_train=src.x_pool, y_train=noisy, y_train_true=src.y_pool)
  ds = data.build(tiny(dataset="npz", data_path=str(tmp_path / "r.npz"), noise_type="none"))
  assert ds.truth_known and ds.meta_source == "split"
  assert np.bincount(ds.y_meta).tolist() == [10] * 10  # clean class-balanced meta split
  np.testing.assert_array_equal(ds.y_meta, src.y_pool[ds.meta_indices])
  np.testing.assert_array_equal(ds.y_train, noisy[ds.train_indices])
  np.testing.assert_array_equal(ds.y_train_true, src.y_pool[ds.train_indices])
  assert 0.15 < ds.realised_noise_rate < 0.25


def test_npz_of_the_digits_arrays_runs_exactly_like_dataset_digits(tmp_path):
  src = digits_arrays()
  path = tmp_path / "digits.npz"
  np.savez(path, x_train=src.x_pool, y_train=src.y_pool, x_test=src.x_test, y_test=src.y_test)
  ref = tiny("erm")
  own = tiny("erm", dataset="npz", data_path=str(path), given_labels="clean",
             image_normalize=False)
  train.train_and_evaluate(ref, str(tmp_path / "digits"))
  train.train_and_evaluate(own, str(tmp_path / "npz"))
  a, b = rh.read_final(tmp_path / "digits"), rh.read_final(tmp_path / "npz")
  assert a.pop("dataset") == "digits" and b.pop("dataset") == "npz"
  assert rh.without_timing(a) == rh.without_timing(b)
  assert [rh.without_timing(r) for r in rh.read_rows(tmp_path / "digits")] == \
      [rh.without_timing(r) for r in rh.read_rows(tmp_path / "npz")]
  assert (tmp_path / "digits" / "label_issues.csv").read_text() == \
      (tmp_path / "npz" / "label_issues.csv").read_text()
  a, b = np.load(tmp_path / "digits" / "labels.npz"), np.load(tmp_path / "npz" / "labels.npz")
  assert a.files == b.files
  for key in a.files:  # the same meta split, noisy labels and long tail
    np.testing.assert_array_equal(a[key], b[key])


# ---- practitioner mode ------------------------------------------------------------------------


def test_practitioner_meta_set_is_exactly_the_given_trusted_set(tmp_path):
  arrays, clean = practitioner_npz(tmp_path / "p.npz")
  config = tiny("mwnet", dataset="npz", data_path=str(tmp_path / "p.npz"), noise_type="none")
  ds = data.build(config)
  assert ds.meta_source == "trusted" and not ds.truth_known
  np.testing.assert_array_equal(ds.x_meta, arrays["x_meta"])
  np.testing.assert_array_equal(ds.y_meta, arrays["y_meta"])
  np.testing.assert_array_equal(ds.x_train, arrays["x_train"])  # every training image trains
  np.testing.assert_array_equal(ds.y_train, arrays["y_train"])  # with its given label
  final = train.train_and_evaluate(config, str(tmp_path / "run"))
  labels = np.load(tmp_path / "run" / "labels.npz")
  np.testing.assert_array_equal(labels["meta_labels"], arrays["y_meta"])
  assert "true_labels" not in labels.files and not bool(labels["truth_known"])
  assert final["realised_noise_rate"] is None and final["label_score"] == "weight"
  cols = label_issues.read_csv(tmp_path / "run" / "label_issues.csv")
  assert sorted(cols["id"]) == sorted(arrays["ids_train"]) and "mislabelled" not in cols


def test_trusted_ids_move_those_training_samples_to_the_meta_set(tmp_path):
  arrays, _ = practitioner_npz(tmp_path / "p.npz")
  np.savez(tmp_path / "q.npz", x_train=arrays["x_train"], y_train=arrays["y_train"],
           ids_train=arrays["ids_train"])
  picked = np.concatenate([np.flatnonzero(arrays["y_train"] == c)[:2] for c in range(10)])
  ids_file = tmp_path / "trusted.txt"
  ids_file.write_text("# checked by hand\n" + "\n".join(arrays["ids_train"][picked]) + "\n\n")
  ds = data.build(tiny("gdw", dataset="npz", data_path=str(tmp_path / "q.npz"),
                       noise_type="none", trusted_ids=str(ids_file)))
  assert ds.meta_source == "trusted"
  np.testing.assert_array_equal(ds.meta_indices, np.sort(picked))
  np.testing.assert_array_equal(ds.x_meta, arrays["x_train"][np.sort(picked)])
  assert ds.num_train == len(arrays["y_train"]) - len(picked)
  assert not set(ds.train_ids) & set(arrays["ids_train"][picked])


def test_meta_method_without_a_trusted_set_says_how_to_give_one(tmp_path):
  src = digits_arrays()
  np.savez(tmp_path / "n.npz", x_train=src.x_pool, y_train=src.y_pool)
  with pytest.raises(ConfigError) as e:
    train.train_and_evaluate(tiny("gdw", dataset="npz", data_path=str(tmp_path / "n.npz"),
                                  noise_type="none"), str(tmp_path / "run"))
  msg = str(e.value)
  assert "\n" not in msg and "needs a meta set" in msg
  for hint in ("x_meta", "meta_root", "tfds_meta_split", "trusted_ids", "meta_from_train=true"):
    assert hint in msg
  assert not (tmp_path / "run").exists()


def test_meta_from_train_is_said_in_the_run_output_and_report(tmp_path):
  src = digits_arrays()
  np.savez(tmp_path / "n.npz", x_train=src.x_pool, y_train=src.y_pool)
  work = tmp_path / "run"
  import subprocess
  import sys
  r = subprocess.run(
      [sys.executable, "-m", "gdw_jax.main", f"--workdir={work}",
       "--config=configs/digits.py:method=mwnet,epochs=1", "--config.dataset=npz",
       f"--config.data_path={tmp_path / 'n.npz'}", "--config.noise_type=none",
       "--config.meta_from_train=true", "--config.progress=false", "--config.checkpoint=false",
       "--config.mlp_hidden=(32,)"], cwd=rh.ROOT, env=rh.env(), capture_output=True, text=True,
      timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  said = "meta set was drawn from the training set's given labels"
  assert said in r.stderr and said in r.stdout and "not known to be clean" in r.stdout
  assert "no test accuracy" in r.stdout
  report = (work / "report.md").read_text()
  assert f"**Note: the {said} (meta_from_train=true), so it is not known to be clean.**" in report
  assert "No test set: no test accuracy exists" in report
  data_json = json.loads((work / "data.json").read_text())
  assert data_json["meta_source"] == "from_train" and data_json["num_meta"] == 100
  assert data_json["num_test"] == 0


def test_synthetic_noise_on_given_labels_is_refused_unless_asked(tmp_path):
  arrays, _ = practitioner_npz(tmp_path / "p.npz")
  config = tiny("mwnet", dataset="npz", data_path=str(tmp_path / "p.npz"))  # uniform 0.4
  with pytest.raises(ConfigError, match="synthetic noise .* is refused: set noise_type=none, "
                                        "or noise_on_given_labels=true"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
  config.noise_on_given_labels = True  # on purpose: sampled from the given labels
  ds = data.build(config)
  assert 0.3 < np.mean(ds.y_train != arrays["y_train"]) < 0.45


# ---- image folder ----------------------------------------------------------------------------


def _image(path, rgb, size=(12, 10), mode="RGB"):
  rng = np.random.default_rng(abs(hash(str(path))) % 2 ** 32)
  h, w = size
  a = np.clip(np.asarray(rgb, np.float64) + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
  im = Image.fromarray(a)
  if mode == "L":
    im = im.convert("L")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  im.save(path)


COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def make_folder(root, per_class=6, kinds=("png", "jpg")):
  """``root/<class>/<i>.<png|jpg>``, alternating formats and sizes."""
  for name, rgb in COLOURS.items():
    for i in range(per_class):
      ext = kinds[i % len(kinds)]
      _image(os.path.join(root, name, f"{i}.{ext}"), rgb, (12, 10) if i % 2 else (9, 9))


def test_folder_source_png_and_jpeg_with_csv_labels_meta_and_test(tmp_path):
  make_folder(tmp_path / "train")
  make_folder(tmp_path / "meta", per_class=2)
  make_folder(tmp_path / "test", per_class=3)
  (tmp_path / "labels.csv").write_text("path,label\ncat/0.png,dog\n./dog/1.jpg,2\n")
  config = tiny(dataset="folder", data_root=str(tmp_path / "train"), image_size=8,
                label_csv=str(tmp_path / "labels.csv"), meta_root=str(tmp_path / "meta"),
                test_root=str(tmp_path / "test"), noise_type="none")
  src = sources.load("folder", config)
  assert src.class_names == ("cat", "dog", "fox")
  assert src.x_pool.shape == (18, 8, 8, 3) and src.x_pool.dtype == np.uint8
  ids = src.ids.tolist()
  assert ids[:6] == ["cat/0.png", "cat/1.jpg", "cat/2.png", "cat/3.jpg", "cat/4.png", "cat/5.jpg"]
  labels = dict(zip(ids, src.y_pool.tolist()))
  assert labels["cat/0.png"] == 1 and labels["dog/1.jpg"] == 2  # the CSV's labels
  assert labels["cat/1.jpg"] == 0 and labels["fox/5.jpg"] == 2  # the folder's
  assert src.x_meta.shape == (6, 8, 8, 3) and src.y_meta.tolist() == [0, 0, 1, 1, 2, 2]
  assert src.x_test.shape == (9, 8, 8, 3)
  red = src.x_pool[ids.index("cat/2.png")].mean(axis=(0, 1))
  assert red[0] > 150 and red[1] < 90 and red[2] < 90  # decoded pixels, RGB order
  assert src.info["labels_from_csv"] == 2


def test_folder_run_writes_label_issues_with_paths_and_the_grid(tmp_path):
  make_folder(tmp_path / "train", per_class=8)
  make_folder(tmp_path / "meta", per_class=2)
  (tmp_path / "labels.csv").write_text("cat/0.png,fox\ncat/1.jpg,fox\n")
  work = tmp_path / "run"
  train.train_and_evaluate(tiny("mwnet", dataset="folder", data_root=str(tmp_path / "train"),
                                meta_root=str(tmp_path / "meta"), image_size=8,
                                label_csv=str(tmp_path / "labels.csv"), noise_type="none",
                                batch_size=8, meta_batch_size=6), str(work))
  cols = label_issues.read_csv(work / "label_issues.csv")
  assert sorted(cols["id"]) == sorted(f"{c}/{i}.{'jpg' if i % 2 else 'png'}"
                                      for c in COLOURS for i in range(8))
  assert cols["rank"].tolist() == list(range(1, 25))
  assert np.all(np.diff(cols["score"]) >= 0)  # most suspicious (lowest score) first
  assert set(cols["given_class"]) <= set(COLOURS)
  relabelled = dict(zip(cols["id"], cols["given_class"]))
  assert relabelled["cat/0.png"] == "fox" and relabelled["cat/2.png"] == "cat"
  from experiments import label_issues as cli
  assert cli.main([str(work), "--top", "4"]) == 0
  assert os.path.getsize(work / "label_issues_top4.png") > 5_000
  x = cli.load_images(str(work), list(cols["id"][:2]))
  assert x.shape == (2, 8, 8, 3) and x.dtype == np.uint8


def test_folder_mixed_channels_error_or_conversion_and_bad_files(tmp_path):
  make_folder(tmp_path / "train", per_class=3)
  _image(str(tmp_path / "train" / "dog" / "gray.png"), (90, 90, 90), mode="L")
  base = dict(dataset="folder", data_root=str(tmp_path / "train"), image_size=8,
              noise_type="none")
  with pytest.raises(ValueError, match=r"mixed channel counts: .*gray.png is grayscale "
                                       r".*image_channels=1 or 3"):
    sources.load("folder", tiny(**base))
  src = sources.load("folder", tiny(image_channels=1, **base))
  assert src.x_pool.shape == (10, 8, 8, 1)
  (tmp_path / "train" / "fox" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
  with pytest.raises(ValueError, match=r"data_root: cannot read image .*broken.jpg.*"
                                       r"skip_bad_images=true"):
    sources.load("folder", tiny(image_channels=3, **base))
  ds = data.build(tiny(image_channels=3, skip_bad_images=True, **base))
  assert ds.num_train == 10 and "fox/broken.jpg" not in set(ds.train_ids)
  assert ds.summary()["source"]["data_root_skipped_images"] == 1


def test_own_data_config_reads_root_train_trusted_and_optional_test(tmp_path):
  from configs import own_data
  make_folder(tmp_path / "train")
  make_folder(tmp_path / "trusted", per_class=2)
  c = own_data.get_config(f"root={tmp_path},image_size=8,natural=true,epochs=3")
  assert (c.data_root, c.meta_root, c.test_root) == (str(tmp_path / "train"),
                                                     str(tmp_path / "trusted"), "")
  assert (c.image_crop_pad, c.image_flip, c.noise_type, c.num_epochs) == (4, True, "none", 3)
  ds = data.build(c)
  assert ds.meta_source == "trusted" and ds.y_meta.shape == (6,) and not ds.has_test
  assert ds.x_train.shape == (18, 8, 8, 3)


def test_image_reader_is_reusable_on_a_list_of_files(tmp_path):
  make_folder(tmp_path / "f", per_class=2)
  items = [(str(tmp_path / "f" / "dog" / "0.png"), 5), (str(tmp_path / "f" / "cat" / "1.jpg"), 7)]
  out = images.read_images(items, size=(6, 4), progress=False)
  assert out.x.shape == (2, 6, 4, 3) and out.labels.tolist() == [5, 7]
  assert out.kept.tolist() == [0, 1] and out.skipped == []


# ---- tfds ------------------------------------------------------------------------------------


def test_tfds_source_on_mocked_mnist_28x28x1_research_run(tmp_path):
  config = tiny("erm", dataset="tfds", tfds_name="mnist", given_labels="clean",
                meta_per_class=2, batch_size=50)
  with tfds.testing.mock_data(num_examples=200):
    src = sources.load("tfds", config)
    assert src.x_pool.shape == (200, 28, 28, 1) and src.x_pool.dtype == np.uint8
    assert src.x_test.shape == (200, 28, 28, 1) and src.num_classes == 10
    assert src.class_names == tuple(str(i) for i in range(10)) and src.truth_known
    final = train.train_and_evaluate(config, str(tmp_path / "run"))
  ds_json = json.loads((tmp_path / "run" / "data.json").read_text())
  assert ds_json["num_meta"] == 20 and ds_json["meta_source"] == "split"
  assert final["last_acc"] is not None and final["realised_noise_rate"] > 0.2
  cols = label_issues.read_csv(tmp_path / "run" / "label_issues.csv")
  assert len(cols["id"]) == 180 and "mislabelled" in cols


def test_tfds_meta_split_is_the_trusted_set_and_errors_name_the_key():
  config = tiny("gdw", dataset="tfds", tfds_name="mnist", noise_type="none",
                tfds_meta_split="train[:30]", tfds_test_split="")
  with tfds.testing.mock_data(num_examples=60):
    ds = data.build(config)
    # (mocked tfds ignores split slicing: 'train[:30]' gives the 60 mocked records)
    assert ds.meta_source == "trusted" and ds.y_meta.shape == (60,) and not ds.has_test
    assert ds.num_train == 60
    with pytest.raises(ValueError, match="tfds_label_key: mnist has no class-label feature "
                                         "'digit'"):
      data.build(tiny(dataset="tfds", tfds_name="mnist", noise_type="none",
                      tfds_label_key="digit"))


def test_generic_augment_crops_and_flips_only_when_asked():
  import jax
  x = np.arange(2 * 5 * 6 * 1, dtype=np.uint8).reshape(2, 5, 6, 1)
  aug, pre = augment.image_transforms([0.0], [1.0])
  np.testing.assert_array_equal(np.asarray(aug(jax.random.PRNGKey(0), x)), x.astype(np.float32))
  aug, _ = augment.image_transforms([0.0], [1.0], crop_pad=0, flip=True)
  out = np.asarray(aug(jax.random.PRNGKey(3), np.repeat(x[:1], 16, 0)))
  flipped = [np.array_equal(o, x[0, :, ::-1]) for o in out]
  kept = [np.array_equal(o, x[0]) for o in out]
  assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
  aug, _ = augment.image_transforms([0.0], [1.0], crop_pad=2)
  out = np.asarray(aug(jax.random.PRNGKey(1), np.repeat(x[:1], 16, 0)))
  assert out.shape == (16, 5, 6, 1) and len({o.tobytes() for o in out}) > 1


def test_digits_folder_example_data(tmp_path):
  import csv
  from experiments import digits_folder
  n = digits_folder.write(str(tmp_path), rate=0.4, seed=0)
  assert (n["train"], n["trusted"], n["test"]) == (1197, 100, 500)
  with open(tmp_path / "truth.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 1197
  assert sum(r["path"].split("/")[0] != r["label"] for r in rows) == n["wrong"]
  assert 0.3 < n["wrong"] / n["train"] < 0.42  # 40% redrawn uniformly: ~36% wrong
  src = sources.load("folder", tiny(dataset="folder", data_root=str(tmp_path / "train")))
  assert src.x_pool.shape == (1197, 8, 8, 1) and src.x_pool.max() == 255
