"""The step benchmark's interface (other scripts read its JSON) on a tiny model."""
import json

import pytest

from experiments import bench_step


def test_bench_step_writes_the_documented_json(tmp_path, capsys):
  out = tmp_path / "sub" / "bench.json"
  rc = bench_step.main(["--model", "mlp", "--batch", "8", "--methods", "erm,gdw",
                        "--hypergrad", "jvp,autodiff", "--steps", "10", "--warmup", "1",
                        "--json", str(out)])
  assert rc == 0
  r = json.loads(out.read_text())
  assert set(r) == {"erm/jvp", "erm/autodiff", "gdw/jvp", "gdw/autodiff"}
  for key, v in r.items():
    assert {"step_ms", "ratio_to_erm", "peak_mem_mb", "compile_s"} <= set(v), key
    assert v["step_ms"] > 0 and v["compile_s"] > 0 and v["peak_mem_mb"] > 0
    assert v["steps_timed"] == 10 and v["backend"] == "cpu"
    assert v["ratio_to_erm"] == pytest.approx(v["step_ms"] / r["erm/jvp"]["step_ms"])
    assert v["images_per_s"] == pytest.approx(8 / (v["step_ms"] / 1e3))
  assert r["erm/jvp"] == r["erm/autodiff"]  # ERM has no hypergradient: measured once
  assert r["gdw/jvp"]["step_ms"] != r["gdw/autodiff"]["step_ms"]  # two real measurements
  table = capsys.readouterr().out
  assert "| gdw/autodiff |" in table and "× ERM" in table


@pytest.mark.parametrize("argv", [["--methods", "nope"], ["--hypergrad", "fast"],
                                  ["--steps", "3"], ["--model", "vgg"],
                                  ["--model", "resnet32", "--compute-dtype", "bfloat16"]])
def test_bench_step_refuses_bad_arguments(argv, capsys):
  assert bench_step.main(argv) == 2
  assert "error: bad arguments" in capsys.readouterr().err
