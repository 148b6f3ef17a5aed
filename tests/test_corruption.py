"""Label noise, long-tailed subsampling and the meta split (gdw_jax.data.corruption)."""
import numpy as np
import pytest

from gdw_jax.data import corruption


def _rng(seed=0):
  return np.random.default_rng(seed)


def test_uniform_matrix_is_official_mixing_matrix():
  c = corruption.uniform_matrix(10, 0.4)
  np.testing.assert_allclose(c.sum(1), 1.0)
  np.testing.assert_allclose(np.diag(c), 0.6 + 0.04)   # the true label can be kept
  off = c[~np.eye(10, dtype=bool)]
  np.testing.assert_allclose(off, 0.04)


def test_uniform_noise_keeps_true_label_sometimes_and_realised_rate():
  labels = np.repeat(np.arange(10), 5000)
  noisy = corruption.sample_labels(labels, corruption.uniform_matrix(10, 0.4), _rng())
  changed = np.mean(noisy != labels)
  # r (1 - 1/K) = 0.36 flipped in expectation, not 0.4.
  assert abs(changed - 0.36) < 0.01
  # Among samples that were "resampled" some landed on their own class: per-class
  # confusion rows match the matrix.
  conf = np.zeros((10, 10))
  np.add.at(conf, (labels, noisy), 1)
  conf /= conf.sum(1, keepdims=True)
  np.testing.assert_allclose(conf, corruption.uniform_matrix(10, 0.4), atol=0.02)


@pytest.mark.parametrize("kind,targets_per_row", [("flip", 1), ("flip2", 2)])
def test_flip_matrices_targets(kind, targets_per_row):
  c = corruption.corruption_matrix(kind, 10, 0.4, _rng(3))
  np.testing.assert_allclose(c.sum(1), 1.0)
  np.testing.assert_allclose(np.diag(c), 0.6)
  for i in range(10):
    off = np.flatnonzero((c[i] > 0) & (np.arange(10) != i))
    assert len(off) == targets_per_row
    assert i not in off
    np.testing.assert_allclose(c[i, off], 0.4 / targets_per_row)


def test_flip_noise_goes_only_to_targets_and_rate():
  labels = np.repeat(np.arange(10), 3000)
  c = corruption.corruption_matrix("flip2", 10, 0.3, _rng(1))
  noisy = corruption.sample_labels(labels, c, _rng(2))
  assert abs(np.mean(noisy != labels) - 0.3) < 0.01
  for i in range(10):
    seen = set(np.unique(noisy[labels == i]))
    assert seen <= set(np.flatnonzero(c[i] > 0))


def test_flip_matrix_is_seeded():
  a = corruption.corruption_matrix("flip", 10, 0.4, _rng(7))
  b = corruption.corruption_matrix("flip", 10, 0.4, _rng(7))
  np.testing.assert_array_equal(a, b)


def test_long_tailed_counts_exp_and_step():
  counts = np.full(10, 5000)
  exp = corruption.long_tailed_counts(counts, 0.01, "exp")
  assert exp.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
  step = corruption.long_tailed_counts(counts, 0.1, "step")
  assert step.tolist() == [5000] * 5 + [500] * 5


def test_long_tailed_empty_class_is_an_error():
  with pytest.raises(ValueError, match="no training image"):
    corruption.long_tailed_counts(np.full(10, 100), 0.001, "exp")


def test_meta_split_disjoint_balanced_and_errors():
  labels = np.repeat(np.arange(5), [30, 40, 50, 60, 70])
  meta, rest = corruption.split_meta(labels, 10, _rng())
  assert np.intersect1d(meta, rest).size == 0
  assert np.union1d(meta, rest).size == labels.size
  assert np.bincount(labels[meta]).tolist() == [10] * 5
  with pytest.raises(ValueError, match="larger than class 0"):
    corruption.split_meta(labels, 31, _rng())


def test_make_biased_split_end_to_end():
  labels = np.repeat(np.arange(10), 200)
  c = corruption.make_biased_split(labels, num_classes=10, noise_type="uniform", noise_rate=0.6,
                                   imbalance_factor=0.1, meta_per_class=5, seed=4)
  assert np.intersect1d(c.meta_indices, c.train_indices).size == 0
  np.testing.assert_array_equal(labels[c.train_indices], c.true_labels)
  assert np.bincount(labels[c.meta_indices]).tolist() == [5] * 10
  # long-tailed by true label: class 0 keeps all 195, class 9 keeps int(195 * 0.1)
  assert c.class_counts[0] == 195 and c.class_counts[9] == 19
  assert c.realised_noise_rate == pytest.approx(np.mean(c.noisy_labels != c.true_labels))
  again = corruption.make_biased_split(labels, num_classes=10, noise_type="uniform",
                                       noise_rate=0.6, imbalance_factor=0.1, meta_per_class=5,
                                       seed=4)
  np.testing.assert_array_equal(c.noisy_labels, again.noisy_labels)


def test_bad_noise_arguments():
  with pytest.raises(ValueError, match="valid: none, uniform, uniform_other, flip, flip2, "
                                       "sym_exact, sym_other, asym$"):
    corruption.corruption_matrix("pairflip", 10, 0.2, _rng())
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    corruption.corruption_matrix("uniform", 10, 1.5, _rng())
