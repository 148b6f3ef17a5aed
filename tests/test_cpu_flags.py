"""The fast XLA:CPU defaults: applied only where they exist and apply, never over the user's own
flags, and they change results only by float32 summation order."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gdw_jax import cpu_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG = "--xla_cpu_experimental_ynn_fusion_type"


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  monkeypatch.setattr(cpu_flags, "_jax_started", lambda: False)
  return tmp_path


def test_applied_on_cpu_and_cached(cache):
  env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  added = cpu_flags.apply(env)
  assert added == (f"{FLAG}=-individual_convolution",)
  assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", *added]
  (path,) = (cache / "gdw_jax").iterdir()
  assert json.loads(path.read_text()) == {added[0]: True}
  assert "XLA:CPU flags applied" in cpu_flags.describe(added)
  assert cpu_flags.user_flags(env) == "--xla_force_host_platform_device_count=2"


def test_the_users_flag_wins(cache):
  env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{FLAG}="}
  assert cpu_flags.apply(env) == ()
  assert env["XLA_FLAGS"] == f"{FLAG}="


@pytest.mark.parametrize("env", [{"JAX_PLATFORMS": "cuda"}, {"JAX_PLATFORMS": "tpu,cpu"},
                                 {"JAX_PLATFORMS": "cpu", "GDW_JAX_CPU_FLAGS": "0"}])
def test_not_applied_off_cpu_or_when_opted_out(cache, env):
  env = dict(env)
  assert cpu_flags.apply(env) == ()
  assert "XLA_FLAGS" not in env


def test_not_applied_to_float64_computations(cache):
  """float64 convolutions are slower with the flag (cpu_flags' docstring): a float64 run keeps
  XLA's defaults, a float32 or bfloat16 one gets the flag."""
  env = {"JAX_PLATFORMS": "cpu"}
  assert cpu_flags.apply(env, dtype="float64") == () and "XLA_FLAGS" not in env
  assert cpu_flags.apply(env, dtype="bfloat16") and FLAG in env["XLA_FLAGS"]


def test_too_late_once_jax_has_started(cache, monkeypatch):
  """This process's flags can no longer change; a subprocess's environment still can."""
  monkeypatch.setattr(cpu_flags, "_jax_started", lambda: True)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv(cpu_flags.OPT_OUT, raising=False)
  assert cpu_flags.apply() == () and "XLA_FLAGS" not in os.environ
  child = {"JAX_PLATFORMS": "cpu"}
  assert cpu_flags.apply(child) and FLAG in child["XLA_FLAGS"]


def test_an_unknown_flag_is_never_applied(cache, monkeypatch):
  """XLA aborts the process on an unknown flag or value: the probe must catch both."""
  monkeypatch.setattr(cpu_flags, "FAST_FLAGS", {FLAG: "-no_such_fusion",
                                                "--xla_cpu_no_such_flag": "true"})
  env = {"JAX_PLATFORMS": "cpu"}
  assert cpu_flags.apply(env) == ()
  assert "XLA_FLAGS" not in env


_GRADS = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from gdw_jax import losses, models
with jax.enable_x64(True):
  out = {}
  x64 = jax.random.normal(jax.random.PRNGKey(0), (32, 8, 8, 3), jnp.float64)
  y = jnp.arange(32) % 10
  params, state = models.get("cnn", 10, {}, jnp.float64).init(jax.random.PRNGKey(1), x64)
  for dtype in (jnp.float64, jnp.float32):
    m, x = models.get("cnn", 10, {}, dtype), x64.astype(dtype)
    loss = lambda p: jnp.mean(losses.cross_entropy(
        m.apply(jax.tree.map(lambda a: a.astype(dtype), p), state, x, True)[0], y))
    g = jax.jit(jax.grad(loss))(params)  # one compile (op by op: one per primitive)
    out[str(jnp.dtype(dtype))] = np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)])
err = np.linalg.norm(out["float32"] - out["float64"]) / np.linalg.norm(out["float64"])
print(json.dumps({"rel_err": float(err), "flags": __import__("os").environ.get("XLA_FLAGS", "")}))
"""


def _grad_error(xla_flags: str):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags, GDW_JAX_CPU_FLAGS="0")
  out = subprocess.run([sys.executable, "-c", _GRADS], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_fast_flags_change_convolution_gradients_only_by_float32_rounding():
  """A conv net's float32 gradients, with and without the flags, against float64: both at
  float32 rounding (measured ~1e-7 relative here; 1e-5 leaves room for other machines, while a
  wrong gradient would be O(1))."""
  flags = cpu_flags.supported([f"{k}={v}" for k, v in cpu_flags.FAST_FLAGS.items()])
  assert flags, "this jaxlib knows none of the fast flags: update cpu_flags.FAST_FLAGS"
  fast, default = _grad_error(" ".join(flags)), _grad_error("")
  assert FLAG in fast["flags"] and FLAG not in default["flags"]
  assert fast["rel_err"] < 1e-5 and default["rel_err"] < 1e-5, (fast, default)
  assert np.isfinite(fast["rel_err"]) and fast["rel_err"] > 0  # really float32 vs float64
