"""Checkpoints: retention policy, and a SIGKILLed run resumed to a bit-identical end."""
import importlib.util
import os

import glob
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import run_helpers as rh
from configs import digits
from gdw_jax import checkpoint, guards, train


def _assert_trees_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_keeps_last_k_plus_best_and_restores_exactly(tmp_path):
  state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.array(0, np.int32)}
  loop = {"hist": np.zeros(4, np.float64)}
  accs = {3: 50.0, 6: 91.0, 9: 70.0, 10: None, 12: 80.0, 15: None}
  for session in ((3, 6, 9), (10, 12, 15)):  # a restart in between: the best must survive it
    ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, best=True)
    for step in session:
      s = {"w": state["w"] + step, "step": np.array(step, np.int32)}
      ckpt.save(step, s, {"hist": loop["hist"] + step}, {"step": step}, test_acc=accs[step])
    ckpt.close()
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, best=True)
  ckpt.save(15, state, loop, {"step": -1})  # already saved: a no-op
  ckpt.close()
  # last two (12, 15) plus the best epoch-end checkpoint (6: 91%)
  assert checkpoint.steps(str(tmp_path)) == [6, 12, 15]
  assert checkpoint.best_step(str(tmp_path)) == 6
  target = {"w": np.zeros((2, 3), np.float32), "step": np.array(0, np.int32)}
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2, best=True)
  s, l, meta = ckpt.restore(target, loop, step=6)
  ckpt.close()
  np.testing.assert_array_equal(s["w"], state["w"] + 6)
  np.testing.assert_array_equal(l["hist"], loop["hist"] + 6)
  assert meta == {"step": 6}
  raw = checkpoint.load(str(tmp_path))
  assert raw["meta"] == {"step": 15} and int(raw["state"]["step"]) == 15


# 1197 training samples / 133 = 9 full steps per epoch (one compiled step shape).
KILL_CONFIG = dict(method="gdw", num_epochs=3, batch_size=133, mlp_hidden=[64],
                   mlp_batch_norm=True, checkpoint_every_steps=7, checkpoint_best=False,
                   keep_checkpoints=2)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """KILL_CONFIG uninterrupted: what every interrupted run below must end as."""
  full = tmp_path_factory.mktemp("full")
  rh.run(KILL_CONFIG, full)
  return full


def _same_end(full, other):
  """Identical final.json (up to timings), metrics rows, per-sample files and last state."""
  rh.assert_same_run(str(full), str(other))
  assert int(checkpoint.load(str(other))["state"]["step"]) == 27


def test_sigkill_then_resume_is_bit_identical(tmp_path, full_run):
  """9 steps/epoch; saves at 7, 14, 21, 27. Killed (SIGKILL) when asking for step 20's batch:
  after the epoch-1 row (step 18) was written but not checkpointed. The resumed run restarts
  mid-epoch from step 14 and must end with identical files."""
  full, killed = full_run, tmp_path / "killed"
  rc_killed, _, _ = rh.finish(rh.start(KILL_CONFIG, killed, kill_at=20))
  assert rc_killed == -9
  assert checkpoint.steps(str(killed)) == [7, 14]
  assert not (killed / "final.json").exists()
  assert [r["step"] for r in rh.read_rows(killed)] == [9, 18]  # 18: past the last checkpoint

  rh.run(KILL_CONFIG, killed)  # same workdir: resumes from step 14

  assert rh.without_timing(rh.read_final(full)) == rh.without_timing(rh.read_final(killed))
  rows_full, rows_resumed = rh.read_rows(full), rh.read_rows(killed)
  assert [r["step"] for r in rows_resumed] == [9, 18, 27]
  assert [rh.without_timing(r) for r in rows_full] == [rh.without_timing(r) for r in rows_resumed]
  for name in ("sample_weights.npz", "predictions.npz", "labels.npz"):
    a, b = np.load(full / name), np.load(killed / name)
    assert sorted(a) == sorted(b)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
  assert (full / "method_state.msgpack").read_bytes() == \
      (killed / "method_state.msgpack").read_bytes()
  for name in ("config.json", "data.json"):
    assert (full / name).read_text() == (killed / name).read_text()
  assert checkpoint.steps(str(full)) == checkpoint.steps(str(killed)) == [21, 27]
  a, b = checkpoint.load(str(full)), checkpoint.load(str(killed))
  _assert_trees_equal(a["state"], b["state"])
  _assert_trees_equal(a["loop"], b["loop"])
  assert np.isfinite(a["state"]["model_state"]["batch_stats"]["BatchNorm_0"]["mean"]).all()


# Calls of at most 4 steps: segments [0,4) [4,7) [7,9) [9,13) [13,14) ... A SIGTERM when the loop
# asks for step 10's batch arrives before the call [9,13) runs; the loop stops after it.
SIGTERM_CONFIG = dict(KILL_CONFIG, steps_per_call=4)
STOPPED = ("gdw_jax: stopped by SIGTERM at step 13 (epoch 1.44); run the same command again to "
           "resume")


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
  """A run stopped by SIGTERM mid-epoch 1 (copied by each test before it resumes it)."""
  workdir = tmp_path_factory.mktemp("preempted")
  rc, _, err = rh.finish(rh.start(SIGTERM_CONFIG, workdir, signal_at=10))
  return workdir, rc, err


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def _break(workdir, step, how):
  """Damage checkpoint ``step``: its largest array file truncated to half, or removed."""
  files = glob.glob(str(workdir / "checkpoints" / str(step) / "state" / "**" / "d" / "*"),
                    recursive=True)
  largest = max(files, key=os.path.getsize)
  if how == "truncate":
    os.truncate(largest, os.path.getsize(largest) // 2)
  else:
    os.remove(largest)


def test_sigterm_saves_the_reached_step_and_resumes_bit_identically(tmp_path, full_run,
                                                                     preempted):
  workdir, rc, err = preempted
  assert rc == 128 + 15, err[-3000:]
  assert err.splitlines()[-1] == STOPPED
  assert checkpoint.steps(str(workdir)) == [7, 13]  # 13: saved at the stop, mid-epoch
  assert [r["step"] for r in rh.read_rows(workdir)] == [9]
  assert not (workdir / "final.json").exists()
  resumed = _copy(workdir, tmp_path / "resumed")
  rh.run(SIGTERM_CONFIG, resumed)
  _same_end(full_run, resumed)


def test_broken_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, full_run, preempted):
  """Checkpoint 13 truncated: said on one line, deleted, the run resumes from 7 and ends as the
  uninterrupted run."""
  workdir = _copy(preempted[0], tmp_path / "broken")
  _break(workdir, 13, "truncate")
  rc, _, err = rh.finish(rh.start(SIGTERM_CONFIG, workdir))
  assert rc == 0, err[-3000:]
  warnings = [line for line in err.splitlines() if line.startswith("gdw_jax: warning:")]
  assert len(warnings) == 1, err[-3000:]
  assert warnings[0].startswith(f"gdw_jax: warning: checkpoint 13 in {workdir / 'checkpoints'} "
                                "cannot be restored (")
  assert warnings[0].endswith("deleted it, resuming from step 7")
  _same_end(full_run, workdir)


def test_no_good_checkpoint_is_an_error_and_restart_starts_over(tmp_path, full_run, preempted):
  workdir = _copy(preempted[0], tmp_path / "broken")
  _break(workdir, 13, "truncate")
  _break(workdir, 7, "remove")
  before = [(p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(workdir.iterdir())]
  rc, out, err = rh.finish(rh.start(SIGTERM_CONFIG, workdir))
  assert rc == 2, err[-3000:]
  # a refused resume writes nothing: not even config.json (an atomic rewrite is a new inode)
  assert [(p.name, p.stat().st_ino, p.stat().st_mtime_ns)
          for p in sorted(workdir.iterdir())] == before
  assert out.startswith(f"CONFIG_ERROR: the checkpoints in {workdir / 'checkpoints'} (steps 7, "
                        "13) cannot be restored: step 13: "), out
  assert out.rstrip().endswith("--config.restart=true starts from scratch, deleting them")
  assert checkpoint.steps(str(workdir)) == [7, 13]  # nothing deleted without restart
  assert not (workdir / "final.json").exists()
  rh.run(dict(SIGTERM_CONFIG, restart=True), workdir)
  _same_end(full_run, workdir)


def test_command_line_sigterm_from_outside_exits_143_after_saving(tmp_path):
  """The real path: ``python -m gdw_jax.main``, a SIGTERM from another process once an epoch is
  logged (200 epochs: it cannot finish first); it stops within a call of 2 steps, saved."""
  proc = subprocess.Popen(
      [sys.executable, "-m", "gdw_jax.main", "--config=configs/digits.py:method=erm,epochs=200",
       f"--workdir={tmp_path}", "--config.mlp_hidden=16", "--config.steps_per_call=2",
       "--config.progress=false", "--config.report=false"],
      cwd=rh.ROOT, env=rh.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.monotonic() + 300
  while not (metrics.exists() and metrics.read_text()) and proc.poll() is None:
    assert time.monotonic() < deadline, "no epoch logged in 300 s"
    time.sleep(0.1)  # polling for the first row: the signal must come from outside, mid-run
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  line = err.strip().splitlines()[-1]
  match = re.fullmatch(r"gdw_jax: stopped by SIGTERM at step (\d+) \(epoch [\d.]+\); run the "
                       r"same command again to resume", line)
  assert match, line
  assert checkpoint.steps(str(tmp_path))[-1] == int(match.group(1)) < 200 * 12
  assert not (tmp_path / "final.json").exists()


def test_signal_guard_records_the_signal_and_restores_the_handlers_also_on_error():
  before = {s: signal.getsignal(s) for s in guards.SignalGuard.SIGNALS}
  guard = guards.SignalGuard()
  with pytest.raises(RuntimeError, match="inside"):
    with guard:
      assert signal.getsignal(signal.SIGTERM) == guard._handle  # pylint: disable=protected-access
      assert guard.requested() == 0
      os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode: no KeyboardInterrupt
      assert guard.requested() == signal.SIGINT
      assert signal.getsignal(signal.SIGINT) == before[signal.SIGINT]  # a second one: as before
      raise RuntimeError("inside")
  assert {s: signal.getsignal(s) for s in guards.SignalGuard.SIGNALS} == before


def test_sigkill_of_three_seeds_then_resume_is_bit_identical_for_each(tmp_path):
  """The same kill as above in a launch of seeds 0, 1, 2 (one program): every run resumes from
  step 14 and ends as the uninterrupted launch's run does."""
  config = dict(KILL_CONFIG, seeds=[0, 1, 2])
  full, killed = tmp_path / "full", tmp_path / "killed"
  procs = [rh.start(config, full), rh.start(config, killed, kill_at=20)]
  (rc_full, _, err_full), (rc_killed, _, _) = [rh.finish(p) for p in procs]
  assert rc_full == 0, err_full[-3000:]
  assert rc_killed == -9
  for s in range(3):
    assert checkpoint.steps(str(killed / f"seed_{s}")) == [7, 14]
  assert not (killed / "summary.json").exists()

  rh.run(config, killed)

  for s in range(3):
    rh.assert_same_run(str(full / f"seed_{s}"), str(killed / f"seed_{s}"),
                       same_bytes=("method_state.msgpack",))
  summaries = [rh.read_json(d / "summary.json") for d in (full, killed)]
  assert summaries[0]["mean"] == summaries[1]["mean"]


def test_rerun_of_finished_run_changes_nothing_and_tensorboard(tmp_path):
  config = digits.get_config("method=erm")
  config.num_epochs, config.mlp_hidden, config.progress = 2, (32,), False
  tensorboard = importlib.util.find_spec("tensorboardX") is not None  # an optional extra
  config.tensorboard = tensorboard
  workdir = str(tmp_path)
  first = train.train_and_evaluate(config, workdir)
  files = {n: open(os.path.join(workdir, n), "rb").read()
           for n in ("sample_weights.npz", "predictions.npz", "metrics.jsonl",
                     "method_state.msgpack")}
  if tensorboard:
    assert os.listdir(os.path.join(workdir, "tensorboard"))
  config.tensorboard = False  # a runtime key: may change on resume
  again = train.train_and_evaluate(config, workdir)
  assert rh.without_timing(first) == rh.without_timing(again)
  for n, content in files.items():
    assert open(os.path.join(workdir, n), "rb").read() == content, n
  assert checkpoint.steps(workdir)[-1] == first["steps"]
