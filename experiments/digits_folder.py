"""Write the digits as an image folder with noisy labels: the data of docs/own_data.md's example.

    python -m experiments.digits_folder runs/digits_folder [--rate 0.4] [--seed 0]

Writes PNG files (8x8 grayscale, the 17 ink levels scaled to 0..255) of scikit-learn's digits:

* ``train/<given label>/<id>.png``: the training images filed under their *given* label, of
  which a fraction ``--rate`` was redrawn uniformly at random (so about 36% are wrong at 0.4),
  like a scraped data set sorted by its noisy labels;
* ``trusted/<label>/<id>.png``: 10 images per class whose labels are right (a set checked by
  hand);
* ``test/<label>/<id>.png``: the 500 test images of ``dataset=digits`` (the same split);
* ``truth.csv``: ``path,label`` with the true label of every training file (for checking the
  label issues afterwards; the training run never reads it).

``<id>`` is the image's index in ``sklearn.datasets.load_digits``.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np


def write(root: str, rate: float = 0.4, seed: int = 0, per_class: int = 10) -> dict:
  """Write the folder; returns counts (train, trusted, test, wrong labels)."""
  from PIL import Image
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  from gdw_jax.data import corruption

  d = load_digits()
  pixels = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
  index = np.arange(len(d.target))
  pool, test = train_test_split(index, test_size=500, stratify=d.target, random_state=0)
  rng = np.random.default_rng(seed)
  trusted = np.concatenate([rng.permutation(pool[d.target[pool] == c])[:per_class]
                            for c in range(10)])
  train = np.setdiff1d(pool, trusted)
  given = corruption.sample_labels(d.target[train], corruption.uniform_matrix(10, rate), rng)

  def save(part, ids, labels):
    for i, label in zip(ids, labels):
      folder = os.path.join(root, part, str(label))
      os.makedirs(folder, exist_ok=True)
      Image.fromarray(pixels[i]).save(os.path.join(folder, f"{i:04d}.png"))

  save("train", train, given)
  save("trusted", trusted, d.target[trusted])
  save("test", test, d.target[test])
  with open(os.path.join(root, "truth.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "label"])
    for i, label in zip(train, given):
      w.writerow([f"{label}/{i:04d}.png", d.target[i]])
  return {"train": len(train), "trusted": len(trusted), "test": len(test),
          "wrong": int(np.sum(given != d.target[train]))}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("root")
  p.add_argument("--rate", type=float, default=0.4, help="uniform noise rate of given labels")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  if os.path.exists(os.path.join(args.root, "train")):
    print(f"error: {args.root}/train exists; choose a new folder", file=sys.stderr)
    return 2
  n = write(args.root, args.rate, args.seed)
  print(f"{args.root}: train {n['train']} images ({n['wrong']} with a wrong label), trusted "
        f"{n['trusted']}, test {n['test']}; true labels in {args.root}/truth.csv")
  return 0


if __name__ == "__main__":
  sys.exit(main())
