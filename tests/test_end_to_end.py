"""Short real training runs on the embedded digits data, and the command-line contract."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import digits
from gdw_jax import train
from gdw_jax.validation import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**kw):
  c = digits.get_config()
  c.num_epochs = 2
  c.progress = False
  c.report = False  # report.md is tested in test_report.py
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.mark.parametrize("method", ["erm", "mwnet", "gdw"])
def test_short_run_writes_workdir(method, tmp_path):
  final = train.train_and_evaluate(_config(method=method, num_epochs=6), str(tmp_path))
  for name in ("config.json", "data.json", "labels.npz", "metrics.jsonl", "final.json",
               "sample_weights.npz", "predictions.npz"):
    assert (tmp_path / name).stat().st_size > 0, name
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [r["epoch"] for r in rows] == list(range(6))
  accs = [r["test_acc"] for r in rows]
  assert final["last_acc"] == accs[-1]
  assert final["best_acc"] == max(accs)
  assert final["last5_acc"] == pytest.approx(np.mean(accs[-5:]))
  assert final["best_acc"] > 50.0       # it learns from real digits despite 40% noise
  assert rows[-1]["train_loss"] < rows[0]["train_loss"]
  labels = np.load(tmp_path / "labels.npz")
  assert np.intersect1d(labels["meta_indices"], labels["train_indices"]).size == 0
  data = json.loads((tmp_path / "data.json").read_text())
  assert data["realised_noise_rate"] == pytest.approx(
      np.mean(labels["noisy_labels"] != labels["true_labels"]))
  assert 0.3 < data["realised_noise_rate"] < 0.42
  if method != "erm":
    assert rows[-1]["meta_loss"] > 0
    w = np.load(tmp_path / "sample_weights.npz")["final_weights"]
    assert w.shape[1] == (10 if method == "gdw" else 1)
    assert np.all(np.isfinite(w)) and np.all(w > 0)


def test_runs_are_deterministic(tmp_path):
  a = train.train_and_evaluate(_config(method="gdw"), str(tmp_path / "a"))
  b = train.train_and_evaluate(_config(method="gdw"), str(tmp_path / "b"))
  for k in ("last_acc", "best_acc", "final_train_loss"):
    assert a[k] == b[k]


BAD = [
    ({"method": "sgd"}, "unknown method 'sgd'; valid: absgd, cb, cmwnet, cmwnet_sl, erm, focal, "
                        "gdw, l2rw, ldam_drw, mwnet"),
    ({"dataset": "mnist"}, "unknown dataset 'mnist'; valid:"),
    ({"noise_type": "pair"}, "unknown noise_type 'pair'; valid: none, uniform, uniform_other, "
                             "flip, flip2, sym_exact, sym_other, asym"),
    ({"noise_rate": 1.2}, "noise_rate must be in [0, 1], got 1.2"),
    ({"noise_rate": -0.1}, "noise_rate must be in [0, 1], got -0.1"),
    ({"imbalance_factor": 0.0}, "imbalance_factor must be in (0, 1]"),
    ({"imbalance_factor": 1.5}, "imbalance_factor must be in (0, 1]"),
    ({"meta_per_class": 500}, "meta set of 500 per class is larger than class"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"num_epochs": 0}, "num_epochs must be >= 1"),
    ({"imbalance_factor": 0.001}, "leaves class(es)"),
    ({"method": "gdw", "meta_per_class": 0}, "needs a meta set"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_is_rejected_before_any_work(overrides, message, tmp_path):
  workdir = tmp_path / "w"
  with pytest.raises(ConfigError) as e:
    train.train_and_evaluate(_config(**overrides), str(workdir))
  assert message in str(e.value)
  assert "\n" not in str(e.value)
  assert not workdir.exists()


def _cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, "-m", "gdw_jax.main", *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli_bad_input_is_one_line_without_traceback(tmp_path):
  workdir = tmp_path / "w"
  r = _cli("--config=configs/digits.py", f"--workdir={workdir}", "--config.method=nope")
  assert r.returncode == 2
  assert "gdw_jax: error: unknown method 'nope'; valid: absgd, cb, cmwnet" in r.stderr
  assert "Traceback" not in r.stderr
  assert not workdir.exists()


def test_cli_runs_default_config_with_overrides(tmp_path):
  workdir = tmp_path / "w"
  r = _cli(f"--workdir={workdir}", "--config.num_epochs=1", "--config.method=mwnet",
           "--config.noise_type=flip2")
  assert r.returncode == 0, r.stderr
  assert "last5_acc=" in r.stdout
  assert "checkpoint" not in r.stderr  # no orbax INFO lines around the progress bar
  cfg = json.loads((workdir / "config.json").read_text())
  assert cfg["method"] == "mwnet" and cfg["noise_type"] == "flip2" and cfg["dataset"] == "digits"
  assert json.loads((workdir / "final.json").read_text())["num_epochs"] == 1


def test_config_argument_string(tmp_path):
  c = digits.get_config("method=erm,noise=flip,rate=0.2")
  assert (c.method, c.noise_type, c.noise_rate) == ("erm", "flip", 0.2)
  with pytest.raises(ValueError, match="unknown config argument"):
    digits.get_config("lr=3")


@pytest.mark.parametrize("config", [[], ["--config=configs/digits.py"]])  # default / given file
def test_cli_unknown_config_key_is_one_line_error(tmp_path, config):
  r = _cli(*config, f"--workdir={tmp_path / 'w'}", "--config.cmwnet.num_heads=3")
  assert r.returncode == 2
  assert r.stderr.strip() == ("gdw_jax: error: --config.cmwnet.num_heads: no such config key "
                              "(see the config file, or --helpfull for the --config.* keys)")
  assert not (tmp_path / "w").exists()
