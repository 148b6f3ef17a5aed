"""The step benchmark's interface (other scripts read its JSON) on a tiny model."""
import json

import pytest

from experiments import bench_step
from gdw_jax import cpu_flags


def test_bench_step_writes_the_documented_json(tmp_path, capsys):
  out = tmp_path / "sub" / "bench.json"
  rc = bench_step.main(["--model", "mlp", "--batch", "8", "--methods", "erm,gdw",
                        "--hypergrad", "jvp,autodiff", "--steps", "10", "--warmup", "1",
                        "--json", str(out)])
  assert rc == 0
  r = json.loads(out.read_text())
  assert set(r) == {"erm/jvp", "erm/autodiff", "gdw/jvp", "gdw/autodiff"}
  for key, v in r.items():
    assert {"step_ms", "ratio_to_erm", "peak_mem_mb", "compile_s", "xla_temp_mb"} <= set(v), key
    assert v["steps_timed"] == 10 and v["backend"] == "cpu"
    assert v["step_ms_min"] <= v["step_ms"]  # the median of the timed steps, not one of them
    assert v["ratio_to_erm"] == pytest.approx(v["step_ms"] / r["erm/jvp"]["step_ms"])
    assert v["xla_flags"] == " ".join(_ours()), key
    assert v["images_per_s"] == pytest.approx(8 / (v["step_ms"] / 1e3))
  assert r["erm/jvp"] == r["erm/autodiff"]  # ERM has no hypergradient: measured once
  # Two real compilations (XLA's buffer counts are deterministic): each meta step keeps more
  # temporaries than ERM's step, and the two routes differ.
  for hg in ("jvp", "autodiff"):
    assert r[f"gdw/{hg}"]["xla_temp_mb"] > r["erm/jvp"]["xla_temp_mb"]
  assert r["gdw/jvp"]["xla_temp_mb"] != r["gdw/autodiff"]["xla_temp_mb"]
  table = capsys.readouterr().out
  assert "| gdw/autodiff |" in table and "× ERM" in table


def _ours():
  return cpu_flags.supported([f"{k}={v}" for k, v in cpu_flags.FAST_FLAGS.items()])


def test_bench_step_measures_our_cpu_flags_against_xlas(tmp_path, capsys):
  out = tmp_path / "bench.json"
  assert bench_step.main(["--model", "mlp", "--batch", "8", "--methods", "erm", "--hypergrad",
                          "jvp", "--steps", "10", "--warmup", "1", "--cpu-flags", "both",
                          "--json", str(out)]) == 0
  r = json.loads(out.read_text())
  assert set(r) == {"erm/jvp", "erm/jvp [xla defaults]"}
  assert r["erm/jvp"]["xla_flags"] == " ".join(_ours()) and _ours()
  assert r["erm/jvp [xla defaults]"]["xla_flags"] == ""
  ours, xla = r["erm/jvp"]["step_ms"], r["erm/jvp [xla defaults]"]["step_ms"]
  assert (f"ERM step: {ours:.1f} ms with our CPU flags, {xla:.1f} ms with XLA's defaults "
          f"({xla / ours:.2f}x faster)") in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--methods", "nope"], ["--hypergrad", "fast"],
                                  ["--steps", "3"], ["--model", "vgg"],
                                  ["--model", "resnet32", "--compute-dtype", "bfloat16"]])
def test_bench_step_refuses_bad_arguments(argv, capsys):
  assert bench_step.main(argv) == 2
  assert "error: bad arguments" in capsys.readouterr().err
