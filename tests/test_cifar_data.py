"""CIFAR sources: tfds (mocked), the python archive, label files, CIFAR-N, and their errors."""
import os
import pickle
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gdw_jax.data import cifar, sources
from tests import cifar_fixtures as fx


def _config(**kw):
  return ml_collections.ConfigDict(dict(dict(cifar_archive="", data_dir="", label_file="",
                                             cifar_n="", split_rng="numpy", augment=True), **kw))


def test_tfds_mock_shapes_dtypes_and_label_ranges():
  with tfds.testing.mock_data(num_examples=40):
    for name, k in (("cifar10", 10), ("cifar100", 100)):
      src = sources.load(name, _config())
      assert src.x_pool.shape == (40, 32, 32, 3) and src.x_pool.dtype == np.uint8
      assert src.x_test.shape == (40, 32, 32, 3) and src.x_test.dtype == np.uint8
      assert src.y_pool.dtype == np.int64 and src.y_test.dtype == np.int64
      assert 0 <= src.y_pool.min() and src.y_pool.max() < k and src.num_classes == k
      assert src.y_pool_noisy is None and src.augment is not None and src.preprocess is not None


def test_tfds_records_are_put_back_in_archive_order():
  x_tr, x_te = fx.fake_images(30, 0), fx.fake_images(12, 1)
  y_tr, y_te = np.arange(30) % 10, np.arange(12) % 10

  def as_data_source(self, split, **kwargs):
    del self, kwargs
    if split == "train":
      return fx.tfds_records(x_tr, y_tr, "train", order_seed=3)
    return fx.tfds_records(x_te, y_te, "test", order_seed=4)

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    arr = cifar.load_tfds("cifar10", "/nonexistent")
  assert arr.archive_order
  np.testing.assert_array_equal(arr.x_train, x_tr)
  np.testing.assert_array_equal(arr.y_train, y_tr)
  np.testing.assert_array_equal(arr.x_test, x_te)


def test_unprepared_tfds_is_a_clear_error_not_a_download(tmp_path):
  t0 = time.time()
  with pytest.raises(cifar.DataNotFoundError) as e:
    sources.load("cifar10", _config(data_dir=str(tmp_path)))
  msg = str(e.value)
  assert "not prepared" in msg and "cifar_archive" in msg and "tfds build cifar10" in msg
  assert "--file_format=array_record" in msg and str(tmp_path) in msg
  assert time.time() - t0 < 30  # nothing was fetched
  assert isinstance(e.value, ValueError)  # the trainer reports ValueErrors as config errors


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("folder_only", [False, True])
def test_python_archive_round_trip(tmp_path, name, folder_only):
  path, x_tr, y_tr, x_te, y_te = fx.make_python_archive(str(tmp_path), name,
                                                        folder_only=folder_only)
  src = sources.load(name, _config(cifar_archive=path))
  assert src.x_pool.dtype == np.uint8 and src.x_pool.shape == (60, 32, 32, 3)
  np.testing.assert_array_equal(src.x_pool, x_tr)  # NCHW rows -> NHWC, archive order kept
  np.testing.assert_array_equal(src.y_pool, y_tr)
  np.testing.assert_array_equal(src.x_test, x_te)
  np.testing.assert_array_equal(src.y_test, y_te)


def test_python_archive_errors(tmp_path):
  with pytest.raises(cifar.DataNotFoundError, match="does not exist.*cifar-10-python.tar.gz"):
    cifar.read_python_archive(str(tmp_path / "missing.tar.gz"), "cifar10")
  path = fx.make_python_archive(str(tmp_path), "cifar100")[0]
  with pytest.raises(cifar.DataNotFoundError, match="cifar-10-batches-py/data_batch_1"):
    cifar.read_python_archive(path, "cifar10")  # a CIFAR-100 archive given for CIFAR-10
  junk = tmp_path / "junk.tar.gz"
  junk.write_bytes(b"not a tar file")
  with pytest.raises(cifar.DataNotFoundError, match="not a readable"):
    cifar.read_python_archive(str(junk), "cifar10")


class _Evil:
  def __reduce__(self):
    return (os.system, ("echo pwned",))


def test_python_archive_pickles_cannot_run_code(tmp_path):
  root = tmp_path / "cifar-10-batches-py"
  root.mkdir()
  good = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=2)
  for i in range(1, 6):
    (root / f"data_batch_{i}").write_bytes(good)
  (root / "test_batch").write_bytes(pickle.dumps({"data": _Evil(), "labels": [0]}, protocol=2))
  with pytest.raises(ValueError, match="refusing to load posix.system|refusing to load os.system"):
    cifar.read_python_archive(str(tmp_path), "cifar10")


def test_label_file_plc_length_and_errors(tmp_path):
  path, x_tr, y_tr, _, _ = fx.make_python_archive(str(tmp_path), "cifar10", n_train=50)
  noisy = (y_tr[:45] + 1) % 10  # PLC-style: labels for the first 90% of the images
  f = tmp_path / "labels.npy"
  np.save(f, noisy)
  src = sources.load("cifar10", _config(cifar_archive=path, label_file=str(f)))
  assert src.x_pool.shape[0] == 45  # the pool is the images the file labels
  np.testing.assert_array_equal(src.x_pool, x_tr[:45])
  np.testing.assert_array_equal(src.y_pool_noisy, noisy)

  np.save(f, np.zeros(47, np.int64))
  with pytest.raises(ValueError, match="has 47 labels; expected 50 .* or 45"):
    sources.load("cifar10", _config(cifar_archive=path, label_file=str(f)))
  np.save(f, np.full(50, 10, np.int64))
  with pytest.raises(ValueError, match=r"labels in \[10, 10\]; this dataset has 10 classes"):
    sources.load("cifar10", _config(cifar_archive=path, label_file=str(f)))
  np.save(f, np.zeros(50, np.float32))
  with pytest.raises(ValueError, match="1-D integer array"):
    sources.load("cifar10", _config(cifar_archive=path, label_file=str(f)))
  with pytest.raises(cifar.DataNotFoundError, match="does not exist"):
    sources.load("cifar10", _config(cifar_archive=path, label_file=str(tmp_path / "no.npy")))


def test_label_file_and_legacy_split_need_archive_order():
  with tfds.testing.mock_data(num_examples=20):  # mocked ids are random text: order unknown
    with pytest.raises(ValueError, match="split_rng=legacy need the images in archive order"):
      sources.load("cifar10", _config(split_rng="legacy"))


def test_cifar_n_human_labels_from_tfds():
  x, y = fx.fake_images(20, 0), np.arange(20) % 10
  worse = (y + 3) % 10

  def as_data_source(self, split, **kwargs):
    del kwargs
    assert self.name == "cifar10_n"
    extra = {"worse_label": worse} if split == "train" else {}
    return fx.tfds_records(x, y, split, order_seed=1, **extra)

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    src = sources.load("cifar10", _config(cifar_n="worse_label"))
  np.testing.assert_array_equal(src.y_pool, y)
  np.testing.assert_array_equal(src.y_pool_noisy, worse)
  with pytest.raises(ValueError, match="unknown cifar_n label set 'noise_label' for cifar10"):
    sources.load("cifar10", _config(cifar_n="noise_label"))
