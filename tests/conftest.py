"""Test setup: import this checkout's package, keep XLA quiet and fast on CPU."""
import atexit
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from gdw_jax import cpu_flags  # noqa: E402  (imports no jax)

# The suite runs with the CLI's fast XLA:CPU defaults (docs/benchmarks.md); subprocesses inherit
# them through XLA_FLAGS. GDW_JAX_CPU_FLAGS=0 runs it with XLA's own defaults.
CPU_FLAGS = cpu_flags.apply()

# One JAX compilation cache for the session, in-process and in the subprocess runs (they inherit
# the environment): many tests compile the same programs (the digits GDW step above all), and a
# hit costs a fraction of a compile (digits, 3 epochs: 8.3 s of compilation cold, 2.2 s warm).
# A fresh directory per session, removed at the end, so every session starts cold as CI does.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="gdw_jax_tests_xla_cache_")
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.3",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def pytest_report_header(config):
  flags = cpu_flags.describe(CPU_FLAGS) or "XLA:CPU flags: XLA's defaults"
  return [flags, f"JAX compilation cache: {os.environ['JAX_COMPILATION_CACHE_DIR']}"]
