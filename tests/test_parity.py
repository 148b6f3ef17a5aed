"""Step parity with the official GDW / MW-Net code on the recorded float64 fixtures.

The four real runs (float64 ResNet-32 steps, 30 to 40 s each on 2 CPU cores) run once, in
one subprocess shared by every assertion through a module-scoped fixture. Missing fixtures fail
the suite: never skipped.
"""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from gdw_jax import cpu_flags, parity

from tests.official_fixtures import fixture_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GDW = "official_gdw_cifar10_2steps.npz"
MWNET = "official_mwnet_cifar10_2steps.npz"
GDW_EPOCH20 = "official_gdw_cifar10_epoch20_3steps.npz"  # cosine lr 0.0854, not the base 0.1
FILES = {"gdw": GDW, "mwnet": MWNET, "gdw_epoch20": GDW_EPOCH20}
# 31 convs + 31 BN (scale, bias) + linear (weight, bias) = 95 parameters, 62 BN running
# statistics, 4 VNet tensors, and the logit cotangent of each step (2, or 3 at epoch 20).
NUM_TENSORS = 95 + 62 + 4 + 2


# (fixture, route) pairs: every fixture by reverse mode, and GDW's also by the JVP route (issue
# 17: GDW with both routes). The JVP route is the same code at any epoch and for MW-Net, and is
# checked against reverse mode in float64 by tests/test_hypergrad.py; the epoch-20 fixture by
# JVP passes too (3.04e-13, `python -m gdw_jax.parity --hypergrad jvp ...epoch20_3steps.npz`)
# but costs a minute of float64 convolutions here.
CASES = [("gdw", "autodiff"), ("gdw", "jvp"), ("mwnet", "autodiff"), ("gdw_epoch20", "autodiff")]
_WORKER = """
import pickle, sys
from gdw_jax import parity
out = {}
for which, path, hypergrad in pickle.loads(sys.stdin.buffer.read()):
  out[(which, hypergrad)] = parity.check(path, hypergrad=hypergrad)
sys.stdout.buffer.write(pickle.dumps(out))
"""


@pytest.fixture(scope="module")
def reports():
  """Every case's report, computed once in one subprocess with XLA's default CPU flags: the
  suite's fast float32 flag (tests/conftest.py) makes these float64 convolutions ~3x slower
  (gdw_jax/cpu_flags.py), and ``python -m gdw_jax.parity`` runs without it too."""
  todo = [(which, fixture_path(FILES[which]), route) for which, route in CASES]
  env = {**os.environ, cpu_flags.OPT_OUT: "0", "XLA_FLAGS": cpu_flags.user_flags()}
  out = subprocess.run([sys.executable, "-c", _WORKER], cwd=ROOT, env=env,
                       input=pickle.dumps(todo), capture_output=True, timeout=1800)
  assert out.returncode == 0, out.stderr.decode()[-3000:]
  return pickle.loads(out.stdout)


@pytest.mark.parametrize("which,hypergrad", CASES)
def test_official_step_parity(reports, which, hypergrad):
  """Every fixture, at any epoch: the epoch-20 one fails (0.43) if the real update takes its lr
  from an optimizer count that started at 0 while the look-ahead uses the recorded cosine lr."""
  report = reports[(which, hypergrad)]
  steps = 3 if which == "gdw_epoch20" else 2
  assert report.method == which.split("_")[0]
  assert len(report.rows) == NUM_TENSORS - 2 + steps
  names = {r.name for r in report.rows}
  for name in ("conv1.weight", "layer2.0.conv1.weight", "layer3.4.bn2.bias", "linear.weight",
               "layer3.4.bn2.running_mean", "layer3.4.bn2.running_var", "vnet.linear1.weight",
               "vnet.linear2.bias", *(f"logit_grad[{s}]" for s in range(steps))):
    assert name in names
  # Every tensor really moved in the reference (otherwise the comparison would be vacuous) ...
  assert min(r.ref_norm for r in report.rows) > 0
  # ... and ours moved the same way, far below the 1e-8 bar.
  assert report.ok, parity.render(report)
  assert report.max_rel_err < 1e-10, parity.render(report)
  text = parity.render(report)
  assert text.splitlines()[-1] == (f"parity OK max_rel_err={report.max_rel_err:.3e} "
                                   f"tensors={len(report.rows)}")


def test_epoch20_fixture_records_a_scheduled_lr():
  """The new fixture really sits mid-schedule (else it would not test the lr's source)."""
  fx = parity.load_fixture(fixture_path(GDW_EPOCH20))
  assert int(fx.hyper["epoch"]) == 20 and int(fx.hyper["steps"]) == 3
  assert abs(float(fx.hyper["lr"]) - 0.0854) < 1e-4 < abs(float(fx.hyper["base_lr"]) - 0.0854)


def test_update_errors_are_relative_to_the_reference_update():
  rng = np.random.default_rng(0)
  init = {"w": rng.normal(size=(4, 3))}
  delta = rng.normal(size=(4, 3))
  fx = parity.Fixture("fx.npz", {}, init, {"w": init["w"] + delta}, {"linear1.bias": np.zeros(2)},
                      {"linear1.bias": np.ones(2)}, None, None, None, None,
                      np.ones((1, 2, 3)))
  ours = {"w": init["w"] + 1.01 * delta, "v:linear1.bias": np.ones(2),
          "logit_grad": np.ones((1, 2, 3))}
  rows = {r.name: r for r in parity.compare(fx, ours)}
  assert rows["w"].rel_err == pytest.approx(0.01)
  assert rows["vnet.linear1.bias"].rel_err == 0.0
  assert rows["logit_grad[0]"].rel_err == 0.0
  report = parity.Report("fx.npz", "gdw", list(rows.values()), 1e-8)
  assert not report.ok and report.worst.name == "w"
  assert parity.render(report).splitlines()[-1] == "parity FAILED max_rel_err=1.000e-02 worst=w"
  nan_report = parity.Report("fx.npz", "gdw", [parity.Row("z", (), 1.0, float("nan"))], 1e-8)
  assert not nan_report.ok


def test_cli_exit_codes_without_running_a_model(monkeypatch, capsys):
  """main() end to end on a real fixture, with the model run replaced by the reference itself
  (exit 0) or by a perturbed copy of it (exit 1)."""
  path = fixture_path(MWNET)
  fx = parity.load_fixture(path)
  exact = {**fx.after, **{f"v:{k}": v for k, v in fx.vafter.items()},
           "logit_grad": fx.logit_grad}
  monkeypatch.setattr(parity, "run", lambda fx, config=None: exact)
  assert parity.main([path]) == 0
  assert capsys.readouterr().out.splitlines()[-1] == (
      f"parity OK max_rel_err=0.000e+00 tensors={NUM_TENSORS}")
  name = "layer2.0.conv1.weight"
  off = {**exact, name: fx.init[name] + 1.001 * (fx.after[name] - fx.init[name])}
  monkeypatch.setattr(parity, "run", lambda fx, config=None: off)
  assert parity.main([path, "--tol", "1e-8"]) == 1
  assert capsys.readouterr().out.splitlines()[-1] == (
      f"parity FAILED max_rel_err=1.000e-03 worst={name}")
  assert parity.main([path, "--tol", "1e-2"]) == 0


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "gdw_jax.parity", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)


def test_cli_bad_input_is_one_clear_line(tmp_path):
  missing = _cli(str(tmp_path / "nope.npz"))
  assert missing.returncode == 2 and missing.stdout == ""
  assert missing.stderr.strip().splitlines() == [f"parity: error: {tmp_path / 'nope.npz'}: "
                                                 f"no such file"]
  garbage = tmp_path / "garbage.npz"
  garbage.write_text("not an npz")
  out = _cli(str(garbage))
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert "not a readable .npz fixture" in out.stderr
  partial = tmp_path / "partial.npz"
  np.savez(partial, **{"batch/x": np.zeros((1, 1, 3, 32, 32))})
  out = _cli(str(partial))
  assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
  assert "not a parity fixture, missing batch/y" in out.stderr


def test_inconsistent_fixture_is_rejected(tmp_path):
  with np.load(fixture_path(MWNET), allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  arrays["hyper/steps"] = np.array(3)
  bad = tmp_path / "bad.npz"
  np.savez(bad, **arrays)
  with pytest.raises(parity.FixtureError, match="inconsistent batch shapes for 3 steps"):
    parity.load_fixture(str(bad))
  arrays["hyper/steps"] = np.array(2)
  arrays["hyper/mode"] = np.array("l2rw")
  np.savez(bad, **arrays)
  with pytest.raises(parity.FixtureError, match="unknown hyper/mode 'l2rw'"):
    parity.load_fixture(str(bad))
  arrays["hyper/mode"] = np.array("gdw")
  arrays["hyper/dtype"] = np.array("float32")
  np.savez(bad, **arrays)
  with pytest.raises(parity.FixtureError, match="parity needs a float64 fixture"):
    parity.load_fixture(str(bad))
