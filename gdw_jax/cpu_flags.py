"""Fast XLA:CPU defaults, applied before JAX initialises its backends.

XLA:CPU (jax 0.10.x) sends a convolution's weight gradient to a YNNPACK path that runs at 2-3
GFLOP/s on some x86 machines: a ResNet-32 training step took 4.2 s by default and 1.6 s with
``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` on a 2-core AMD EPYC (Zen 3),
and 1.01 s vs 0.74 s on a 2-core Intel Xeon (docs/benchmarks.md). The flag only moves those
convolutions back to XLA's own emitter: results differ from the default by float32 summation
order (both ~1e-3 from a float64 reference, as any two float32 orders do). For **float64** the
same flag is a loss: XLA's own emitter is 2.5x slower than the default on a float64 convolution
with its gradients (531 vs 216 ms, Intel Xeon), and the float64 ResNet-32 parity check took 180 s
instead of 59 s. So the flags are for float32 / bfloat16 compute only: :func:`apply` with
``dtype="float64"`` adds nothing.

:func:`apply` adds :data:`FAST_FLAGS` to ``XLA_FLAGS`` for the CLI, the benchmarks and the test
suite, unless

* the run computes in float64 (``dtype="float64"``: slower with the flag, above),
* the backend will not be the CPU (``JAX_PLATFORMS`` names another platform first, or an
  accelerator plugin for jax is installed and ``JAX_PLATFORMS`` is unset),
* the user already set a flag of that name in ``XLA_FLAGS`` (theirs wins),
* ``GDW_JAX_CPU_FLAGS=0`` (opt out), or JAX's backends are already initialised (too late: the
  flags are read once, when the first backend starts),
* this jaxlib does not know the flag: these flags are experimental and an unknown flag or value
  *aborts the process*, so each is first tried in a short subprocess (about a second, once per
  jaxlib version and flag: the answer is cached in ``~/.cache/gdw_jax``).

Nothing here imports jax, so calling :func:`apply` first thing keeps the flags effective.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

# name -> value. Measured in docs/benchmarks.md. (The oneDNN custom-call flags gave another 10%
# on the AMD machine of issue 15 and nothing on the Intel one used here; not applied.)
FAST_FLAGS: Dict[str, str] = {
    "--xla_cpu_experimental_ynn_fusion_type": "-individual_convolution",
}
OPT_OUT = "GDW_JAX_CPU_FLAGS"
ADDED = "GDW_JAX_CPU_FLAGS_ADDED"  # what apply() added to XLA_FLAGS (inherited by subprocesses)
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def _flag_names(xla_flags: str) -> set:
  return {item.split("=", 1)[0] for item in xla_flags.split() if item.startswith("--")}


def backend_is_cpu(environ=None) -> bool:
  """Whether JAX's default backend will be the CPU, decided without importing jax."""
  environ = os.environ if environ is None else environ
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip().lower() == "cpu"
  return not any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def _jax_started() -> bool:
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge  # only once jax is imported anyway
  return bool(xla_bridge.backends_are_initialized())


def _jaxlib_version() -> Optional[str]:
  try:
    return importlib.metadata.version("jaxlib")
  except Exception:  # noqa: BLE001 (no jaxlib: nothing to apply)
    return None


def _cache_path(jaxlib: str) -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "gdw_jax", f"xla_cpu_flags-jaxlib-{jaxlib}.json")


def _probe(flag: str) -> bool:
  """Does this jaxlib accept ``flag``? Tried in a subprocess (an unknown flag aborts it)."""
  env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
  code = "import jax, jax.numpy as jnp; jnp.zeros(2).sum().block_until_ready()"
  try:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         timeout=120)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return out.returncode == 0


def supported(flags: List[str]) -> List[str]:
  """The ``--name=value`` entries of ``flags`` this jaxlib accepts (cached on disk)."""
  jaxlib = _jaxlib_version()
  if jaxlib is None:
    return []
  path = _cache_path(jaxlib)
  try:
    with open(path) as f:
      known = json.load(f)
  except (OSError, ValueError):
    known = {}
  todo = [f for f in flags if f not in known]
  if todo:
    known.update({f: _probe(f) for f in todo})
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      tmp = f"{path}.{os.getpid()}.tmp"
      with open(tmp, "w") as f:
        json.dump(known, f)
      os.replace(tmp, path)
    except OSError:
      pass  # read-only home: probe again next time
  return [f for f in flags if known.get(f)]


def apply(environ=None, dtype: str = "float32") -> Tuple[str, ...]:
  """Add the fast CPU flags to ``XLA_FLAGS`` where they apply (see the module docstring);
  returns the flags added (empty if none). ``environ``: this process's environment (default),
  or a subprocess's (then whether JAX has started here does not matter). ``dtype``: the
  computation's float type (``config.dtype``); float64 gets no flags."""
  own = environ is None or environ is os.environ
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no") or dtype == "float64":
    return ()
  if not backend_is_cpu(environ) or (own and _jax_started()):
    return ()
  current = environ.get("XLA_FLAGS", "")
  user = _flag_names(current)
  wanted = [f"{name}={value}" for name, value in FAST_FLAGS.items() if name not in user]
  added = supported(wanted) if wanted else []
  if added:
    environ["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()
    environ[ADDED] = " ".join(added)
  return tuple(added)


def user_flags(environ=None) -> str:
  """``XLA_FLAGS`` without what :func:`apply` added (the user's own flags)."""
  environ = os.environ if environ is None else environ
  ours = set(environ.get(ADDED, "").split())
  return " ".join(f for f in environ.get("XLA_FLAGS", "").split() if f not in ours)


def describe(added: Tuple[str, ...]) -> str:
  """One line for a run's output."""
  if added:
    return f"XLA:CPU flags applied: {' '.join(added)} (set {OPT_OUT}=0 to keep XLA's defaults)"
  return ""
