"""Environment faults end in one error line: a checkpoint save that fails (a full disk) leaves
no temporary folder and orbax's tracebacks go to the error log; a failed restore prints no
orbax traceback; Ctrl-C is handled like SIGTERM; a checkpoint folder that is a file is refused."""
import re
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
    main._install_quiet_hooks()
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


_RESTORE_OTHER_MODEL = textwrap.dedent("""
    import sys
    import jax.numpy as jnp
    from r3vae_jax import checkpoint, io, main
    workdir = sys.argv[1]
    main._install_quiet_hooks()
    manager = checkpoint.make_manager(workdir + "/ckpt", async_save=False)
    for step in (5, 10):
      checkpoint.save(manager, step, {"w": jnp.ones((64, 64)) * step}, {})
    manager.close()
    manager = checkpoint.make_manager(workdir + "/ckpt", async_save=False)
    try:
      checkpoint.restore(manager, checkpoint.abstract_like({"w": jnp.ones((32, 64))}))
    except io.ArtifactError as e:
      main._fail(f"evaluate: {e}", workdir)
""")


def test_a_failed_restore_prints_one_line_and_no_orbax_traceback(tmp_path):
  """orbax leaves coroutines and a closed event loop behind a failed restore; what they raise
  at collection goes to the error log, not the terminal."""
  proc = subprocess.run([sys.executable, "-c", _RESTORE_OTHER_MODEL, str(tmp_path)], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  output = proc.stderr + proc.stdout
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert proc.returncode == 2 and len(errors) == 1, output[-3000:]
  assert re.search(r"ckpt: no checkpoint reads back \(10: .*; 5: ", errors[0]), errors
  assert "Traceback" not in output and "Exception ignored" not in output, output[-3000:]
