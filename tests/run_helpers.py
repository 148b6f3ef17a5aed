"""Helpers for tests that run training in subprocesses (fresh jax, chosen device count)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs train_and_evaluate on a JSON config override in a fresh interpreter. With KILL_AT set to
# a global step, the process SIGKILLs itself (no cleanup of any kind) when the loop asks for that
# step's batch: a hard kill at a known point, after the checkpoints before it were saved.
DRIVER = r"""
import json, os, signal, sys
from configs import digits
from gdw_jax import train
from gdw_jax.data import pipeline

overrides, workdir = json.loads(sys.argv[1]), sys.argv[2]
kill_at = int(os.environ.get("KILL_AT", "-1"))
config = digits.get_config()
for key, value in overrides.items():
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = tuple(value) if isinstance(value, list) else value

if kill_at >= 0:
  real = pipeline.train_batch_indices
  def train_batch_indices(n, batch_size, seed, epoch, step):
    spe = pipeline.steps_per_epoch(n, batch_size, config.drop_last)
    if epoch * spe + step == kill_at:
      os.kill(os.getpid(), signal.SIGKILL)
    return real(n, batch_size, seed, epoch, step)
  pipeline.train_batch_indices = train_batch_indices
try:
  train.train_and_evaluate(config, workdir)
except train.ConfigError as e:
  print("CONFIG_ERROR:", e)
  sys.exit(2)
"""


def start(overrides, workdir, devices=1, kill_at=None, extra_env=None):
  """Start a training subprocess (``Popen``) on ``devices`` fake CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  env.pop("KILL_AT", None)
  if kill_at is not None:
    env["KILL_AT"] = str(kill_at)
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
