"""A biased training set, a clean meta set and a clean test set, built from a source + config."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional

import numpy as np

from gdw_jax.data import corruption, noise, sources


@dataclasses.dataclass
class BiasedDataset:
  name: str
  num_classes: int
  x_train: np.ndarray
  y_train: np.ndarray        # noisy labels (what the learner sees)
  y_train_true: np.ndarray   # clean labels (analysis only)
  train_indices: np.ndarray  # positions in the source's training pool
  x_meta: np.ndarray
  y_meta: np.ndarray
  meta_indices: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  corruption_matrix: np.ndarray
  augment: Optional[Callable] = None     # (rng, x) -> x on device, train and meta (see sources)
  preprocess: Optional[Callable] = None  # x -> x on device, evaluation

  @property
  def num_train(self) -> int:
    return int(self.y_train.shape[0])

  @property
  def class_counts(self) -> np.ndarray:
    """Per-class training counts by the (noisy) labels the learner sees."""
    return np.bincount(self.y_train, minlength=self.num_classes)

  @property
  def noise_mask(self) -> np.ndarray:
    return self.y_train != self.y_train_true

  def summary(self) -> Dict[str, Any]:
    return {
        "dataset": self.name,
        "num_classes": self.num_classes,
        "num_train": self.num_train,
        "num_meta": int(self.y_meta.shape[0]),
        # > 0 only with a meta_seed different from the split seed (official GDW behaviour)
        "num_meta_in_train": int(np.isin(self.meta_indices, self.train_indices).sum()),
        "num_test": int(self.y_test.shape[0]),
        "realised_noise_rate": float(self.noise_mask.mean()) if self.num_train else 0.0,
        "train_class_counts_true": np.bincount(
            self.y_train_true, minlength=self.num_classes).tolist(),
        "train_class_counts_noisy": self.class_counts.tolist(),
        "corruption_matrix": np.round(self.corruption_matrix, 6).tolist(),
    }

  def save_labels(self, path: str) -> None:
    np.savez(path, noisy_labels=self.y_train, true_labels=self.y_train_true,
             train_indices=self.train_indices, meta_indices=self.meta_indices,
             meta_labels=self.y_meta, test_labels=self.y_test,
             corruption_matrix=self.corruption_matrix)


def build(config) -> BiasedDataset:
  """Load ``config.dataset`` and apply meta split, noise and imbalance from ``config``."""
  src = sources.load(config.dataset, config)
  meta_seed = int(config.get("meta_seed", -1))
  class_map = None
  if config.noise_type == "asym" and float(config.noise_rate) > 0:
    class_map = noise.class_map_for(config.dataset, config.asym_generator, config.class_map,
                                    src.num_classes)
  c = corruption.make_biased_split(
      src.y_pool, num_classes=src.num_classes, noise_type=config.noise_type,
      noise_rate=float(config.noise_rate), imbalance_factor=float(config.imbalance_factor),
      imbalance_type=config.imbalance_type, meta_per_class=int(config.meta_per_class),
      seed=int(config.seed), split_rng=config.get("split_rng", "numpy"),
      meta_seed=None if meta_seed < 0 else meta_seed, noisy_labels=src.y_pool_noisy,
      noise_on_given_labels=bool(config.noise_on_given_labels), class_map=class_map,
      asym_generator=config.asym_generator)
  return BiasedDataset(
      name=src.name, num_classes=src.num_classes,
      x_train=src.x_pool[c.train_indices], y_train=c.noisy_labels, y_train_true=c.true_labels,
      train_indices=c.train_indices,
      x_meta=src.x_pool[c.meta_indices], y_meta=src.y_pool[c.meta_indices],
      meta_indices=c.meta_indices, x_test=src.x_test, y_test=src.y_test,
      corruption_matrix=c.matrix, augment=src.augment, preprocess=src.preprocess)
