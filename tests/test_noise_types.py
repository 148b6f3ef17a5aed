"""The noise generators of each paper (gdw_jax.data.noise) against their definitions, and how
make_biased_split / data.build use them (class maps, hybrid noise, label files, bad input)."""
import numpy as np
import pytest

from configs import digits
from gdw_jax import data, validation
from gdw_jax.data import corruption, noise
from gdw_jax.validation import ConfigError

K = 10
LABELS = np.repeat(np.arange(K), 500)          # a balanced pool of 5,000
C10 = noise.BUILTIN_MAPS["cifar10"]


def _rng(seed=0):
  return np.random.default_rng(seed)


def _changes(true, noisy):
  """The set of (true, noisy) pairs among the changed labels."""
  m = true != noisy
  return set(map(tuple, np.stack([true[m], noisy[m]], 1).tolist()))


@pytest.mark.parametrize("rate", [0.2, 0.37, 0.8])
def test_sym_exact_resamples_exactly_int_rn_labels_from_all_classes(rate):
  noisy, chosen = noise.sym_exact(LABELS, rate, K, _rng(1))
  assert chosen.shape[0] == int(rate * 5000) == len(np.unique(chosen))
  untouched = np.setdiff1d(np.arange(5000), chosen)
  np.testing.assert_array_equal(noisy[untouched], LABELS[untouched])
  # the new label is uniform over all K classes, so ~1/K of the chosen keep their label
  # (binomial sd <= 0.007 at these counts; 0.03 is > 4 sd)
  kept = np.mean(noisy[chosen] == LABELS[chosen])
  assert abs(kept - 1 / K) < 0.03
  assert set(np.unique(noisy[chosen])) == set(range(K))


@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_sym_other_flips_exactly_int_rn_over_k_per_class_to_other_classes(rate):
  noisy, chosen = noise.sym_other(LABELS, rate, K, _rng(2))
  per_class = int(int(rate * 5000) / K)
  changed = noisy != LABELS
  np.testing.assert_array_equal(np.flatnonzero(changed), chosen)   # every chosen label changes
  np.testing.assert_array_equal(np.bincount(LABELS[changed], minlength=K), per_class)
  # targets: every other class, none favoured by much (per_class / 9 each in expectation)
  targets = np.bincount(noisy[changed & (LABELS == 0)], minlength=K)
  assert targets[0] == 0 and (targets[1:] > 0).all()


def test_uniform_other_matrix_always_changes_a_resampled_label():
  m = corruption.corruption_matrix("uniform_other", K, 0.3, None)
  np.testing.assert_allclose(np.diag(m), 0.7)
  np.testing.assert_allclose(m[~np.eye(K, dtype=bool)], 0.3 / 9)
  noisy = corruption.sample_labels(LABELS, m, _rng(3))
  assert abs(np.mean(noisy != LABELS) - 0.3) < 0.02   # sd 0.0065 at n = 5000


def test_builtin_class_maps():
  assert C10 == {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}  # truck->car, bird->plane, cat<->dog, deer->horse
  assert noise.CIFAR10_CMWNET_MAP == {9: 1, 2: 0, 3: 5, 4: 7}
  assert noise.BUILTIN_MAPS["digits"] == {7: 1, 2: 7, 3: 8, 5: 6, 6: 5}
  c100 = noise.BUILTIN_MAPS["cifar100"]
  assert (c100[0], c100[3], c100[4], c100[97], c100[99]) == (1, 4, 0, 98, 95)
  for block in range(20):  # a cyclic permutation inside every block of 5 ids
    ids = range(5 * block, 5 * block + 5)
    assert sorted(c100[c] for c in ids) == list(ids) and all(c100[c] != c for c in ids)


@pytest.mark.parametrize("generator", ["dividemix", "cmwnet"])
def test_whole_set_draw_changes_exactly_int_rn_with_a_full_map(generator):
  cyclic = {c: (c + 1) % K for c in range(K)}  # every class mapped: every chosen label changes
  noisy = noise.asym(LABELS, 0.4, cyclic, generator, _rng(4))
  assert np.sum(noisy != LABELS) == int(0.4 * 5000)
  assert _changes(LABELS, noisy) == set(cyclic.items())


def test_dividemix_asym_follows_the_map_at_about_half_the_rate_on_cifar10():
  m = noise.class_map_for("cifar10", "dividemix", "", K)
  noisy = noise.asym(LABELS, 0.4, m, "dividemix", _rng(5))
  assert _changes(LABELS, noisy) == set(C10.items())
  # int(0.4 n) drawn from the whole set, half of them in the 5 mapped classes (sd 0.005)
  assert abs(np.mean(noisy != LABELS) - 0.2) < 0.02


def test_cmwnet_slip_only_under_its_own_name():
  m = noise.class_map_for("cifar10", "cmwnet", "", K)
  noisy = noise.asym(LABELS, 0.4, m, "cmwnet", _rng(6))
  assert _changes(LABELS, noisy) == {(9, 1), (2, 0), (3, 5), (4, 7)}   # dog stays dog
  assert np.all(noisy[LABELS == 5] == 5)
  for generator in ("dividemix", "absgd", "plc"):
    m = noise.class_map_for("cifar10", generator, "", K)
    noisy = noise.asym(LABELS, 0.4, m, generator, _rng(6))
    assert (5, 3) in _changes(LABELS, noisy), generator
  # the slip is CIFAR-10's: on other datasets 'cmwnet' uses the usual map
  assert noise.class_map_for("cifar100", "cmwnet", "", 100) == noise.BUILTIN_MAPS["cifar100"]


def test_absgd_asym_is_per_class_exact_and_relabels_the_swap_in_place():
  noisy = noise.asym(LABELS, 0.4, C10, "absgd", _rng(7))
  for src, dst in ((9, 1), (2, 0), (4, 7)):
    assert np.sum((LABELS == src) & (noisy == dst)) == int(0.4 * 500)
  # cat -> dog first: 200 of the 500 cats; then int(0.4 * 700) = 280 of the 700 current dogs
  # become cats (some of them the cats just flipped), as ABSGD's in-place loop does.
  assert np.sum(noisy == 3) == 300 + 280 and np.sum(noisy == 5) == 700 - 280
  assert _changes(LABELS, noisy) <= set(C10.items())


def test_plc_asym_moves_each_mapped_sample_with_probability_r():
  labels = np.repeat(np.arange(K), 4000)
  noisy = noise.asym(labels, 0.3, C10, "plc", _rng(8))
  for src, dst in C10.items():  # sd sqrt(.21 / 4000) = 0.007
    assert abs(np.mean(noisy[labels == src] == dst) - 0.3) < 0.03
  assert np.all(noisy[labels == 0] == 0) and _changes(labels, noisy) == set(C10.items())


def test_digits_asym_uses_the_mnist_map():
  m = noise.class_map_for("digits", "dividemix", "", K)
  noisy = noise.asym(LABELS, 0.5, m, "dividemix", _rng(9))
  assert _changes(LABELS, noisy) == {(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)}


def test_class_map_parsing_and_errors():
  assert noise.parse_class_map("2:7, 3:8,", 10) == {2: 7, 3: 8}
  assert noise.class_map_for("cifar10", "cmwnet", "0:1", 10) == {0: 1}   # explicit wins
  for text, msg in [("2-7", "not src:dst"), ("2:7,2:8", "class 2 twice"), ("", "empty"),
                    ("2:10", "out of range for 10 classes"), ("a:b", "not src:dst")]:
    with pytest.raises(ValueError, match=msg):
      noise.parse_class_map(text, 10)
  with pytest.raises(ValueError, match=r"no class map for dataset 'mydata'.*class_map='src:dst"):
    noise.class_map_for("mydata", "dividemix", "", 5)


def test_make_biased_split_reports_the_realised_rate_of_every_new_type():
  labels = np.repeat(np.arange(K), 110)
  for kind in ("sym_exact", "sym_other", "uniform_other", "asym"):
    c = corruption.make_biased_split(labels, num_classes=K, noise_type=kind, noise_rate=0.4,
                                     meta_per_class=10, seed=3, class_map=C10)
    assert c.realised_noise_rate == np.mean(c.noisy_labels != c.true_labels) > 0.1
    assert c.train_indices.shape[0] == 1000 and not np.isin(c.meta_indices, c.train_indices).any()
    np.testing.assert_allclose(c.matrix.sum(1), 1.0)
  exact = corruption.make_biased_split(labels, num_classes=K, noise_type="sym_other",
                                       noise_rate=0.4, meta_per_class=10, seed=3)
  assert np.sum(exact.noisy_labels != exact.true_labels) == int(400 / K) * K


def test_hybrid_noise_flips_the_given_labels():
  labels = np.repeat(np.arange(K), 100)
  given = (labels + 1) % K                      # e.g. PMD labels: all differ from the truth
  with pytest.raises(ValueError, match="noise_on_given_labels=True"):
    corruption.make_biased_split(labels, num_classes=K, noise_type="asym", noise_rate=0.5,
                                 meta_per_class=0, noisy_labels=given, class_map=C10)
  c = corruption.make_biased_split(labels, num_classes=K, noise_type="asym", noise_rate=0.5,
                                   meta_per_class=0, noisy_labels=given, class_map=C10,
                                   noise_on_given_labels=True, asym_generator="plc")
  moved = c.noisy_labels != given[c.train_indices]
  src = given[c.train_indices][moved]
  np.testing.assert_array_equal(c.noisy_labels[moved], [C10[s] for s in src])  # source = given
  assert moved.sum() > 150 and set(np.unique(src)) <= set(C10)
  np.testing.assert_allclose(c.matrix, corruption.empirical_matrix(c.true_labels,
                                                                   c.noisy_labels, K))
  with pytest.raises(ValueError, match="legacy .* no hybrid noise"):
    corruption.make_biased_split(labels, num_classes=K, noise_type="uniform", noise_rate=0.3,
                                 meta_per_class=0, noisy_labels=given, split_rng="legacy",
                                 noise_on_given_labels=True)
  with pytest.raises(ValueError, match="legacy .* no sym_exact noise"):
    corruption.make_biased_split(labels, num_classes=K, noise_type="sym_exact", noise_rate=0.3,
                                 meta_per_class=0, split_rng="legacy")


def test_digits_config_builds_each_generator_and_label_files(tmp_path):
  c = digits.get_config("noise=asym,rate=0.4,asym_generator=cmwnet")
  ds = data.build(c)
  assert ds.summary()["realised_noise_rate"] == pytest.approx(ds.noise_mask.mean())
  assert _changes(ds.y_train_true, ds.y_train) == {(2, 7), (3, 8), (5, 6), (6, 5), (7, 1)}
  # a label file: one label per pool image (1,297 digits), the meta set keeps the clean labels
  pool = np.asarray(data.sources.load("digits", c).y_pool)
  given = (pool + 3) % K
  np.save(tmp_path / "l.npy", given)
  ds = data.build(digits.get_config(f"label_file={tmp_path / 'l.npy'}"))
  np.testing.assert_array_equal(ds.y_train, given[ds.train_indices])
  np.testing.assert_array_equal(ds.y_meta, pool[ds.meta_indices])
  hyb = data.build(digits.get_config(f"label_file={tmp_path / 'l.npy'},noise=uniform_other,"
                                     f"rate=0.3,hybrid=true"))
  assert 0.2 < np.mean(hyb.y_train != given[hyb.train_indices]) < 0.4   # ~0.3 (sd 0.013)


@pytest.mark.parametrize("overrides,message", [
    ({"noise_type": "asym", "class_map": "2:7,2:8"}, "class_map gives class 2 twice"),
    ({"noise_type": "asym", "class_map": "2:10"}, "class_map class 10 is out of range"),
    ({"noise_type": "asym", "asym_generator": "coteaching"}, "unknown asym_generator"),
    ({"label_file": "/nonexistent/l.npy", "noise_type": "none"}, "does not exist"),
    ({"label_file": "WRONG_LENGTH", "noise_type": "none"}, "has 5 labels; expected 1297"),
    ({"label_file": "GOOD", "noise_type": "uniform"}, "noise_on_given_labels=true to add it"),
])
def test_bad_noise_input_is_one_config_error(overrides, message, tmp_path):
  np.save(tmp_path / "short.npy", np.zeros(5, np.int64))
  np.save(tmp_path / "good.npy", np.zeros(1297, np.int64))
  c = digits.get_config()
  for k, v in overrides.items():
    c[k] = {"WRONG_LENGTH": str(tmp_path / "short.npy"),
            "GOOD": str(tmp_path / "good.npy")}.get(v, v)
  with pytest.raises(ConfigError, match=message) as e:
    validation.validate(c)
    validation.build_data(c)
  assert "\n" not in str(e.value)
