"""The runs-per-hour benchmark and the one-command GPU check, end to end on tiny models (CPU);
the CIFAR-shaped synthetic source they train on."""
import json

import numpy as np
import pytest

from experiments import bench_runs, gpu_check, synthetic
from gdw_jax import runs


def test_cifar_shaped_source_builds_cifars_split_sizes():
  c = synthetic.cifar_config(pool=600, test=40, model="mlp", meta_per_class=10)
  ds = runs.setup(c).ds
  assert (ds.num_train, ds.y_meta.shape[0], ds.y_test.shape[0]) == (500, 100, 40)
  assert ds.x_train.dtype == np.uint8 and ds.x_train.shape[1:] == (32, 32, 3)
  assert ds.augment is not None and ds.preprocess is not None
  assert 0.3 < ds.noise_mask.mean() < 0.45  # the GDW CIFAR recipe: 40% uniform noise


def test_bench_runs_writes_runs_per_hour_and_the_time_split(tmp_path, capsys):
  out = tmp_path / "runs.json"
  rc = bench_runs.main(["--cases", "digits", "--ks", "1,2", "--digits-epochs", "1",
                        "--set", "mlp_hidden=(16,)", "--set", "report=False",
                        "--json", str(out)])
  assert rc == 0
  res = json.loads(out.read_text())
  one, two = res["cases"]["digits"]["1"], res["cases"]["digits"]["2"]
  assert one["together"]["steps"] == two["together"]["steps"] == 12  # 1 epoch, every run
  for row, k in ((one, 1), (two, 2)):
    assert row["together_runs_per_hour"] == pytest.approx(3600 * k / row["together_wall_s"])
    assert row["separate_runs_per_hour"] == pytest.approx(3600 * k / row["separate_wall_s"])
  assert one["separate_wall_s"] == one["together_wall_s"]  # K=1: the same single process
  assert two["together"]["timing"]["num_runs"] == 2
  split = res["digits_time_split"]
  assert set(split) >= {"compile", "steps", "eval", "checkpoint", "report", "total"}
  assert split["other"] == pytest.approx(split["total"] - sum(
      split[k] for k in ("compile", "steps", "eval", "hooks", "checkpoint", "report")))
  printed = capsys.readouterr().out
  assert "| digits | 2 |" in printed and "Time split of one digits run" in printed


def test_gpu_check_on_cpu_with_a_tiny_model(tmp_path, capsys):
  out = tmp_path / "gpu.json"
  rc = gpu_check.main(["--model", "mlp", "--batch", "8", "--steps", "10", "--pool", "320",
                       "--meta-per-class", "2", "--test", "40", "--seeds-pool", "220",
                       "--ks", "1,2", "--set", "mlp_hidden=(16,)", "--set", "batch_size=30",
                       "--json", str(out)])
  assert rc == 0
  res = json.loads(out.read_text())
  assert res["versions"]["backend"] == "cpu" and res["versions"]["jax"]
  assert set(res["step"]) == {"erm/autodiff", "gdw/autodiff", "gdw/jvp"}
  epoch = res["epoch"]
  assert epoch["steps"] == 10  # 300 training images, batch 30
  assert epoch["steps_per_s"] == pytest.approx(10 / epoch["epoch_s"])
  seeds = res["seeds"]
  assert set(seeds) == {"1", "2"}
  assert seeds["1"]["throughput_vs_k_single"] == pytest.approx(1.0)
  assert seeds["2"]["run_steps_per_s"] == pytest.approx(2 * seeds["2"]["steps_per_s_per_run"])
  printed = capsys.readouterr().out
  assert "one CIFAR-shaped epoch (10 steps)" in printed and "| gdw/jvp |" in printed
