"""Several JAX processes on one CPU machine, as the hosts of a pod: the command line run as N
processes joined by `jax.distributed` (gloo collectives, 4 / N fake CPU devices each, a
data x model = 2 x 2 mesh) against the same command in one process with the same 4 devices.

prepare -> vectors -> tokenize -> train (SIGTERM to every process at once mid-run: they agree on
the step to stop at and save there) -> the same command launched again resumes -> evaluate.
Checked: the training loss of every step, the final parameters, the SID table and the test
metrics equal the single-process run's; each process builds only its rows of every training
batch; only process 0 writes files (the others: only their own checkpoint shards); the
checkpoint the N processes wrote restores in this (single) process.

Run as a script, this file is one process of a launch: it records what the process reads and
writes (to $R3VAE_TEST_RECORD) and runs `r3vae_jax.main`.
"""
import builtins
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 4  # the mesh below, in every launch
TINY = [
    "--config=r3vae_jax/configs/default.py:rqkmeans",
    "--config.data.synthetic.num_items=100", "--config.data.synthetic.num_users=120",
    "--config.data.synthetic.num_topics=6", "--config.data.synthetic.dim=16",
    "--config.sid.levels=2", "--config.sid.codebook_size=8", "--config.sid.max_collisions=32",
    "--config.rqkmeans.iters=5",
    "--config.recommender.d_model=16", "--config.recommender.d_kv=8",
    "--config.recommender.d_ff=32", "--config.train.epochs=1", "--config.train.batch_size=64",
    "--config.train.warmup_steps=2", "--config.train.log_every_steps=1",
    "--config.eval.beam_size=10", "--config.eval.batch_size=64",
    "--config.mesh.data=2", "--config.mesh.model=2",
]


# ---- one process of a launch (run as a script) -------------------------------------------------

def _record_process(record_path: str, workdir: str) -> None:
  """Appends to `record_path` every file this process writes under `workdir` and the example
  rows of every training batch it builds."""
  # pylint: disable=g-import-not-at-top
  from r3vae_jax.recommender import data as rec_data
  lock, real_open = threading.Lock(), builtins.open
  root = os.path.realpath(workdir)

  def record(entry):
    with lock, real_open(record_path, "a", encoding="utf-8") as f:
      f.write(json.dumps(entry) + "\n")

  def inside(path):
    if not isinstance(path, (str, os.PathLike)):
      return None
    full = os.path.realpath(os.fspath(path))
    return os.path.relpath(full, root) if full.startswith(root + os.sep) else None

  def recording_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and (rel := inside(file)) is not None:
      record({"write": rel})
    return real_open(file, mode, *args, **kwargs)

  def recording_rename(real):
    def rename(src, dst, *args, **kwargs):
      if (rel := inside(dst)) is not None:
        record({"write": rel})
      return real(src, dst, *args, **kwargs)
    return rename

  builtins.open = recording_open
  os.replace, os.rename = recording_rename(os.replace), recording_rename(os.rename)

  step_of_thread = threading.local()
  host_batch, make_batch = rec_data.BatchSource.host_batch, rec_data.make_batch

  def recording_host_batch(self, step):
    step_of_thread.step = int(step)
    try:
      return host_batch(self, step)
    finally:
      step_of_thread.step = None

  def recording_make_batch(examples, index, *args, **kwargs):
    if getattr(step_of_thread, "step", None) is not None:
      record({"step": step_of_thread.step, "rows": [int(i) for i in index]})
    return make_batch(examples, index, *args, **kwargs)

  rec_data.BatchSource.host_batch = recording_host_batch
  rec_data.make_batch = recording_make_batch


def _cache_every_process() -> None:
  """Lets every process write its compiled programs to the persistent cache.

  jax writes cache entries from process 0 only, and on CPU the other processes' programs have
  cache keys of their own (measured with jax 0.10: process 1 misses every program process 0
  hits), so without this process 1 compiles all of its programs again at every launch (~15 s
  of each launch of this test).
  """
  # pylint: disable=g-import-not-at-top,protected-access
  from jax._src import compilation_cache, compiler, distributed
  write = getattr(compiler, "_cache_write", None)
  if write is None:  # another jax: its own rules, only slower
    return

  def cache_write(cache_key, compile_time_secs, module_name, backend, executable,
                  host_callbacks):
    write(cache_key, compile_time_secs, module_name, backend, executable, host_callbacks)
    if distributed.global_state.process_id != 0 and not host_callbacks:
      compilation_cache.put_executable_and_time(cache_key, module_name, executable, backend,
                                                int(compile_time_secs))
  compiler._cache_write = cache_write


def _process_main() -> None:
  _cache_every_process()
  workdir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir="))
  if os.environ.get("R3VAE_TEST_FAKE_GCS"):  # gs://bucket/... served from this local folder
    from test_io import install_fake_gcs  # pylint: disable=g-import-not-at-top
    install_fake_gcs(os.environ["R3VAE_TEST_FAKE_GCS"])
    workdir = os.path.join(os.environ["R3VAE_TEST_FAKE_GCS"], workdir.removeprefix("gs://"))
  _record_process(os.environ["R3VAE_TEST_RECORD"], workdir)
  from r3vae_jax import main  # pylint: disable=g-import-not-at-top
  main.run()


# ---- the harness -----------------------------------------------------------------------------

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Launch:
  """N processes of the same command (N = 1: no jax.distributed)."""

  def __init__(self, n, workdir, out, tag, fake_gcs=None):
    self.n, self.workdir, self.logs = n, workdir, [out / f"{tag}.{i}.log" for i in range(n)]
    self.records = [out / f"{tag}.{i}.jsonl" for i in range(n)]
    port = _free_port()
    # Every launch inherits the test session's persistent compilation cache settings
    # (tests/conftest.py puts them in the environment): the second launch and later test runs
    # load the programs the first one built.
    self.procs = []
    for i in range(n):
      env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
             "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES // n}",
             "R3VAE_TEST_RECORD": str(self.records[i]),
             "R3VAE_TEST_FAKE_GCS": str(fake_gcs or "")}
      for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(name, None)
      if n > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n),
                   JAX_PROCESS_ID=str(i))
      with open(self.logs[i], "w", encoding="utf-8") as log:
        self.procs.append(subprocess.Popen(
            [sys.executable, __file__, *TINY, f"--workdir={workdir}", "--mode=all"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))

  def sigterm_when(self, ready, timeout=900):
    """SIGTERM to every process at once, as soon as `ready()`."""
    deadline = time.time() + timeout
    while not ready():
      assert time.time() < deadline and all(p.poll() is None for p in self.procs), self.tails()
      time.sleep(0.2)
    for p in self.procs:
      p.send_signal(signal.SIGTERM)

  def wait(self, timeout=900):
    for p in self.procs:
      p.wait(timeout)
    assert all(p.returncode == 0 for p in self.procs), self.tails()
    return [[json.loads(line) for line in r.read_text().splitlines()] if r.exists() else []
            for r in self.records]

  def kill(self):
    for p in self.procs:
      if p.poll() is None:
        p.kill()
        p.wait()

  def tails(self):
    return "\n".join(f"--- {log.name} (rc {p.poll()})\n" + log.read_text()[-3000:]
                     for p, log in zip(self.procs, self.logs))


def _train_losses(workdir):
  """{step: loss} of the training records of metrics.jsonl."""
  lines = (workdir / "recommender" / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  return {r["step"]: r["loss"] for r in records if r.get("kind") == "train"}


def _final_state(workdir):
  """The latest checkpoint's state as numpy arrays, restored without a target (any layout)."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import orbax.checkpoint as ocp
  ckpt = workdir / "recommender" / "checkpoints"
  step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(ckpt / str(step) / "state").item_metadata.tree
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return step, checkpointer.restore(ckpt / str(step) / "state", restore_args=args)


def _rows_by_step(records):
  """{step: example rows} of one process's training batches (a step built twice: same rows)."""
  rows = {}
  for r in records:
    if "step" in r:
      assert rows.setdefault(r["step"], r["rows"]) == r["rows"]
  return rows


@pytest.fixture
def launches():
  """Starts launches; kills what is left of them when the test ends."""
  started = []

  def start(*args):
    started.append(Launch(*args))
    return started[-1]
  yield start
  for launch in started:
    launch.kill()


def test_n_processes_preempted_and_resumed_equal_one_process(tmp_path, launches):
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  n = 2
  # The N processes work in gs://bucket/multi (a fake bucket: the local folder `gcs`).
  gcs, multi_uri = tmp_path / "gcs", "gs://bucket/multi"
  single_dir, multi_dir = tmp_path / "single", tmp_path / "gcs" / "bucket" / "multi"
  # One launch at a time: at most N processes share the CPU with the other tests.
  first = launches(n, multi_uri, tmp_path, "first", gcs)
  metrics = multi_dir / "recommender" / "metrics.jsonl"
  first.sigterm_when(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3)
  first_records = first.wait()
  stopped = json.loads((multi_dir / "recommender" / "result.json").read_text())
  assert stopped["finished"] == "preempted"
  for log in first.logs:  # every process stopped at the same step, where the checkpoint is
    assert f"preempted; checkpoint saved at step {stopped['step']}" in log.read_text()
  second = launches(n, multi_uri, tmp_path, "second", gcs)
  second_records = second.wait()
  (single_records,) = launches(1, single_dir, tmp_path, "single").wait()
  for log in second.logs:
    assert f"resumed from step {stopped['step']}" in log.read_text()

  # The same run: every step's loss, the final parameters, the SID table, the test metrics.
  losses = _train_losses(single_dir)
  assert len(losses) > stopped["step"] + 1 and _train_losses(multi_dir) == losses
  (step_1, state_1), (step_n, state_n) = _final_state(single_dir), _final_state(multi_dir)
  assert step_1 == step_n
  jax.tree.map(np.testing.assert_array_equal, state_n, state_1)
  np.testing.assert_array_equal(np.load(multi_dir / "tokenizer" / "sid_table.npy"),
                                np.load(single_dir / "tokenizer" / "sid_table.npy"))
  result = {d: json.loads((d / "results.json").read_text()) for d in (single_dir, multi_dir)}
  assert result[multi_dir]["metrics"]["test"] == result[single_dir]["metrics"]["test"]
  assert result[multi_dir]["metrics"]["valid"] == result[single_dir]["metrics"]["valid"]
  assert result[multi_dir]["num_devices"] == result[single_dir]["num_devices"] == DEVICES
  assert result[multi_dir]["train"]["checkpoint_dir"] == f"{multi_uri}/recommender/checkpoints"
  assert not (REPO / "gs:").exists()
  assert len(json.loads((multi_dir / "wall_time.json").read_text())["launches"]) == 2

  # Each process built only its slice of every global batch.
  whole = _rows_by_step(single_records)
  for launch in (first_records, second_records):
    parts = [_rows_by_step(r) for r in launch]
    assert parts[0] and parts[0].keys() == parts[1].keys()
    for step in parts[0]:
      assert [len(p[step]) for p in parts] == [len(whole[step]) // n] * n
      assert sum((p[step] for p in parts), []) == whole[step]

  # Only process 0 writes, each file of the workdir; the others only their checkpoint shards.
  for launch in (first_records, second_records):
    for i, records in enumerate(launch[1:], 1):
      written = {r["write"] for r in records if "write" in r}
      assert all(w.startswith("recommender/checkpoints/") and f"process_{i}" in w
                 for w in written), sorted(written)
  written = [{r["write"] for r in launch[0] if "write" in r}
             for launch in (first_records, second_records)]
  assert all(w >= {"results.json", "eval.json", "recommender/result.json"} for w in written)
  # The relaunch uses the SID table the first launch fitted.
  assert "tokenizer/sid_table.npy" in written[0] and "tokenizer/sid_table.npy" not in written[1]


@pytest.mark.parametrize("env,message", [
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}, "JAX_COORDINATOR_ADDRESS not set"),
    ({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1", "JAX_NUM_PROCESSES": "two",
      "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES='two'.*expected integers")])
def test_an_explicit_cluster_with_bad_variables_is_an_error(monkeypatch, env, message):
  from r3vae_jax import parallel  # pylint: disable=g-import-not-at-top
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=message):
    parallel.initialize_distributed()


if __name__ == "__main__":
  _process_main()
