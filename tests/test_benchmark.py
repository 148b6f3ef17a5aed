"""The digits benchmark's command-line contract (tiny: 1 epoch, 2 seeds)."""
import json

import numpy as np

from experiments import digits_benchmark


def test_benchmark_writes_per_seed_json_and_prints_table(tmp_path, capsys):
  """The JSON holds each seed's run results (as its final.json says) and the table their mean ±
  std."""
  out = tmp_path / "bench.json"
  rc = digits_benchmark.main(["--noise", "flip", "--rate", "0.3", "--seeds", "2",
                              "--methods", "erm,gdw", "--epochs", "1", "--json", str(out),
                              "--workdir", str(tmp_path / "runs")])
  assert rc == 0
  res = json.loads(out.read_text())
  assert set(res) == {"erm", "gdw"}
  table = capsys.readouterr().out
  assert "| method | last5_acc (mean ± std) | best_acc (mean ± std) | seeds |" in table
  for method, r in res.items():
    finals = [json.loads((tmp_path / "runs" / method / f"seed_{s}" / "final.json").read_text())
              for s in (0, 1)]
    for key in ("last5_acc", "best_acc", "last_acc"):
      assert r[key] == [f[key] for f in finals], (method, key)
    l5, best = np.array(r["last5_acc"]), np.array(r["best_acc"])
    assert (f"| {method} | {l5.mean():.2f} ± {l5.std():.2f} | {best.mean():.2f} ± "
            f"{best.std():.2f} | 2 |") in table


def test_benchmark_rejects_unknown_method(capsys):
  assert digits_benchmark.main(["--methods", "erm,magic", "--seeds", "1"]) == 2
  assert "unknown method" in capsys.readouterr().err
