"""One writer per workdir: `workdir/lock.json` holds the pid, host and start time of the writer.

Every stage that writes into a workdir (`--mode=prepare|vectors|tokenize|train|evaluate|all`)
holds the lock for its whole run; `--mode=recommend` only reads and takes none.

  with workdir_lock.hold(workdir, "train"):
    ...

How it works: the lock file is created if missing and locked with `fcntl.flock` (exclusive,
non-blocking), then filled with {"pid", "host", "started", "mode", "argv"}.
- Another live process on this host holds the flock: `LockedError` names it (one `error:` line
  in the CLI).
- The flock is free but the file still names a holder: that process ended without releasing
  (SIGKILL, OOM killer, power loss). On this host, when that pid is gone (or reused by a process
  started later), the lock is taken over with a warning. A holder on another host cannot be
  checked from here (flock does not reach across hosts on most network file systems), so it is
  refused with the command that clears it by hand.
- Release: the file is deleted, then the flock dropped. A waiter that opened the deleted file
  sees that its inode is no longer the path's and opens again.

Multi-host runs: only the chief (`jax.process_index() == 0`) takes the lock, since the chief is
the process that writes shared files (the others write only their checkpoint shards, which orbax
coordinates). Two multi-host jobs on one workdir are therefore told apart by their chiefs: the
second chief fails with the `error:` line and its job exits.

Object stores (`gs://...`) have no advisory locks: on such a workdir no lock is taken, and a
warning says so; one job per workdir is then the launcher's promise.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Iterator

from absl import logging

from r3vae_jax import io

LOCK_FILE = "lock.json"


class LockedError(io.ArtifactError):
  """Another process writes into this workdir."""


def _describe(holder: dict) -> str:
  started = holder.get("started")
  when = (datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S")
          if isinstance(started, (int, float)) else "?")
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
          f"--mode={holder.get('mode', '?')} since {when}")


def _process_start(pid: int) -> float | None:
  """Unix start time of process `pid` (Linux /proc), None when unknown."""
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      fields = f.read().rpartition(")")[2].split()
    ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
    with open("/proc/stat", encoding="utf-8") as f:
      boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")
  except (OSError, ValueError, IndexError, StopIteration):
    return None


def holder_alive(holder: dict) -> bool:
  """Whether the process a lock record names still runs (on this host; a pid reused by a
  process started after the record is not the holder)."""
  pid = holder.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  start, started = _process_start(pid), holder.get("started")
  if start is not None and isinstance(started, (int, float)) and start > started + 2.0:
    return False
  return True


def _read(fd: int) -> dict | None:
  os.lseek(fd, 0, os.SEEK_SET)
  raw = b""
  while chunk := os.read(fd, 65536):
    raw += chunk
  if not raw.strip():
    return None
  try:
    record = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError):
    return {"pid": None, "host": "?", "unreadable": True}
  return record if isinstance(record, dict) else {"pid": None, "host": "?", "unreadable": True}


def _open_locked(path: str) -> tuple[int, bool]:
  """(fd of `path`, whether we hold its flock); retries when the file was replaced meanwhile."""
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        os.close(fd)
        raise
      return fd, False
    try:
      same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
      same = False
    if same:
      return fd, True
    os.close(fd)  # released and deleted by its holder between our open and flock


def acquire(workdir: str, mode: str) -> int:
  """Takes the lock of `workdir` for this process; returns the file descriptor holding it.

  Raises:
    LockedError: another process holds it (naming pid, host, mode and start time), or a
      lock of another host is left behind.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd, locked = _open_locked(path)
  holder = _read(fd)
  if not locked:
    os.close(fd)
    who = _describe(holder) if holder else "another process"
    raise LockedError(f"{path}: the workdir is in use by {who}; wait for it to end or use "
                      "another --workdir")
  host = socket.gethostname()
  if holder is not None:
    if holder.get("host") not in (host, "?") and not holder.get("unreadable"):
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)
      raise LockedError(f"{path}: the workdir is locked by {_describe(holder)}, which cannot be "
                        f"checked from host {host}; if that process has ended, delete {path}")
    if holder_alive(holder) and holder.get("pid") != os.getpid():
      # Alive but without the flock: a holder on a file system where flock is not shared.
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)
      raise LockedError(f"{path}: the workdir is in use by {_describe(holder)}; wait for it "
                        "to end or use another --workdir")
    logging.warning("%s: taking over the lock left by %s, which is no longer running",
                    path, _describe(holder))
    print(f"warning: {path}: taking over the lock left by {_describe(holder)}, which is no "
          "longer running", file=sys.stderr)
  record = {"pid": os.getpid(), "host": host, "started": time.time(), "mode": mode,
            "argv": list(sys.argv)}
  os.ftruncate(fd, 0)
  os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
  os.fsync(fd)
  return fd


def release(workdir: str, fd: int) -> None:
  """Deletes the lock file, then drops the flock (see the module docstring)."""
  path = os.path.join(workdir, LOCK_FILE)
  with contextlib.suppress(FileNotFoundError):
    if os.fstat(fd).st_ino == os.stat(path).st_ino:
      os.remove(path)
  os.close(fd)


@contextlib.contextmanager
def hold(workdir: str, mode: str, chief: bool = True) -> Iterator[None]:
  """Holds the lock of `workdir` for the block (`chief=False`: takes none; see the module
  docstring for multi-host runs)."""
  if not chief:
    yield
    return
  if not io.is_local(workdir):
    logging.warning("%s: an object store has no locks; no other job may write this workdir",
                    workdir)
    yield
    return
  fd = acquire(workdir, mode)
  try:
    yield
  finally:
    release(workdir, fd)
