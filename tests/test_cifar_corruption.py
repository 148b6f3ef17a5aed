"""Corruption on CIFAR-sized label arrays, and the legacy replay against the official numbers.

The official splits depend on the labels only through the per-class counts (the code shuffles
each class's list of positions, then draws labels class by class), so CIFAR-shaped label arrays
(5,000 / 500 images per class, any order) reproduce the numbers the spec quotes for real CIFAR.
"""
import numpy as np
import pytest

from gdw_jax.data import corruption as co


def cifar_labels(k, seed=0):
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(k), 50000 // k))


def split(labels, k, **kw):
  kw = {"noise_type": "uniform", "noise_rate": 0.4, "meta_per_class": 1000 // k, "seed": 0, **kw}
  return co.make_biased_split(labels, num_classes=k, **kw)


@pytest.mark.parametrize("k", [10, 100])
@pytest.mark.parametrize("noise,rate,changed", [("uniform", 0.4, None), ("uniform", 0.6, None),
                                                ("flip", 0.4, 0.4), ("flip2", 0.4, 0.4)])
def test_realised_noise_rates_and_meta_split(k, noise, rate, changed):
  labels = cifar_labels(k)
  c = split(labels, k, noise_type=noise, noise_rate=rate, seed=1)
  expected = rate * (1 - 1 / k) if changed is None else changed  # uniform may keep the label
  assert c.train_indices.shape[0] == 49000 and c.meta_indices.shape[0] == 1000
  assert abs(c.realised_noise_rate - expected) < 4 * np.sqrt(expected * (1 - expected) / 49000)
  assert not np.intersect1d(c.meta_indices, c.train_indices).size  # disjoint by default
  np.testing.assert_array_equal(np.bincount(labels[c.meta_indices], minlength=k), 1000 // k)
  np.testing.assert_array_equal(c.true_labels, labels[c.train_indices])
  assert c.noisy_labels.min() >= 0 and c.noisy_labels.max() < k
  np.testing.assert_allclose(c.matrix.sum(axis=1), 1.0)
  if noise in ("flip", "flip2"):  # changed labels only go to the matrix's targets
    ch = c.noisy_labels != c.true_labels
    assert np.all(c.matrix[c.true_labels[ch], c.noisy_labels[ch]] > 0)


def test_long_tailed_counts_on_cifar():
  labels = cifar_labels(10)
  c = split(labels, 10, noise_type="none", meta_per_class=0, imbalance_factor=0.01)
  # The LDAM-DRW / ABSGD protocol sizes (absgd_and_imbalance_losses.md §3): 12,406 images.
  np.testing.assert_array_equal(
      c.class_counts, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
  c = split(labels, 10, noise_type="none", meta_per_class=0, imbalance_factor=0.1,
            imbalance_type="step")
  assert c.class_counts.sum() == 27500
  c100 = split(cifar_labels(100), 100, noise_type="none", meta_per_class=0, imbalance_factor=0.01)
  assert c100.class_counts.sum() == 10847 and c100.class_counts[-1] == 5
  # MW-Net: 10 meta images per class first, then img_max = 4990 (mwnet_cmwnet.md §2.3).
  c = split(labels, 10, noise_type="none", meta_per_class=10, imbalance_factor=0.01)
  np.testing.assert_array_equal(
      c.class_counts, [4990, 2991, 1793, 1075, 644, 386, 231, 138, 83, 49])
  assert not np.intersect1d(c.meta_indices, c.train_indices).size


def test_bad_imbalance_and_meta_size_are_clear_errors():
  labels = cifar_labels(100)
  with pytest.raises(ValueError, match="leaves class.* with no training image"):
    split(labels, 100, imbalance_factor=0.001, meta_per_class=10)
  with pytest.raises(ValueError, match="meta set of 600 per class is larger than class"):
    split(labels, 100, meta_per_class=600)
  with pytest.raises(ValueError, match="meta set of 600 per class is larger than class"):
    split(labels, 100, meta_per_class=600, split_rng="legacy")


def test_separate_meta_seed_overlaps_the_training_set():
  labels = cifar_labels(10)
  c = split(labels, 10, seed=100, meta_seed=1)
  overlap = np.isin(c.meta_indices, c.train_indices).mean()
  assert 0.9 < overlap < 1.0  # ~98% as in the official code (4,900 of 5,000 per class)
  same = split(labels, 10, seed=100, meta_seed=100)
  assert not np.isin(same.meta_indices, same.train_indices).any()


@pytest.mark.parametrize("k,overlap,per_class", [
    (10, 983, [100, 98, 98, 99, 98, 99, 99, 100, 97, 95]), (100, 975, None)])
def test_legacy_gdw_meta_train_overlap_matches_spec(k, overlap, per_class):
  # gdw.md §3.1: GDW's meta set (seed 1) vs its training set (--seed 100).
  labels = cifar_labels(k, seed=7)
  c = split(labels, k, split_rng="legacy", seed=100, meta_seed=1)
  shared = c.meta_indices[np.isin(c.meta_indices, c.train_indices)]
  assert shared.size == overlap
  if per_class:
    np.testing.assert_array_equal(np.bincount(labels[shared], minlength=k), per_class)


@pytest.mark.parametrize("k,noise,rate,realised", [
    (10, "uniform", 0.4, 0.3585), (10, "uniform", 0.6, 0.5378), (100, "uniform", 0.4, 0.3928),
    (100, "uniform", 0.6, 0.5924), (10, "flip", 0.2, 0.2010), (10, "flip", 0.4, 0.4012)])
def test_legacy_realised_rates_match_spec(k, noise, rate, realised):
  # gdw.md §3.2: realised fractions of the official code with seed 100.
  c = split(cifar_labels(k, seed=3), k, noise_type=noise, noise_rate=rate, split_rng="legacy",
            seed=100, meta_seed=1)
  assert round(100 * c.realised_noise_rate, 2) == round(100 * realised, 2)


def test_legacy_flip_targets_match_spec():
  # Seeded with 1 inside the helpers, so independent of --seed (mwnet_cmwnet.md §2.1).
  flip = {0: 6, 1: 9, 2: 6, 3: 0, 4: 0, 5: 1, 6: 8, 7: 6, 8: 2, 9: 4}
  flip2 = {0: {9, 3}, 1: {4, 8}, 2: {1, 8}, 3: {8, 4}, 4: {2, 5}, 5: {7, 4}, 6: {9, 2},
           7: {8, 5}, 8: {6, 5}, 9: {5, 4}}
  labels = cifar_labels(10)
  for seed in (1, 100):
    m = split(labels, 10, noise_type="flip", noise_rate=0.4, split_rng="legacy", seed=seed).matrix
    for i, j in flip.items():
      assert m[i, j] == pytest.approx(0.4) and m[i, i] == pytest.approx(0.6)
    m2 = split(labels, 10, noise_type="flip2", noise_rate=0.4, split_rng="legacy",
               seed=seed).matrix
    for i, targets in flip2.items():
      assert set(np.flatnonzero(np.isclose(m2[i], 0.2))) == targets


def test_legacy_label_draws_equal_numpy_choice_one_by_one():
  y = np.random.default_rng(0).integers(0, 10, 3000)
  for matrix in (co.uniform_matrix(10, 0.6),
                 co.legacy_flip_matrix("flip2", 10, 0.4, np.random.RandomState(1))):
    ours = co.legacy_sample_labels(y, matrix, np.random.RandomState(5))
    rs = np.random.RandomState(5)
    reference = np.array([rs.choice(10, p=matrix[t]) for t in y])
    np.testing.assert_array_equal(ours, reference)


def test_legacy_split_replays_the_official_loop():
  # The official constructor: np.random.seed(s); per class, shuffle a Python list of positions.
  labels = np.random.default_rng(2).integers(0, 10, 700)
  np.random.seed(11)
  meta, train = [], []
  for c in range(10):
    ids = [i for i, v in enumerate(labels) if v == c]
    np.random.shuffle(ids)
    meta += ids[:5]
    train += ids[5:]
  ours_meta, ours_train, _ = co.legacy_split(labels, 10, 5, 11)
  np.testing.assert_array_equal(ours_meta, meta)
  np.testing.assert_array_equal(ours_train, train)


def test_legacy_long_tail_is_gdw_python_random_order():
  labels = cifar_labels(10)
  c = split(labels, 10, noise_type="none", split_rng="legacy", seed=100, imbalance_factor=0.01)
  np.testing.assert_array_equal(
      c.class_counts, [4900, 2937, 1760, 1055, 632, 379, 227, 136, 81, 49])
  # Same kept positions as random.seed(1) + random.shuffle on the official, class-grouped list.
  import random
  _, official_train, _ = co.legacy_split(labels, 10, 100, 100)
  true = labels[official_train]
  random.seed(1)
  kept = []
  for cls, n in enumerate(c.class_counts):
    pos = [i for i, v in enumerate(true) if v == cls]
    random.shuffle(pos)
    kept += pos[:n]
  np.testing.assert_array_equal(c.train_indices, np.sort(official_train[kept]))


def test_given_noisy_labels_replace_sampling():
  labels = cifar_labels(10)
  given = np.where(np.arange(labels.size) % 3 == 0, (labels + 1) % 10, labels)
  c = split(labels, 10, noise_type="none", noisy_labels=given, imbalance_factor=0.1)
  np.testing.assert_array_equal(c.noisy_labels, given[c.train_indices])
  np.testing.assert_array_equal(c.true_labels, labels[c.train_indices])
  changed = c.noisy_labels != c.true_labels
  np.testing.assert_allclose(c.matrix[np.arange(10), (np.arange(10) + 1) % 10],
                             [changed[c.true_labels == i].mean() for i in range(10)])
  with pytest.raises(ValueError, match="noise_type must be 'none'"):
    split(labels, 10, noise_type="uniform", noise_rate=0.2, noisy_labels=given)
  with pytest.raises(ValueError, match="10 given noisy labels for 50000 images"):
    split(labels, 10, noise_type="none", noisy_labels=given[:10])
