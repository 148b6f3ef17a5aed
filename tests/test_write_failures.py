"""A write that fails mid-run (disk full, a read-only workdir) stops the run with one error that
names the path (exit status 4 on the command line), and every file already written stays whole.

The failure is made real where it can be without root: a directory sits where a writer's
temporary file must go, so the operating system refuses the write; orbax's failure is its
reported error (orbax clears such a blocker itself).
"""
import json
import os
import subprocess
import sys

import orbax.checkpoint as ocp
import pytest

import run_helpers as rh
from configs import digits
from gdw_jax import checkpoint, fileio, train
from gdw_jax.data import pipeline


def _config():
  c = digits.get_config("method=erm")
  c.update(num_epochs=3, mlp_hidden=(16,), batch_size=133, progress=False, report=False,
           checkpoint_every_steps=7, checkpoint_best=False)  # 9 steps/epoch; saves at 7, 14, ...
  return c


def _block_at(monkeypatch, step, path):
  """When the loop asks for ``step``'s batch, make ``path`` a directory (the write fails)."""
  real = pipeline.train_batch_indices

  def indices(n, batch_size, seed, epoch, s):
    if epoch * pipeline.steps_per_epoch(n, batch_size, False) + s == step:
      os.makedirs(path, exist_ok=True)
    return real(n, batch_size, seed, epoch, s)

  monkeypatch.setattr(pipeline, "train_batch_indices", indices)


def _leftovers(workdir, blocker):
  return [os.path.join(d, f) for d, _, files in os.walk(workdir) for f in files + _
          if ".tmp" in f and os.path.join(d, f) != str(blocker)]


def test_metrics_write_failure_names_the_file_and_keeps_it_whole(tmp_path, monkeypatch):
  """metrics.jsonl's epoch-1 row cannot be written: the error names metrics.jsonl; the file
  still holds exactly epoch 0's row, and checkpoint 14 (before the failure) restores."""
  blocker = tmp_path / "metrics.tmp.jsonl"
  _block_at(monkeypatch, 12, blocker)
  with pytest.raises(fileio.WriteError) as e:
    train.train_and_evaluate(_config(), str(tmp_path))
  assert str(e.value) == f"cannot write {tmp_path / 'metrics.jsonl'}: Is a directory"
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [9]
  assert _leftovers(tmp_path, blocker) == []
  assert checkpoint.steps(str(tmp_path)) == [7, 14]
  assert int(checkpoint.load(str(tmp_path))["state"]["step"]) == 14
  assert not (tmp_path / "final.json").exists()


def test_checkpoint_write_failure_names_the_directory(tmp_path, monkeypatch):
  """Checkpoint 14's save fails as orbax reports a full disk (measured on a 1 MiB tmpfs: a
  tensorstore ValueError from the save or its wait): the run stops there with the checkpoints
  directory and the reason named; checkpoint 7 and the metrics rows stay whole."""
  real = ocp.CheckpointManager.save
  full = ('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "/x/": '
          'Failed to write 6230016 bytes to file 4: No space left on device [os_error_code=28]')

  def save(self, step, *args, **kwargs):
    if step == 14:
      raise ValueError(full)
    return real(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  with pytest.raises(fileio.WriteError) as e:
    train.train_and_evaluate(_config(), str(tmp_path))
  assert str(e.value) == (f"cannot write a checkpoint in {tmp_path / 'checkpoints'}: No space "
                          "left on device [os_error_code=28]")
  assert checkpoint.steps(str(tmp_path)) == [7]
  assert [r["step"] for r in rh.read_rows(tmp_path)] == [9]
  assert _leftovers(tmp_path, None) == []


def test_command_line_exits_4_with_one_line(tmp_path):
  (tmp_path / "metrics.tmp.jsonl").mkdir()
  proc = subprocess.run(
      [sys.executable, "-m", "gdw_jax.main", "--config=configs/digits.py:method=erm",
       f"--workdir={tmp_path}", "--config.num_epochs=1", "--config.mlp_hidden=16",
       "--config.progress=false", "--config.report=false"],
      cwd=rh.ROOT, env=rh.env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 4, proc.stderr[-3000:]
  assert proc.stderr.strip().splitlines()[-1] == \
      f"gdw_jax: error: cannot write {tmp_path / 'metrics.jsonl'}: Is a directory"


def test_tensorboard_write_failure_names_its_folder(tmp_path, monkeypatch):
  """tensorboardX's own errors (its folder cannot be made, a full disk on flush) are the same
  one-line WriteError as the run's other files (a stand-in tensorboardX raises them)."""
  import types
  from gdw_jax import metrics

  class Writer:
    fail_on = "init"

    def __init__(self, logdir):
      if Writer.fail_on == "init":
        raise PermissionError(13, "Permission denied", logdir)

    def add_scalar(self, *args):
      pass

    def flush(self):
      raise OSError(28, "No space left on device")

  monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=Writer))
  tb = os.path.join(str(tmp_path), "tensorboard")
  with pytest.raises(fileio.WriteError, match=f"^cannot write {tb}: Permission denied$"):
    metrics.Writer(str(tmp_path), [], tensorboard=True)
  Writer.fail_on = "flush"
  writer = metrics.Writer(str(tmp_path), [], tensorboard=True)
  with pytest.raises(fileio.WriteError, match=f"^cannot write {tb}: No space left on device$"):
    writer.write({"epoch": 0, "step": 9, "train_loss": 1.5})
  # metrics.jsonl was written before the TensorBoard scalars, whole
  assert rh.read_rows(str(tmp_path)) == [{"epoch": 0, "step": 9, "train_loss": 1.5}]
