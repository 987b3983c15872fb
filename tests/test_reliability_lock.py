"""One writer per workdir: the lock file, a second writer refused, a SIGKILLed holder's lock
taken over, Ctrl-C handled as SIGTERM (checkpoint, exit 130)."""
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from absl import logging
import pytest

from r3vae_jax import workdir_lock

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "bad_inputs"))
import reliability_harness as rh  # pylint: disable=g-import-not-at-top,wrong-import-position


def _dead_pid() -> int:
  proc = subprocess.Popen(["true"])
  proc.wait()
  return proc.pid


def _write_lock(workdir: pathlib.Path, **fields) -> None:
  record = {"pid": _dead_pid(), "host": socket.gethostname(), "started": time.time(),
            "mode": "train", **fields}
  (workdir / workdir_lock.LOCK_FILE).write_text(json.dumps(record))


def test_second_holder_is_refused_and_release_deletes(tmp_path):
  fd = workdir_lock.acquire(str(tmp_path), "all")
  record = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
  assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
  assert record["mode"] == "all" and abs(record["started"] - time.time()) < 60
  with pytest.raises(workdir_lock.LockedError,
                     match=rf"lock\.json: the workdir is in use by pid {os.getpid()} on host "):
    workdir_lock.acquire(str(tmp_path), "train")
  workdir_lock.release(str(tmp_path), fd)
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
  with workdir_lock.hold(str(tmp_path), "train"):
    assert (tmp_path / workdir_lock.LOCK_FILE).exists()
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
  _write_lock(tmp_path)
  with caplog.at_level(logging.WARNING):
    with workdir_lock.hold(str(tmp_path), "train"):
      assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
  assert any("taking over the lock left by pid" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fields,message", [
    ({"host": "another-host"}, r"locked by pid \d+ on host another-host.*cannot be checked from "
                               r"host .*; if that process has ended, delete .*lock\.json"),
    ({"pid": 1}, r"in use by pid 1 on host "),   # alive, without the flock
])
def test_lock_that_cannot_be_taken_over(tmp_path, fields, message):
  _write_lock(tmp_path, **fields)
  before = (tmp_path / workdir_lock.LOCK_FILE).read_text()
  with pytest.raises(workdir_lock.LockedError, match=message):
    workdir_lock.acquire(str(tmp_path), "train")
  assert (tmp_path / workdir_lock.LOCK_FILE).read_text() == before


def test_pid_reused_by_a_later_process_is_not_the_holder(tmp_path):
  """A lock naming a live pid whose process started after the lock was written is stale."""
  _write_lock(tmp_path, pid=os.getpid(), started=1.0)
  with workdir_lock.hold(str(tmp_path), "train"):
    pass


_HOLDER = ("import sys, time\n"
           "from r3vae_jax import workdir_lock\n"
           "workdir_lock.acquire(sys.argv[1], 'all')\n"
           "print('holding', flush=True)\n"
           "time.sleep(600)\n")


def test_second_writer_sigkill_takeover_and_sigint(tmp_path_factory, tmp_path):
  """A holds the lock (as a writing stage does); a `--mode=all` on the same workdir exits with
  one line naming it; A is SIGKILLed and its lock stays; a `--mode=train` launch takes it over
  with a warning, trains and is stopped by SIGINT: checkpoint, exit 130, lock released."""
  bases = rh.shared_bases(tmp_path_factory)
  env = rh.cache_env()
  work = tmp_path / "work"
  shutil.copytree(bases["tokenized"], work)
  argv = rh.tiny_flags(train__epochs=40) + [f"--workdir={work}", "--mode=train"]

  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(work)], cwd=rh.REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "holding"
  second = subprocess.run([sys.executable, "-m", "r3vae_jax.main", *argv[:-1], "--mode=all"],
                          cwd=rh.REPO, env=env, capture_output=True, text=True, timeout=300)
  errors = [l for l in second.stderr.splitlines() if l.startswith("error:")]
  assert second.returncode == 2 and len(errors) == 1, second.stderr[-3000:]
  assert re.search(rf"lock\.json: the workdir is in use by pid {holder.pid} on host .*"
                   r"--mode=all since", errors[0]), errors
  assert "Traceback" not in second.stderr
  assert not (work / "logs").exists()  # nothing written into another writer's workdir
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  assert json.loads((work / workdir_lock.LOCK_FILE).read_text())["pid"] == holder.pid

  taken = rh.launch_train(argv, env, tmp_path / "c.log", stop_at=3, sig=signal.SIGINT)
  assert taken.rc == 130, taken.output[-3000:]
  assert f"taking over the lock left by pid {holder.pid}" in taken.output
  assert "Traceback" not in taken.output, taken.output[-3000:]
  assert not [l for l in taken.output.splitlines() if l.startswith("error:")]
  saved = re.search(r"preempted; checkpoint saved at step (\d+)", taken.output)
  assert saved and int(saved.group(1)) >= taken.signalled_at, taken.output[-3000:]
  assert not (work / workdir_lock.LOCK_FILE).exists()
  steps = [int(p.name) for p in (work / "recommender" / "checkpoints").iterdir()
           if p.name.isdigit()]
  assert max(steps) == int(saved.group(1)), steps
  stray = [p for p in work.rglob("*") if "tmp" in p.name]
  assert not stray, stray
