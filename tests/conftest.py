"""Test setup: import this checkout's package, keep XLA quiet and fast on CPU."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from gdw_jax import cpu_flags  # noqa: E402  (imports no jax)

# The suite runs with the CLI's fast XLA:CPU defaults (docs/benchmarks.md); subprocesses inherit
# them through XLA_FLAGS. GDW_JAX_CPU_FLAGS=0 runs it with XLA's own defaults.
CPU_FLAGS = cpu_flags.apply()


def pytest_report_header(config):
  return cpu_flags.describe(CPU_FLAGS) or "XLA:CPU flags: XLA's defaults"
