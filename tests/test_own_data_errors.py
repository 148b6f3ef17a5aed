"""Every bad input of a user's own data: a one-line ConfigError naming the file and key, raised
before anything is written to the workdir."""
import os

import numpy as np
import pytest
from PIL import Image

from configs import digits
from gdw_jax import train
from gdw_jax.validation import ConfigError


def _config(**overrides):
  c = digits.get_config("method=erm,epochs=1")
  c.mlp_hidden, c.progress, c.checkpoint, c.report, c.noise_type = (16,), False, False, False, \
      "none"
  for key, value in overrides.items():
    c[key] = value
  return c


def _npz(tmp, **arrays):
  path = os.path.join(tmp, "d.npz")
  np.savez(path, **arrays)
  return _config(dataset="npz", data_path=path), path


X = np.random.default_rng(0).random((30, 4, 4, 1)).astype(np.float32)
Y = np.arange(30) % 3


def _png(path, mode="RGB", size=(6, 6)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new(mode, size, 128).save(path)


def _folder(tmp, classes=("a", "b", "c"), per_class=3):
  root = os.path.join(tmp, "imgs")
  for c in classes:
    for i in range(per_class):
      _png(os.path.join(root, c, f"{i}.png"))
  return root


# Each case: (id, tmp_path -> (config, [words the message must contain])).
def missing_file(tmp):
  path = os.path.join(tmp, "nope.npz")
  return _config(dataset="npz", data_path=path), ["data_path", path, "does not exist"]


def missing_x_train(tmp):
  c, path = _npz(tmp, y_train=Y)
  return c, ["data_path", path, "has no x_train"]


def missing_y_train(tmp):
  c, path = _npz(tmp, x_train=X)
  return c, ["data_path", path, "has no y_train"]


def unknown_key(tmp):
  c, path = _npz(tmp, x_train=X, y_train=Y, x_valid=X)
  return c, ["data_path", path, "unknown key(s) x_valid"]


def lengths_differ(tmp):
  c, path = _npz(tmp, x_train=X, y_train=Y[:29])
  return c, [path, "y_train has 29 labels for 30 images"]


def fractional_labels(tmp):
  y = Y.astype(np.float64)
  y[4] = 1.5
  c, path = _npz(tmp, x_train=X, y_train=y)
  return c, [path, "y_train holds labels that are not integers (sample 4: 1.5)"]


def string_labels(tmp):
  c, path = _npz(tmp, x_train=X, y_train=np.array(["a"] * 30))
  return c, [path, "y_train must hold integer class labels"]


def label_out_of_range(tmp):
  c, path = _npz(tmp, x_train=X, y_train=Y, class_names=np.array(["a", "b"]))
  return c, [path, "y_train has label 2, outside [0, 2)"]


def negative_label(tmp):
  y = Y.copy()
  y[0] = -1
  c, path = _npz(tmp, x_train=X, y_train=y)
  return c, [path, "y_train has a negative label (-1)"]


def label_of_test_set_out_of_range(tmp):
  c, path = _npz(tmp, x_train=X, y_train=Y, x_test=X[:5], y_test=np.full(5, 7))
  c.num_classes = 3
  return c, [path, "y_test has label 7, outside [0, 3)"]


def nan_pixels(tmp):
  x = X.copy()
  x[7, 1, 1, 0] = np.nan
  c, path = _npz(tmp, x_train=x, y_train=Y)
  return c, [path, "x_train has NaN or infinite pixels", "sample 7"]


def duplicate_ids(tmp):
  ids = np.array([f"s{i}" for i in range(30)])
  ids[9] = "s3"
  c, path = _npz(tmp, x_train=X, y_train=Y, ids_train=ids)
  return c, [path, "ids_train has duplicate ids: 's3' at samples 3 and 9"]


def meta_lacks_class(tmp):
  c, path = _npz(tmp, x_train=X, y_train=Y, x_meta=X[:4], y_meta=np.array([0, 1, 0, 1]))
  return c, ["trusted set has no sample of class(es) 2", "allow_missing_meta_classes=true"]


def meta_without_labels(tmp):
  c, path = _npz(tmp, x_train=X, y_train=Y, x_meta=X[:4])
  return c, [path, "has x_meta but no y_meta"]


def meta_shape(tmp):
  c, path = _npz(tmp, x_train=X, y_train=Y, x_meta=X[:3, :2], y_meta=Y[:3])
  return c, [path, "x_meta images are (2, 4, 1), training images (4, 4, 1)"]


def three_d_images(tmp):
  c, path = _npz(tmp, x_train=X[..., 0], y_train=Y)
  return c, [path, "x_train must be [n, H, W, C]", "add a channel axis"]


def empty_class_folder(tmp):
  root = _folder(tmp)
  os.makedirs(os.path.join(root, "d"))
  return _config(dataset="folder", data_root=root), [
      "data_root", os.path.join(root, "d"), "has no image files"]


def no_class_folders(tmp):
  root = os.path.join(tmp, "flat")
  _png(os.path.join(root, "x.png"))
  return _config(dataset="folder", data_root=root), ["data_root", "has no class subfolders"]


def missing_folder(tmp):
  root = os.path.join(tmp, "nowhere")
  return _config(dataset="folder", data_root=root), ["data_root", root, "does not exist"]


def corrupt_image(tmp):
  root = _folder(tmp)
  bad = os.path.join(root, "b", "9.png")
  with open(bad, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n truncated")
  return _config(dataset="folder", data_root=root), [
      "data_root", f"cannot read image {bad}", "skip_bad_images=true"]


def mixed_channels(tmp):
  root = _folder(tmp)
  _png(os.path.join(root, "c", "gray.png"), mode="L")
  return _config(dataset="folder", data_root=root), [
      "data_root", "mixed channel counts", "gray.png is grayscale", "image_channels=1 or 3"]


def mixed_sizes(tmp):
  root = _folder(tmp)
  _png(os.path.join(root, "c", "big.png"), size=(9, 7))
  return _config(dataset="folder", data_root=root), [
      "data_root", "different sizes", "big.png is 7x9", "set image_size"]


def csv_duplicate(tmp):
  root = _folder(tmp)
  csv = os.path.join(tmp, "labels.csv")
  with open(csv, "w") as f:
    f.write("a/0.png,b\nb/1.png,c\na/0.png,c\n")
  return _config(dataset="folder", data_root=root, label_csv=csv), [
      "label_csv", csv, "lists a/0.png twice (lines 1 and 3)"]


def csv_unknown_label(tmp):
  root = _folder(tmp)
  csv = os.path.join(tmp, "labels.csv")
  with open(csv, "w") as f:
    f.write("a/0.png,zebra\n")
  return _config(dataset="folder", data_root=root, label_csv=csv), [
      "label_csv", csv, "line 1", "label 'zebra' is neither a class name"]


def csv_unknown_file(tmp):
  root = _folder(tmp)
  csv = os.path.join(tmp, "labels.csv")
  with open(csv, "w") as f:
    f.write("a/77.png,b\n")
  return _config(dataset="folder", data_root=root, label_csv=csv), [
      "label_csv", "line 1", "a/77.png is not an image file under data_root"]


def meta_folder_lacks_class(tmp):
  root = _folder(tmp)
  meta = os.path.join(tmp, "meta")
  for c in ("a", "b"):
    _png(os.path.join(meta, c, "0.png"))
  return _config(dataset="folder", data_root=root, meta_root=meta), [
      "trusted set has no sample of class(es) 2 (c)", "allow_missing_meta_classes=true"]


def unknown_class_in_test_folder(tmp):
  root = _folder(tmp)
  test = os.path.join(tmp, "test")
  _png(os.path.join(test, "zebra", "0.png"))
  return _config(dataset="folder", data_root=root, test_root=test), [
      "test_root", "zebra is not a training class"]


def trusted_ids_unknown(tmp):
  c, _ = _npz(tmp, x_train=X, y_train=Y)
  ids = os.path.join(tmp, "ids.txt")
  with open(ids, "w") as f:
    f.write("0\n1\n99\n")
  c.trusted_ids = ids
  return c, ["trusted_ids", ids, "line 3", "'99' is not the id of a training sample"]


def tfds_without_name(tmp):
  del tmp
  return _config(dataset="tfds"), ["dataset=tfds needs tfds_name"]


CASES = [missing_file, missing_x_train, missing_y_train, unknown_key, lengths_differ,
         fractional_labels, string_labels, label_out_of_range, negative_label,
         label_of_test_set_out_of_range, nan_pixels, duplicate_ids, meta_lacks_class,
         meta_without_labels, meta_shape, three_d_images, empty_class_folder, no_class_folders,
         missing_folder, corrupt_image, mixed_channels, mixed_sizes, csv_duplicate,
         csv_unknown_label, csv_unknown_file, meta_folder_lacks_class, unknown_class_in_test_folder,
         trusted_ids_unknown, tfds_without_name]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, case):
  config, words = case(str(tmp_path))
  work = tmp_path / "run"
  with pytest.raises(ConfigError) as e:
    train.train_and_evaluate(config, str(work))
  msg = str(e.value)
  assert "\n" not in msg
  for w in words:
    assert w in msg, f"{w!r} not in {msg!r}"
  assert not work.exists()


def test_missing_meta_class_is_a_warning_when_allowed(tmp_path, caplog):
  config, _ = meta_lacks_class(str(tmp_path))
  config.allow_missing_meta_classes = True
  config.method = "mwnet"
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert "trusted set has no sample of class(es) 2" in caplog.text
  assert (tmp_path / "run" / "label_issues.csv").exists()
