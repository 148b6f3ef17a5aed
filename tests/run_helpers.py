"""Helpers for tests that run training in subprocesses (fresh jax, chosen device count)."""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One persistent XLA compilation cache for this test session's subprocesses: runs of the same
# program (e.g. a killed run and its resumption) compile once. A cached executable is the same
# program, so results are unaffected.
_CACHE = tempfile.mkdtemp(prefix="gdw_jax_test_xla_cache_")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

# Runs train_and_evaluate on a JSON config override in a fresh interpreter. With KILL_AT set to
# a global step, the process SIGKILLs itself (no cleanup of any kind) when the loop asks for that
# step's batch (the compiled path asks for a chunk's batches before running it): a hard kill at a
# known point, after the checkpoints before it were committed (saves run in the background; the
# driver waits for them so that the point is deterministic). With SIGNAL_AT, it sends itself a
# SIGTERM there instead (a preemption notice: the loop saves at its next segment end and stops);
# with STOP_AT, a SIGSTOP (the process holds still, its lease too, until a SIGCONT).
DRIVER = r"""
import json, os, signal, sys
from configs import digits
from gdw_jax import checkpoint, train
from gdw_jax.data import pipeline

OPEN = []
real_init = checkpoint.Checkpointer.__init__
def init(self, *args, **kwargs):
  real_init(self, *args, **kwargs)
  OPEN.append(self)
checkpoint.Checkpointer.__init__ = init

overrides, workdir = json.loads(sys.argv[1]), sys.argv[2]
kill_at = int(os.environ.get("KILL_AT", "-1"))
config = digits.get_config()
for key, value in overrides.items():
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = tuple(value) if isinstance(value, list) else value

signal_at = int(os.environ.get("SIGNAL_AT", "-1"))
stop_at = int(os.environ.get("STOP_AT", "-1"))
SENT = []
if kill_at >= 0 or signal_at >= 0 or stop_at >= 0:
  real = pipeline.train_batch_indices
  def train_batch_indices(n, batch_size, seed, epoch, step):
    spe = pipeline.steps_per_epoch(n, batch_size, config.drop_last)
    if epoch * spe + step == kill_at:
      for ckpt in OPEN:
        ckpt.wait()
      os.kill(os.getpid(), signal.SIGKILL)
    if epoch * spe + step == signal_at and not SENT:  # once: a second SIGTERM ends the process
      SENT.append(step)
      os.kill(os.getpid(), signal.SIGTERM)
    if epoch * spe + step == stop_at and not SENT:
      SENT.append(step)
      for ckpt in OPEN:
        ckpt.wait()
      os.kill(os.getpid(), signal.SIGSTOP)
    return real(n, batch_size, seed, epoch, step)
  pipeline.train_batch_indices = train_batch_indices
try:
  train.train_and_evaluate(config, workdir)
except train.ConfigError as e:
  print("CONFIG_ERROR:", e)
  sys.exit(2)
except train.Preempted as e:  # as the command line (gdw_jax/main.py)
  print(f"gdw_jax: {e}", file=sys.stderr)
  sys.exit(e.exit_code)
"""


def env(devices=1):
  """Environment of a subprocess on ``devices`` fake CPU devices."""
  flags = os.environ.get("XLA_FLAGS", "").split()  # keeps the suite's CPU flags (conftest)
  flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
  e = dict(os.environ, JAX_PLATFORMS="cpu",
           XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]),
           JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  e.pop("KILL_AT", None)
  e.pop("SIGNAL_AT", None)
  e.pop("STOP_AT", None)
  return e


def python(code, devices=1):
  """Start ``python -c code`` from the repository root (``Popen``)."""
  return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start(overrides, workdir, devices=1, kill_at=None, signal_at=None, extra_env=None,
          stop_at=None):
  """Start a training subprocess (``Popen``) on ``devices`` fake CPU devices."""
  env = globals()["env"](devices)
  if kill_at is not None:
    env["KILL_AT"] = str(kill_at)
  if signal_at is not None:
    env["SIGNAL_AT"] = str(signal_at)
  if stop_at is not None:
    env["STOP_AT"] = str(stop_at)
  env.update(extra_env or {})
  cfg = dict(progress=False)
  cfg.update(overrides)
  return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(cfg), str(workdir)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def finish(proc, timeout=600):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def run(overrides, workdir, **kwargs):
  rc, out, err = finish(start(overrides, workdir, **kwargs))
  assert rc == 0, f"training subprocess failed ({rc}):\n{out}\n{err[-3000:]}"
  return out


TIMING_KEYS = ("wall_time_s", "epoch_time_s", "steps_per_s")


def read_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def read_json(path):
  with open(path) as f:
    return json.load(f)


def read_final(workdir):
  return read_json(os.path.join(workdir, "final.json"))


def without_timing(d):
  return {k: v for k, v in d.items() if k not in TIMING_KEYS}


def assert_same_run(a, b, same_bytes=()):
  """Two workdirs hold the same run: metrics rows and final.json up to timings, the weights and
  predictions, the files named in ``same_bytes`` byte for byte, and the last checkpoint's state
  bit for bit."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from gdw_jax import checkpoint  # pylint: disable=import-outside-toplevel
  assert [without_timing(r) for r in read_rows(a)] == [without_timing(r) for r in read_rows(b)]
  assert without_timing(read_final(a)) == without_timing(read_final(b))
  for name in ("sample_weights.npz", "predictions.npz"):
    x, y = np.load(os.path.join(a, name)), np.load(os.path.join(b, name))
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=f"{name}:{k}")
  for name in same_bytes:
    with open(os.path.join(a, name), "rb") as f, open(os.path.join(b, name), "rb") as g:
      assert f.read() == g.read(), name
  ca, cb = checkpoint.load(a), checkpoint.load(b)
  for x, y in zip(jax.tree.leaves(ca["state"]), jax.tree.leaves(cb["state"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
