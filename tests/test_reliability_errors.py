"""A checkpoint save that fails (a full disk) ends in one error line: orbax's logged tracebacks
go to the error log, and no temporary checkpoint folder stays behind."""
import pathlib
import subprocess
import sys
import textwrap

from conftest import REPO

_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    import jax
    from absl import logging
    from r3vae_jax import checkpoint, main
    logging.use_python_logging()
    workdir = sys.argv[1]
    manager = checkpoint.make_manager(workdir + "/recommender/checkpoints")
    checkpoint.save(manager, 5, {"w": jax.numpy.ones(3)}, {})
    manager.wait_until_finished()
    import logging as std_logging
    std_logging.getLogger("absl").addFilter(main._LOGGED_TRACEBACKS)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
    try:
      checkpoint.save(manager, 10, {"w": jax.random.normal(jax.random.key(0), (1000, 1000))}, {})
      manager.wait_until_finished()
    except ValueError as e:
      main._fail(f"train: {e}", workdir)
    print("saved")
""")


def test_full_disk_during_a_checkpoint_save(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
  assert "File too large" in errors[0] and "traceback in" in errors[0], errors
  assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
  checkpoints = tmp_path / "recommender" / "checkpoints"
  assert sorted(p.name for p in checkpoints.iterdir()) == ["5"]
  log = next((tmp_path / "logs").iterdir()).read_text()
  assert log.count("Traceback (most recent call last)") >= 2  # the save's and orbax's logged ones


def test_sigint_is_handled_like_sigterm():
  """Ctrl-C asks for a stop (checkpoint, then exit 130); a second one interrupts at once; the
  previous handlers come back after the watch."""
  import os  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from r3vae_jax.training import preemption  # pylint: disable=g-import-not-at-top
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  try:
    with preemption.PreemptionWatch() as watch:
      assert not watch.requested(0) and not preemption.interrupted()
      os.kill(os.getpid(), signal.SIGINT)
      assert watch.requested(1) and preemption.interrupted()
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with preemption.PreemptionWatch() as watch:
      os.kill(os.getpid(), signal.SIGTERM)
      assert watch.requested(0)
  finally:
    preemption._INTERRUPTED.clear()  # pylint: disable=protected-access


def test_a_checkpoint_folder_that_is_a_file_is_refused(tmp_path):
  """Read as "no checkpoint", it would start training over and append to the old logs."""
  import pytest  # pylint: disable=g-import-not-at-top
  from r3vae_jax import checkpoint, io  # pylint: disable=g-import-not-at-top
  (tmp_path / "ckpt").write_text("x")
  with pytest.raises(io.ArtifactError, match=r"ckpt: not a folder \(checkpoints go there\)"):
    checkpoint.make_manager(str(tmp_path / "ckpt"))
