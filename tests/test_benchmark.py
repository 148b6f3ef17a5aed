"""The digits benchmark's command-line contract (tiny: 1 epoch, 2 seeds)."""
import json

from experiments import digits_benchmark


def test_benchmark_writes_per_seed_json_and_prints_table(tmp_path, capsys):
  out = tmp_path / "bench.json"
  rc = digits_benchmark.main(["--noise", "flip", "--rate", "0.3", "--seeds", "2",
                              "--methods", "erm,gdw", "--epochs", "1", "--json", str(out)])
  assert rc == 0
  res = json.loads(out.read_text())
  assert set(res) == {"erm", "gdw"}
  for r in res.values():
    assert len(r["last5_acc"]) == 2 and len(r["best_acc"]) == 2
    assert all(0 <= a <= 100 for a in r["last5_acc"])
  table = capsys.readouterr().out
  assert "| method | last5_acc (mean ± std) | best_acc (mean ± std) | seeds |" in table
  assert "| gdw |" in table and "| erm |" in table


def test_benchmark_rejects_unknown_method(capsys):
  assert digits_benchmark.main(["--methods", "erm,magic", "--seeds", "1"]) == 2
  assert "unknown method" in capsys.readouterr().err
