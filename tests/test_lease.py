"""One workdir, one launch (gdw_jax/lease.py).

Two launches into one workdir: the second stops (exit 2, one line naming the holder) before it
writes anything, and the first ends exactly as it would alone. A SIGKILLed holder's lease is
taken over by the next launch, which resumes bit-identically; another host's lease is taken over
once its heartbeat is stale (or with break_lease) and refused while fresh; a SIGTERM stop and an
error release it; a 2-process launch holds one lease (process 0's); racing takeovers leave one
holder; readers (reports, label issues) neither take nor touch it. Training runs are subprocesses
(run_helpers: fresh jax, a SIGSTOP / SIGKILL at a known step) or short in-process erm runs.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

import run_helpers as rh
from configs import digits
from gdw_jax import lease, train, validation
from gdw_jax.data import pipeline
from test_parallel import _free_port

HOST = socket.gethostname()
# 1197 training samples / 133 = 9 steps per epoch; saves at 7, 14, 21, 27 (test_checkpoint.py).
CONFIG = dict(method="erm", num_epochs=3, batch_size=133, mlp_hidden=[16], mlp_batch_norm=True,
              checkpoint_every_steps=7, checkpoint_best=False, keep_checkpoints=2, report=False)
WHEN = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


def _files(workdir):
  """Every file and folder under ``workdir``: ``{path: (inode, mtime_ns, size)}``."""
  out = {}
  for d, dirs, files in os.walk(workdir):
    for name in dirs + files:
      st = os.stat(os.path.join(d, name))
      out[os.path.relpath(os.path.join(d, name), workdir)] = (st.st_ino, st.st_mtime_ns,
                                                              st.st_size)
  return out


def _elsewhere(workdir, beat_age):
  """A lease of a launch on another host, its last beat ``beat_age`` seconds ago."""
  now = time.time()
  record = lease._new_record()  # pylint: disable=protected-access
  record.update(host="node-elsewhere", machine="", pid=4242, pid_start=None,
                started=now - beat_age - 60, beat=now - beat_age, step=120)
  os.makedirs(workdir, exist_ok=True)
  with open(lease.path_in(str(workdir)), "w") as f:
    json.dump(record, f)
  return record


def _until(condition, timeout=20.0):
  """Wait for the lease's heartbeat thread (a busy machine may run it late)."""
  deadline = time.monotonic() + timeout
  while not condition() and time.monotonic() < deadline:
    time.sleep(0.05)
  return condition()


def _small(**changes):
  c = digits.get_config("method=erm")
  c.update(num_epochs=2, mlp_hidden=(16,), batch_size=133, progress=False, report=False,
           checkpoint=False)
  c.update(changes)
  return c


def _wait_stopped(proc, timeout=300):
  """Until ``proc`` has stopped itself (SIGSTOP); fails with its output if it ended instead."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
    if pid and os.WIFSTOPPED(status):
      return
    if pid:
      pytest.fail(f"the first launch ended instead of stopping: {proc.communicate()}")
    time.sleep(0.05)
  proc.kill()
  pytest.fail("the first launch did not reach its stop in time")


@pytest.fixture(scope="module")
def background(tmp_path_factory):
  """CONFIG trained alone, and killed (SIGKILL) when it asks for step 20: both started at once
  (they run while the first test waits), each awaited where needed: ``done(name) -> (workdir,
  pid, (returncode, stdout, stderr))``."""
  root = tmp_path_factory.mktemp("background")
  procs = {"alone": rh.start(CONFIG, root / "alone"),
           "killed": rh.start(CONFIG, root / "killed", kill_at=20)}
  results = {}

  def done(name):
    if name not in results:
      results[name] = rh.finish(procs[name])
    return root / name, procs[name].pid, results[name]

  yield done
  for proc in procs.values():
    if proc.poll() is None:
      proc.kill()
      proc.communicate()


@pytest.fixture
def alone(background):
  workdir, _, (rc, out, err) = background("alone")
  assert rc == 0, f"{out}\n{err[-3000:]}"
  return str(workdir)


# ---------------------------------------------------------------------------------------------
# Launches


def _command_line(workdir, *options):
  """CONFIG as a ``python -m gdw_jax.main`` command (run to its end)."""
  return subprocess.run(
      [sys.executable, "-m", "gdw_jax.main", "--config=configs/digits.py:method=erm",
       f"--workdir={workdir}", "--config.num_epochs=3", "--config.batch_size=133",
       "--config.mlp_hidden=16", "--config.mlp_batch_norm=true",
       "--config.checkpoint_every_steps=7", "--config.checkpoint_best=false",
       "--config.keep_checkpoints=2", "--config.report=false", "--config.progress=false",
       *options], cwd=rh.ROOT, env=rh.env(), capture_output=True, text=True, timeout=600)


def test_second_launch_stops_before_writing_and_the_first_ends_as_alone(tmp_path, background):
  """The first launch holds still at step 12 (epoch 0's row and checkpoint 7 written); the
  second, the same run from the command line, exits 2 with one line naming the first and
  changes no file; the first then ends with the files of a launch alone."""
  workdir = tmp_path / "w"
  first = rh.start(CONFIG, workdir, stop_at=12)
  _wait_stopped(first)
  assert lease.read(str(workdir))["pid"] == first.pid
  before = _files(workdir)
  assert {"config.json", "metrics.jsonl", "checkpoints/7", lease.NAME} <= set(before)
  second = _command_line(workdir)
  assert second.returncode == 2, second.stderr[-3000:]
  assert re.fullmatch(
      rf"gdw_jax: error: workdir {workdir} is in use: its lease {workdir / lease.NAME} is held "
      rf"by host {re.escape(HOST)} pid {first.pid} since {WHEN}, last beat \d+ s ago; wait for "
      rf"that launch to end, or, if it is gone for sure, run again with "
      rf"--config.break_lease=True", second.stderr.strip().splitlines()[-1]), second.stderr
  assert _files(workdir) == before
  os.kill(first.pid, signal.SIGCONT)
  rc, out, err = rh.finish(first)
  assert rc == 0, err[-3000:]
  assert "warning" not in err
  assert not (workdir / lease.NAME).exists()
  alone, _, (rc, _, err) = background("alone")
  assert rc == 0, err[-3000:]
  rh.assert_same_run(str(alone), str(workdir))


def test_sigkilled_holder_is_taken_over_and_the_run_resumes_bit_identically(background, alone):
  workdir, pid, (rc, _, _) = background("killed")
  assert rc == -9
  assert lease.read(str(workdir))["pid"] == pid  # left behind: no cleanup on SIGKILL
  rc, _, err = rh.finish(rh.start(CONFIG, workdir))
  assert rc == 0, err[-3000:]
  warnings = [line for line in err.splitlines() if "warning" in line]
  assert len(warnings) == 1, err[-3000:]
  assert re.fullmatch(
      rf"gdw_jax: warning: took over the lease on {workdir} from host {re.escape(HOST)} pid "
      rf"{pid} since {WHEN}, last beat \d+ s ago( \(step \d+\))?: pid {pid} is not running",
      warnings[0]), warnings[0]
  assert not (workdir / lease.NAME).exists()
  rh.assert_same_run(alone, str(workdir))


@pytest.mark.parametrize("beat_age,break_lease,why", [
    (3600, False, r"no heartbeat for 3\d\d\d s \(lease_stale_s=300\)"),
    (1, True, "break_lease=True")])
def test_lease_of_another_host_taken_over_when_stale_or_broken(tmp_path, capsys, beat_age,
                                                               break_lease, why):
  workdir = tmp_path / "w"
  _elsewhere(workdir, beat_age)
  train.train_and_evaluate(_small(break_lease=break_lease), str(workdir))
  warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
  assert len(warnings) == 1
  assert re.fullmatch(rf"gdw_jax: warning: took over the lease on {workdir} from host "
                      rf"node-elsewhere pid 4242 since {WHEN}, last beat \d+ s ago \(step 120\): "
                      rf"{why}", warnings[0]), warnings[0]
  assert (workdir / "final.json").exists()
  assert not (workdir / lease.NAME).exists()


def test_fresh_lease_of_another_host_is_refused_and_nothing_written(tmp_path):
  workdir = tmp_path / "w"
  _elsewhere(workdir, beat_age=200)  # within lease_stale_s
  before = _files(workdir)
  with pytest.raises(lease.LeaseHeld) as e:
    train.train_and_evaluate(_small(), str(workdir))
  assert re.fullmatch(
      rf"workdir {workdir} is in use: its lease {workdir / lease.NAME} is held by host "
      rf"node-elsewhere pid 4242 since {WHEN}, last beat 2\d\d s ago \(step 120\); wait for that "
      rf"launch to end, or, if it is gone for sure, run again with --config.break_lease=True",
      str(e.value)), str(e.value)
  assert _files(workdir) == before


def test_seeds_launch_holds_one_lease_on_its_root(tmp_path, monkeypatch):
  workdir, seen = tmp_path / "w", []
  real = pipeline.train_batch_indices

  def indices(n, batch_size, seed, epoch, s):
    if epoch == 1 and not seen:  # seed_0/ and seed_1/ are written by now
      seen.append(sorted(os.path.relpath(os.path.join(d, f), workdir)
                         for d, _, files in os.walk(workdir) for f in files if "lease" in f))
    return real(n, batch_size, seed, epoch, s)

  monkeypatch.setattr(pipeline, "train_batch_indices", indices)
  train.train_and_evaluate(_small(seeds=(0, 1)), str(workdir))
  assert seen == [[lease.NAME]]
  assert (workdir / "seed_1" / "final.json").exists() and not (workdir / lease.NAME).exists()


@pytest.mark.parametrize("how", ["sigterm", "error"])
def test_stop_by_sigterm_or_error_releases_the_lease(tmp_path, monkeypatch, how):
  workdir, seen = tmp_path / "w", []
  real = pipeline.train_batch_indices

  def indices(n, batch_size, seed, epoch, s):
    if epoch * 9 + s == 10 and not seen:  # mid-epoch 1
      seen.append(lease.read(str(workdir)))
      if how == "error":
        raise RuntimeError("boom")
      os.kill(os.getpid(), signal.SIGTERM)
    return real(n, batch_size, seed, epoch, s)

  monkeypatch.setattr(pipeline, "train_batch_indices", indices)
  with pytest.raises(train.Preempted if how == "sigterm" else RuntimeError):
    train.train_and_evaluate(_small(steps_per_call=4, checkpoint=True), str(workdir))
  assert seen[0]["pid"] == os.getpid()
  assert not (workdir / lease.NAME).exists()
  assert (workdir / "config.json").exists()


def test_workdir_checked_again_once_the_lease_is_held(tmp_path, monkeypatch):
  """A launch that ended while this one was being built may have left a run of another config:
  found once the lease is held, a one-line error, the lease released, nothing written."""
  workdir = tmp_path / "w"
  real = lease.acquire

  def acquire_after_another_launch_ended(*args, **kwargs):
    held = real(*args, **kwargs)
    (workdir / "config.json").write_text(_small(seed=1).to_json_best_effort())
    return held

  monkeypatch.setattr(lease, "acquire", acquire_after_another_launch_ended)
  with pytest.raises(validation.ConfigError, match=r"holds a run with a different config "
                                                   r"\(differs in: seed\)"):
    train.train_and_evaluate(_small(), str(workdir))
  assert os.listdir(workdir) == ["config.json"]  # only the other launch's file


def test_two_process_launch_holds_one_lease_on_process_0(tmp_path):
  """Taking over a stale lease: process 0 holds the new one and warns, process 1 neither; a
  fresh one: both processes stop (exit 2), nothing written."""
  config = dict(method="erm", num_epochs=1, mlp_hidden=[16], drop_last=True,
                checkpoint_every_steps=0, report=False, distributed=True, num_processes=2)
  stale, fresh = tmp_path / "stale", tmp_path / "fresh"
  old = _elsewhere(stale, beat_age=3600)
  _elsewhere(fresh, beat_age=0)
  before = _files(fresh)
  procs = []
  for workdir in (stale, fresh):
    port = _free_port()
    procs += [rh.start(dict(config, coordinator_address=f"localhost:{port}", process_id=i),
                       workdir) for i in range(2)]
  holders, deadline = set(), time.monotonic() + 300
  while procs[0].poll() is None and time.monotonic() < deadline:
    record = lease.read(str(stale))
    if record is not None and record["token"] != old["token"]:
      holders.add(record["pid"])
    time.sleep(0.02)
  (rc0, _, err0), (rc1, _, err1), *refused = [rh.finish(p) for p in procs]
  assert (rc0, rc1) == (0, 0), err0[-2000:] + err1[-2000:]
  assert holders == {procs[0].pid}
  assert len([line for line in err0.splitlines() if "took over the lease" in line]) == 1
  assert "lease" not in err1
  assert not (stale / lease.NAME).exists()
  assert [rc for rc, _, _ in refused] == [2, 2], [err[-2000:] for _, _, err in refused]
  assert refused[0][1].splitlines()[-1].startswith(f"CONFIG_ERROR: workdir {fresh} is in use")
  assert refused[1][1].splitlines()[-1] == (f"CONFIG_ERROR: process 0 could not take the lease "
                                            f"on {fresh} (its error says why)")
  assert _files(fresh) == before


# ---------------------------------------------------------------------------------------------
# The lease itself


def test_record_heartbeat_and_release(tmp_path):
  workdir = str(tmp_path / "w")
  held = lease.acquire(workdir, beat_s=0.05)
  record = lease.read(workdir)
  assert set(record) == {"version", "host", "pid", "pid_start", "machine", "token", "started",
                         "beat", "step"}
  assert (record["host"], record["pid"], record["step"]) == (HOST, os.getpid(), None)
  assert record["beat"] == record["started"]
  held.beat(7)
  assert _until(lambda: lease.read(workdir)["step"] == 7)
  record = lease.read(workdir)
  assert record["beat"] > record["started"]
  assert os.listdir(workdir) == [lease.NAME]  # no temporary file left by the beats
  held.release()
  assert not os.path.exists(workdir)  # the launch made the folder: empty, it goes too


def test_broken_lease_is_lost_and_not_deleted_by_its_old_holder(tmp_path):
  workdir = str(tmp_path)
  warnings = []
  held = lease.acquire(workdir, beat_s=0.05)
  taker = lease.acquire(workdir, break_lease=True, warn=warnings.append)
  assert len(warnings) == 1 and warnings[0].endswith(": break_lease=True")
  assert _until(lambda: held.lost is not None)
  with pytest.raises(lease.LeaseLost, match=rf"^the lease on {workdir} is no longer this "
                                            rf"launch's \(now held by host {re.escape(HOST)} pid "
                                            rf"{os.getpid()} since .*\); stopped after step 8 "):
    held.beat(8)
  held.release()
  assert lease.read(workdir)["token"] == taker.token
  taker.release()
  assert os.listdir(workdir) == []


def test_stale_rules():
  now = time.time()
  mine = lease._new_record()  # pylint: disable=protected-access
  dead = subprocess.Popen(["true"])  # a pid that has ended
  dead.wait()
  assert lease.stale_reason(mine, now, 300) is None                         # alive here
  assert lease.stale_reason(dict(mine, pid=dead.pid), now, 300) == \
      f"pid {dead.pid} is not running"
  assert lease.stale_reason(dict(mine, pid_start=mine["pid_start"] + 1), now, 300) == \
      f"pid {os.getpid()} is another process now"                           # a reused pid
  other = dict(mine, host="node-elsewhere", pid=dead.pid)                   # pid not checked
  assert lease.stale_reason(dict(other, beat=now - 299), now, 300, now=now) is None
  assert lease.stale_reason(dict(other, beat=now - 301), now, 300, now=now) == \
      "no heartbeat for 301 s (lease_stale_s=300)"
  assert lease.stale_reason(None, now - 10, 300, now=now) is None           # being written
  assert lease.stale_reason(None, now - 400, 300, now=now) == "unreadable, unchanged for 400 s"


RACER = r"""
import sys, time, types
pkg = types.ModuleType("gdw_jax")  # the package without its __init__: lease needs no jax
pkg.__path__ = ["gdw_jax"]
sys.modules["gdw_jax"] = pkg
from gdw_jax import lease
assert "jax" not in sys.modules
while time.time() < float(sys.argv[2]):
  pass
try:
  held = lease.acquire(sys.argv[1], warn=lambda m: print("WARNED", flush=True))
except lease.LeaseHeld:
  print("HELD", flush=True)
  sys.exit()
print("WON", held.token, flush=True)
sys.stdin.read()  # hold it until the test has looked
held.release()
"""


def test_racing_takeovers_leave_one_holder(tmp_path):
  """Four launches take over one stale lease at the same moment: one holds it, three are
  refused (not four warnings and four holders)."""
  _elsewhere(tmp_path, beat_age=3600)
  go = str(time.time() + 2.5)  # after every racer has started
  procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), go], cwd=rh.ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
           for _ in range(4)]
  firsts = []
  for p in procs:  # each has decided: WON (holding it until its stdin closes) or HELD
    lines = [p.stdout.readline().split()]
    while lines[-1] and lines[-1][0] == "WARNED":
      lines.append(p.stdout.readline().split())
    firsts.append(sum(lines, []))
  holder = lease.read(str(tmp_path))
  outs = [first + p.communicate("")[0].split() for first, p in zip(firsts, procs)]
  won = [o for o in outs if "WON" in o]
  assert len(won) == 1 and won[0][-1] == holder["token"], outs
  assert [o for o in outs if o == ["HELD"]] == [["HELD"]] * 3, outs
  assert sum(o.count("WARNED") for o in outs) == 1, outs
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Config keys, and readers


def test_lease_keys_do_not_change_a_run(tmp_path):
  """Launch-only keys (bad values: test_validation.py): a workdir saved before they existed, or
  with other values, holds the same run."""
  old = json.loads(digits.get_config().to_json_best_effort())
  del old["break_lease"], old["lease_stale_s"]  # a run saved before the keys existed
  (tmp_path / "config.json").write_text(json.dumps(old))
  new = digits.get_config()
  new.update(break_lease=True, lease_stale_s=3600.0)
  validation.validate_workdir(new, str(tmp_path))  # the same run


def test_readers_neither_take_nor_touch_the_lease(tmp_path, alone, monkeypatch):
  """experiments.report and experiments.label_issues on a workdir whose lease is held."""
  from experiments import label_issues, report
  workdir = tmp_path / "w"
  shutil.copytree(alone, workdir)
  _elsewhere(workdir, beat_age=0)
  held = (workdir / lease.NAME).stat()

  def no(*args, **kwargs):
    raise AssertionError("a reader took the lease")

  monkeypatch.setattr(lease, "acquire", no)
  assert report.main([str(workdir)]) == 0
  assert label_issues.main([str(workdir), "--top", "4"]) == 0
  assert (workdir / "report.md").exists() and (workdir / "label_issues_top4.png").exists()
  now = (workdir / lease.NAME).stat()
  assert (now.st_ino, now.st_mtime_ns) == (held.st_ino, held.st_mtime_ns)
