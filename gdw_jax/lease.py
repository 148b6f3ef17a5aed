"""One workdir, one launch: the lease a launch holds on its workdir while it may write there.

A launch takes ``<workdir>/.lease.json`` before it writes anything and deletes it on every way
out (the end, an error, a SIGTERM / SIGINT stop). A second launch into the same workdir finds the
lease and stops before writing anything (:class:`LeaseHeld`, a one-line config error: exit status
2) naming the holder. No ``flock`` (unreliable on the network filesystems clusters share): the
file is created with ``O_CREAT | O_EXCL``, atomic on local disks and on NFS v3+, Lustre and GPFS,
and kept fresh by a heartbeat that a background thread writes every :data:`BEAT_SECONDS` (also
through compiles, evaluations and the end files, when the loop has no segment end for a while).

A lease whose holder is gone is taken over, with a one-line warning naming that holder:

* same machine (the host name, boot and pid namespace agree): the holder's pid is not running,
  or is another process now (its start time differs);
* another machine: no heartbeat for ``stale_after`` seconds (``lease_stale_s``).

``break_lease=True`` takes over any lease (a holder known to be gone whose lease still looks
alive). A takeover renames the old file to a name of its own, checks that it moved the very file
it judged stale (else it puts it back), then creates its own with ``O_EXCL``: of two launches
taking over at once one wins, the other is refused. The holder's heartbeat checks that the file
still carries its token; if not (broken on purpose), the loop's next segment end stops the run
(:class:`LeaseLost`). Release deletes the file only while it still carries the holder's token.

Readers (``experiments.report``, ``experiments.label_issues``, the analysis notebook) never
take the lease. The file's format is in docs/scaling.md ("One launch per workdir"). Only the
standard library is used, plus the package's error types.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable, Dict, Optional

from gdw_jax import fileio
from gdw_jax.options import ConfigError

NAME = ".lease.json"
VERSION = 1
BEAT_SECONDS = 30.0    # the holder's heartbeat period
STALE_SECONDS = 300.0  # default ``lease_stale_s``: ten missed beats (another host's holder)
_TRIES = 5             # takeovers raced before giving up


class LeaseHeld(ConfigError):
  """The workdir's lease is held by a live launch (or kept changing hands): nothing written."""


class LeaseLost(ConfigError):
  """The lease this launch held now carries another token (broken or taken over): stop."""


def path_in(workdir: str) -> str:
  return os.path.join(workdir, NAME)


def read(workdir: str) -> Optional[Dict[str, Any]]:
  """The lease record in ``workdir`` (None: no lease, or one being written)."""
  found = _read(path_in(workdir))
  return None if found is None else found[0]


# ---------------------------------------------------------------------------------------------
# Who holds it, and whether they are still there


def _machine() -> str:
  """Where a pid names the same process: this boot and pid namespace ('' where unknown, e.g.
  off Linux: then the host name alone says it)."""
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      boot = f.read().strip()
    return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
  except OSError:
    return ""


def _pid_start(pid: int) -> Optional[int]:
  """The process's start time in clock ticks since boot (Linux), None where unknown."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _pid_running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


def _new_record() -> Dict[str, Any]:
  now = time.time()
  pid = os.getpid()
  return {"version": VERSION, "host": socket.gethostname(), "pid": pid,
          "pid_start": _pid_start(pid), "machine": _machine(), "token": uuid.uuid4().hex,
          "started": now, "beat": now, "step": None}


def stale_reason(record: Optional[Dict[str, Any]], mtime: float, stale_after: float,
                 now: Optional[float] = None) -> Optional[str]:
  """Why the lease ``record`` (None: unreadable; ``mtime``: its file's) has no live holder, or
  None when it may have one."""
  now = time.time() if now is None else now
  if record is None:
    age = now - mtime
    return f"unreadable, unchanged for {age:.0f} s" if age > stale_after else None
  same_machine = (record.get("host") == socket.gethostname()
                  and record.get("machine") == _machine())
  if same_machine:
    pid = int(record.get("pid", -1))
    if pid <= 0 or not _pid_running(pid):
      return f"pid {pid} is not running"
    then, current = record.get("pid_start"), _pid_start(pid)
    if then is not None and current is not None and then != current:
      return f"pid {pid} is another process now"
    return None
  age = now - float(record.get("beat", 0.0))
  if age > stale_after:
    return f"no heartbeat for {age:.0f} s (lease_stale_s={stale_after:g})"
  return None


def _when(t: float) -> str:
  return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def describe(record: Optional[Dict[str, Any]], now: Optional[float] = None) -> str:
  """``host H pid P since T, last beat N s ago (step S)``."""
  if record is None:
    return "a launch whose lease is still being written (or is damaged)"
  now = time.time() if now is None else now
  step = record.get("step")
  return (f"host {record.get('host')} pid {record.get('pid')} since "
          f"{_when(float(record.get('started', 0.0)))}, last beat "
          f"{max(0.0, now - float(record.get('beat', 0.0))):.0f} s ago"
          + (f" (step {step})" if step is not None else ""))


# ---------------------------------------------------------------------------------------------
# The file


def _read(path: str):
  """``(record or None if unreadable, raw bytes, mtime)``; None when there is no file."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
      mtime = os.fstat(f.fileno()).st_mtime
  except FileNotFoundError:
    return None
  try:
    record = json.loads(raw)
    record = record if isinstance(record, dict) and "token" in record else None
  except ValueError:
    record = None
  return record, raw, mtime


def _create(path: str, record: Dict[str, Any]) -> bool:
  """Create ``path`` holding ``record`` if there is no such file (atomic); False if there is."""
  try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
  except FileExistsError:
    return False
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(record, f)
      f.flush()
      os.fsync(f.fileno())
  except BaseException:
    os.remove(path)
    raise
  return True


def _set_aside(path: str, raw: bytes, token: str) -> Optional[bool]:
  """Move the stale lease (``raw``) out of the way: True when it was that file and is gone;
  None when it was gone already (another launch set it aside first); False when another file
  was there (a beat or a new lease in between), which is put back."""
  aside = f"{path}.{token}.stale"
  try:
    os.rename(path, aside)
  except FileNotFoundError:  # released or set aside meanwhile: try again
    return None
  with open(aside, "rb") as f:
    moved = f.read()
  if moved != raw:
    with contextlib.suppress(FileExistsError):
      os.link(aside, path)
  os.remove(aside)
  return moved == raw


# ---------------------------------------------------------------------------------------------
# Taking, keeping and releasing it


class Lease:
  """A held lease: :meth:`beat` at each segment end, :meth:`release` at the end (or ``with``)."""

  def __init__(self, path: str, record: Dict[str, Any], beat_s: float, made_dir: bool):
    self.path, self.record, self.made_dir = path, record, made_dir
    self.lost: Optional[str] = None  # who holds it now, once the file carries another token
    self._lock, self._stop = threading.Lock(), threading.Event()
    self._thread = threading.Thread(target=self._keep, args=(beat_s,), daemon=True,
                                    name=f"gdw_jax lease {path}")
    self._thread.start()

  @property
  def token(self) -> str:
    return self.record["token"]

  def beat(self, step: Optional[int] = None) -> None:
    """The loop reached ``step`` (written with the next heartbeat); :class:`LeaseLost` if the
    lease is no longer this launch's."""
    self.record["step"] = None if step is None else int(step)
    if self.lost is not None:
      raise LeaseLost(f"the lease on {os.path.dirname(self.path)} is no longer this launch's "
                      f"({self.lost}); stopped after step {step} so that two launches do not "
                      f"write one workdir")

  def _keep(self, beat_s: float) -> None:
    while not self._stop.wait(beat_s):
      self.write_beat()

  def write_beat(self) -> None:
    """Refresh the file's ``beat`` (and ``step``), if it is still ours."""
    with self._lock:
      if self._stop.is_set():
        return
      try:
        found = _read(self.path)
        if found is None:  # perhaps set aside for a moment by a takeover that then put it back
          time.sleep(1.0)
          found = _read(self.path)
        if found is None or found[0] is None or found[0].get("token") != self.token:
          self.lost = ("its file was deleted" if found is None else
                       f"now held by {describe(found[0])}")
          self._stop.set()
          return
        self.record["beat"] = time.time()
        self._replace(json.dumps(self.record))
      except OSError:  # a passing filesystem error: the next beat tries again
        pass

  def _replace(self, text: str) -> None:
    tmp = f"{self.path}.{self.token}.beat"
    try:
      with open(tmp, "w") as f:
        f.write(text)
      os.replace(tmp, self.path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)

  def release(self) -> None:
    """Stop the heartbeat; delete the file if it still carries our token (and the workdir if
    this launch made it and it is empty). Never raises: a lease left behind goes stale."""
    self._stop.set()
    if self._thread is not threading.current_thread():
      self._thread.join()
    with self._lock, contextlib.suppress(OSError):
      found = _read(self.path)
      if found is not None and found[0] is not None and found[0].get("token") == self.token:
        os.remove(self.path)
    if self.made_dir:
      with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(self.path))

  def __enter__(self) -> "Lease":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


class NotHeld:
  """What processes other than 0 of a multi-process launch hold: nothing (process 0 holds the
  launch's one lease)."""

  def beat(self, step: Optional[int] = None) -> None:
    del step

  def release(self) -> None:
    pass


def _warn(message: str) -> None:
  print(f"gdw_jax: warning: {message}", file=sys.stderr, flush=True)


def acquire(workdir: str, stale_after: float = STALE_SECONDS, break_lease: bool = False,
            beat_s: float = BEAT_SECONDS, warn: Callable[[str], None] = _warn) -> Lease:
  """Take ``workdir``'s lease (making the folder if needed), taking over a stale one (or any,
  with ``break_lease``) with a ``warn`` line; :class:`LeaseHeld` if a live launch holds it."""
  made_dir = not os.path.isdir(workdir)
  fileio.makedirs(workdir)
  path, record = path_in(workdir), _new_record()
  try:
    with fileio.writing(path):
      return _take(workdir, path, record, stale_after, break_lease, beat_s, warn, made_dir)
  except BaseException:
    if made_dir:
      with contextlib.suppress(OSError):
        os.rmdir(workdir)
    raise


def _take(workdir, path, record, stale_after, break_lease, beat_s, warn, made_dir) -> Lease:
  """:func:`acquire`'s tries: create, or judge the lease there and take it over if stale."""
  taken = None  # (old holder, why) once its stale lease was set aside: warned once ours is made
  for _ in range(_TRIES):
    if _create(path, record):
      if taken is not None:
        warn(f"took over the lease on {workdir} from {describe(taken[0])}: {taken[1]}")
      return Lease(path, record, beat_s, made_dir)
    found = _read(path)
    if found is None:  # released meanwhile
      continue
    old, raw, mtime = found
    why = "break_lease=True" if break_lease else stale_reason(old, mtime, stale_after)
    if why is None:
      raise LeaseHeld(_held_message(workdir, old))
    if _set_aside(path, raw, record["token"]) is not False:
      # The stale lease is gone (set aside by this launch or a racing one): whichever makes
      # its lease first took it over and says so; the others then find a live lease.
      taken = (old, why)
  raise LeaseHeld(f"the lease on {workdir} changed hands {_TRIES} times while this launch "
                  f"tried to take it; another launch is starting there: try again later")


def _held_message(workdir: str, record: Optional[Dict[str, Any]]) -> str:
  return (f"workdir {workdir} is in use: its lease {path_in(workdir)} is held by "
          f"{describe(record)}; wait for that launch to end, or, if it is gone for sure, run "
          f"again with --config.break_lease=True")


@contextlib.contextmanager
def hold(workdir: str, config, primary: bool = True,
         share: Optional[Callable[[int], int]] = None):
  """The launch's lease on ``workdir`` for the ``with`` block, released on every way out;
  ``config.lease_stale_s`` and ``config.break_lease`` as above.

  Several processes: only the ``primary`` one (process 0) takes it; ``share(value)`` returns
  process 0's value on every process, so that all of them stop when it could not."""
  held, error = NotHeld(), None
  if primary:
    try:
      held = acquire(workdir, float(config.lease_stale_s), bool(config.break_lease))
    except Exception as e:  # noqa: BLE001 -- raised below, once every process knows
      error = e
  if share is not None and not share(int(error is None)):
    held.release()
    raise error or LeaseHeld(f"process 0 could not take the lease on {workdir} (its error "
                             f"says why)")
  if error is not None:
    raise error
  try:
    yield held
  finally:
    held.release()
