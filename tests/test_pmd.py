"""PMD feature-dependent noise (gdw_jax.data.pmd) and experiments/make_pmd_noise on digits."""
import json
import re

import numpy as np
import pytest

from configs import digits
from experiments import make_pmd_noise
from gdw_jax import data
from gdw_jax.data import pmd


def _probs(n=4000, k=10, seed=0, temperature=10.0):
  """Softmax of random logits, confident enough that every type reaches 35% with a factor
  >= 1 (at factor 1 these give 13% / 31% / 26% for types I / II / III)."""
  z = np.random.default_rng(seed).normal(size=(n, k)) * temperature
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def test_keep_probabilities_are_the_published_formulas():
  eta_u, eta_s = np.array([0.9, 0.5, 0.4]), np.array([0.05, 0.5, 0.3])
  d = eta_u - eta_s
  np.testing.assert_allclose(pmd.keep_probability(eta_u, eta_s, 1),
                             np.maximum(1 - (0.5 - 0.5 * d ** 2), 0.5))
  np.testing.assert_allclose(pmd.keep_probability(eta_u, eta_s, 2), 1 - (1 - d ** 3))
  np.testing.assert_allclose(pmd.keep_probability(eta_u, eta_s, 3),
                             1 - (1 - (d ** 3 + d ** 2 + d) / 3))
  assert pmd.published("cifar10", 1, 0.35) == (1.43, 25)
  assert pmd.published("cifar100", 3, 0.7) == (1.20, 10)
  assert pmd.published("digits", 1, 0.35) is None


@pytest.mark.parametrize("pmd_type", [1, 2, 3])
def test_labels_are_top1_or_top2_at_the_expected_rate(pmd_type):
  probs = _probs()
  clean = probs.argmax(1)
  u, s, _, _ = pmd.top2(probs)
  factor = pmd.calibrate_factor(probs, clean, pmd_type, 0.35)
  assert pmd.expected_rate(probs, clean, pmd_type, factor) == pytest.approx(0.35, abs=1e-5)
  labels = pmd.draw_labels(probs, pmd_type, factor, np.random.default_rng(1))
  assert np.all((labels == u) | (labels == s))
  assert abs(np.mean(labels != clean) - 0.35) < 0.03   # binomial sd 0.0075 at n = 4000
  # the flipped samples are the low-margin ones (what makes PMD feature-dependent)
  margin = np.sort(probs, 1)[:, -1] - np.sort(probs, 1)[:, -2]
  assert margin[labels != clean].mean() < margin[labels == clean].mean()


def test_factor_errors():
  probs = _probs(200)
  with pytest.raises(ValueError, match="factor must be >= 1"):
    pmd.draw_labels(probs, 1, 0.5, np.random.default_rng(0))
  with pytest.raises(ValueError, match=r"cannot reach rate 0.05 .* give 0\.[23]"):  # ~30%, f = 1
    pmd.calibrate_factor(probs, probs.argmax(1), 2, 0.05)
  with pytest.raises(ValueError, match="unknown PMD type 4"):
    pmd.keep_probability(np.ones(2), np.zeros(2), 4)


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "digits", "--type", "1", "--rate", "0.35"], "PLC publishes no factor for "
     "digits type 1 at rate 0.35 .* pass --factor F or --factor auto"),
    (["--dataset", "cifar10", "--type", "1", "--rate", "0.5"], "no factor for cifar10 type 1"),
    (["--dataset", "cifar10", "--type", "4", "--rate", "0.35"], "unknown PMD type 4"),
    (["--dataset", "mnist", "--type", "1", "--rate", "0.35"], "unknown dataset 'mnist'"),
    (["--dataset", "digits", "--type", "1", "--rate", "1.2", "--factor", "2"], r"\(0, 1\)"),
    (["--dataset", "digits", "--type", "1", "--rate", "0.3", "--factor", "0.5"], ">= 1"),
    (["--dataset", "digits", "--type", "1", "--rate", "0.3", "--factor", "auto", "--set",
      "nope=1"], "no such config key"),
])
def test_bad_input_exits_2_with_one_line_before_any_work(argv, message, tmp_path, capsys):
  out = tmp_path / "l.npy"
  assert make_pmd_noise.main(argv + ["--out", str(out), "--workdir", str(tmp_path / "w")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "\n" not in err
  assert re.search(message, err), err
  assert not out.exists() and not (tmp_path / "w").exists()


def test_make_pmd_noise_on_digits_writes_a_label_file_that_trains(tmp_path, capsys):
  out, probs = tmp_path / "pmd.npy", tmp_path / "eta.npy"
  # PLC's recipe (25 epochs at lr 1e-3): the MLP reaches ~95% on its training pool, and type I
  # needs a factor of ~1.16 for 35% (at factor 1 it would give ~25%)
  rc = make_pmd_noise.main(["--dataset", "digits", "--type", "1", "--rate", "0.35", "--factor",
                            "auto", "--out", str(out), "--probs", str(probs),
                            "--workdir", str(tmp_path / "w")])
  assert rc == 0
  labels, eta = np.load(out), np.load(probs)
  summary = json.loads((tmp_path / "pmd.npy.json").read_text())
  clean = np.asarray(data.sources.load("digits", digits.get_config()).y_pool)
  assert labels.shape == clean.shape == (1297,) and labels.dtype == np.int64
  u, s, _, _ = pmd.top2(eta)
  assert np.all((labels == u) | (labels == s))          # always the clean model's top-1 or 2
  realised = np.mean(labels != clean)
  # calibrated in expectation; 1,297 draws: sd sqrt(.35 * .65 / 1297) = 0.013, tolerance 3 sd
  assert abs(realised - 0.35) < 0.04
  assert summary["realised_noise_rate"] == pytest.approx(realised)
  assert f"realised noise rate {realised:.4f}" in capsys.readouterr().out
  # the file is what label_file= loads for digits
  ds = data.build(digits.get_config(f"label_file={out}"))
  np.testing.assert_array_equal(ds.y_train, labels[ds.train_indices])
