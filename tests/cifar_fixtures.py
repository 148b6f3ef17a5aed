"""Small CIFAR stand-ins made in the tests: python-format archives and tfds record lists."""
import io
import os
import pickle
import tarfile

import numpy as np

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def fake_images(n, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _batch(images, labels, name):
  """A batch dict laid out as the real pickles: rows of 3072 bytes, channel-major (R, G, B)."""
  d = {"batch_label": "synthetic", "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
       "filenames": [f"img_{i}.png" for i in range(len(images))]}
  if name == "cifar10":
    d["labels"] = [int(v) for v in labels]
  else:
    d["fine_labels"] = [int(v) for v in labels]
    d["coarse_labels"] = [int(v) // 5 for v in labels]
  return pickle.dumps(d, protocol=2)


def make_python_archive(directory, name="cifar10", n_train=60, n_test=20, seed=0,
                        folder_only=False):
  """Write a python-version CIFAR archive (``.tar.gz``, or its unpacked folder) of random images.

  Returns ``(path, x_train, y_train, x_test, y_test)`` in archive order.
  """
  k = NUM_CLASSES[name]
  rng = np.random.default_rng(seed)
  x_tr, x_te = fake_images(n_train, seed), fake_images(n_test, seed + 1)
  y_tr, y_te = rng.integers(0, k, n_train), rng.integers(0, k, n_test)
  if name == "cifar10":
    folder = "cifar-10-batches-py"
    parts = np.array_split(np.arange(n_train), 5)
    files = {f"data_batch_{i + 1}": _batch(x_tr[p], y_tr[p], name) for i, p in enumerate(parts)}
    files["test_batch"] = _batch(x_te, y_te, name)
    archive = "cifar-10-python.tar.gz"
  else:
    folder = "cifar-100-python"
    files = {"train": _batch(x_tr, y_tr, name), "test": _batch(x_te, y_te, name)}
    archive = "cifar-100-python.tar.gz"
  if folder_only:
    root = os.path.join(directory, folder)
    os.makedirs(root, exist_ok=True)
    for member, data in files.items():
      with open(os.path.join(root, member), "wb") as f:
        f.write(data)
    return root, x_tr, y_tr, x_te, y_te
  path = os.path.join(directory, archive)
  with tarfile.open(path, "w:gz") as tar:
    for member, data in files.items():
      info = tarfile.TarInfo(f"{folder}/{member}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path, x_tr, y_tr, x_te, y_te


def tfds_records(images, labels, split, order_seed=0, **extra):
  """tfds-style records (``id`` = ``<split>_<archive position>``) in a shuffled storage order."""
  perm = np.random.default_rng(order_seed).permutation(len(labels))
  out = []
  for p in perm:
    rec = {"id": f"{split}_{p:05d}", "image": images[p], "label": np.int64(labels[p])}
    rec.update({k: np.int64(v[p]) for k, v in extra.items()})
    out.append(rec)
  return out
