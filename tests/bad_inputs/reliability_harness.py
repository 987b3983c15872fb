"""Shared by the reliability tests: a tiny pipeline, base workdirs, main as a process.

The tiny pipeline: the synthetic catalogue shrunk to 200 items / 120 users, residual k-means
SIDs (2 levels x 8 codes + collision token), a 1+1-layer d_model-16 T5 without dropout (its
threefry key makes the step compile ~60% slower on a CPU; the slow test trains with dropout)
trained 2 epochs of 21 steps (batch 32) with a checkpoint every 5 steps and one validation at
the end; ~1 s of training on a CPU, the rest is JAX start-up and compilation (all subprocesses
of one pytest session share a persistent compilation cache, so only the first one compiles).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

CORPUS = pathlib.Path(__file__).resolve().parent
REPO = CORPUS.parents[1]
CONFIG_FILE = str(REPO / "r3vae_jax" / "configs" / "default.py")

TINY = {
    "data.synthetic.num_items": 200, "data.synthetic.num_users": 120,
    "data.synthetic.num_topics": 8, "data.synthetic.dim": 16, "data.synthetic.max_len": 12,
    "sid.levels": 2, "sid.codebook_size": 8, "sid.max_collisions": 32, "rqkmeans.iters": 10,
    "recommender.num_encoder_layers": 1, "recommender.num_decoder_layers": 1,
    "recommender.d_model": 16, "recommender.d_ff": 32, "recommender.num_heads": 2,
    "recommender.d_kv": 8, "recommender.dropout": 0.0,
    "train.batch_size": 32, "train.epochs": 2, "train.warmup_steps": 10,
    "train.log_every_steps": 1, "train.checkpoint_every_steps": 5, "train.checkpoint_keep": 2,
    "train.eval_every_epochs": 2, "eval.beam_size": 10, "eval.batch_size": 128, "mesh.data": 1,
}
STEPS_PER_EPOCH = 21   # ceil(647 training examples / 32)


def tiny_flags(**overrides: Any) -> list[str]:
  """Command-line flags of the tiny pipeline; `overrides` use `__` for dots (train__epochs=4)."""
  fields = {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}
  return [f"--config={CONFIG_FILE}:rqkmeans"] + [f"--config.{k}={v}" for k, v in fields.items()]


def tiny_config(**overrides: Any):
  """The config `tiny_flags(**overrides)` gives, built in-process."""
  from r3vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config("rqkmeans")
  for key, value in {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}.items():
    *path, last = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[last] = value
  return config


BASES = ("prepared", "vectors", "tokenized")


def build_bases(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """Workdirs after prepare / vectors / tokenize of the tiny pipeline (in-process stages)."""
  from r3vae_jax import main  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=protected-access
  stages = (main._stage_prepare, main._stage_vectors, main._stage_tokenize)
  config = tiny_config()
  work = root / "build"
  for name, stage in zip(BASES, stages):
    stage(config, str(work))
    shutil.copytree(work, root / name)
  return {name: root / name for name in BASES}


def shared_bases(tmp_path_factory: Any) -> dict[str, pathlib.Path]:
  """`build_bases` once per pytest session (whichever worker gets there first builds)."""
  root = shared_dir(tmp_path_factory, "bases")
  with once(root) as fresh:
    if fresh:
      build_bases(root)
  return {name: root / name for name in BASES}


def tree_hashes(root: pathlib.Path) -> dict[str, str]:
  """sha256 of every file under `root`, by relative path."""
  out = {}
  for path in sorted(root.rglob("*")):
    if path.is_file():
      out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
  return out


def shared_dir(tmp_path_factory: Any, name: str) -> pathlib.Path:
  """A folder of this pytest session that every xdist worker sees (the same path)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent
  return base / f"reliability_{name}"


@contextlib.contextmanager
def once(directory: pathlib.Path) -> Iterator[bool]:
  """Holds a lock on `directory`; yields True for the first worker to get it (it builds the
  contents), False once they exist (built by another worker or an earlier test)."""
  directory.mkdir(parents=True, exist_ok=True)
  with open(directory.parent / f"{directory.name}.lock", "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    done = directory / "DONE"
    fresh = not done.exists()
    yield fresh
    if fresh:
      done.touch()


def cache_env() -> dict[str, str]:
  """Environment of subprocesses: the test session's persistent JAX compilation cache settings
  (tests/conftest.py puts them in `os.environ`; the cache outlives the session, so a later run
  loads what this one compiled) and the repository on the import path."""
  return {**os.environ, "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
          "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


@dataclasses.dataclass
class Result:
  rc: int
  output: str     # stdout and stderr together
  seconds: float

  @property
  def error_lines(self) -> list[str]:
    return [line for line in self.output.splitlines() if line.startswith("error:")]


def run_jobs(jobs: list[dict], workspace: pathlib.Path, env: dict[str, str]
             ) -> dict[str, Result]:
  """Runs main once per job through `run_main.py` (one process, a fork per job).

  Args:
    jobs: {"name", "argv", optional "phase", "poison_step"} (see run_main.py).
    workspace: where job logs and the job list go.
    env: environment of the runner.
  """
  workspace.mkdir(parents=True, exist_ok=True)
  jobs = [{**job, "log": str(workspace / f"{job['name']}.log")} for job in jobs]
  (workspace / "jobs.json").write_text(json.dumps(jobs))
  proc = subprocess.run([sys.executable, str(CORPUS / "run_main.py"), str(workspace / "jobs.json"),
                         str(workspace / "results.json")], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, f"run_main.py failed:\n{proc.stderr[-3000:]}"
  results = json.loads((workspace / "results.json").read_text())
  return {job["name"]: Result(results[job["name"]]["rc"],
                              pathlib.Path(job["log"]).read_text(errors="replace"),
                              results[job["name"]]["seconds"]) for job in jobs}


def assert_clean_failure(result: Result, expect: str, before: dict[str, str],
                         after: dict[str, str]) -> None:
  """Exit code != 0, exactly one `error:` line matching `expect`, no traceback, and no file
  that existed before changed or vanished (no stray temporary files either)."""
  tail = result.output[-2500:]
  assert result.rc not in (0, None), f"exit code {result.rc}, expected a failure:\n{tail}"
  assert "Traceback (most recent call last)" not in result.output, tail
  assert len(result.error_lines) == 1, f"expected one error: line, got {result.error_lines}"
  assert re.search(expect, result.error_lines[0]), (
      f"error line {result.error_lines[0]!r} does not match {expect!r}")
  changed = [p for p, h in before.items() if after.get(p) != h]
  assert not changed, f"files changed or removed by a failed run: {changed}"
  stray = [p for p in after if p not in before and (".tmp" in p or "orbax-checkpoint-tmp" in p)]
  assert not stray, f"temporary files left behind: {stray}"


@dataclasses.dataclass
class Launch:
  """One `python -m r3vae_jax.main --mode=train` process, watched through its log."""
  rc: int
  output: str
  steps: list[int]              # the step numbers it logged, in order
  resumed_from: int | None      # "resumed from step N"
  recovery_s: float | None      # process start -> its first logged step
  signalled_at: int | None      # the logged step after which the signal was sent


_STEP = re.compile(r"recommender \[[#.]*\] +\d+% step (\d+)/")
_RESUMED = re.compile(r"recommender: resumed from step (\d+)")


def launch_train(argv: list[str], env: dict[str, str], log: pathlib.Path,
                 stop_at: int | None = None, sig: int = signal.SIGKILL,
                 timeout: float = 900) -> Launch:
  """Runs main in a real subprocess; sends `sig` once it has logged step >= `stop_at`."""
  start = time.time()
  proc = subprocess.Popen([sys.executable, "-m", "r3vae_jax.main", *argv], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines: queue.Queue = queue.Queue()
  reader = threading.Thread(target=lambda: [lines.put((time.time(), l)) for l in proc.stdout],
                            daemon=True)
  reader.start()
  output, steps, resumed, recovery, signalled = [], [], None, None, None
  while reader.is_alive() or not lines.empty():
    try:
      stamp, line = lines.get(timeout=1.0)
    except queue.Empty:
      if time.time() - start > timeout:
        proc.kill()
        raise AssertionError(f"main did not finish in {timeout}s:\n{''.join(output)[-3000:]}")
      continue
    output.append(line)
    if (m := _RESUMED.search(line)):
      resumed = int(m.group(1))
    if (m := _STEP.search(line)):
      steps.append(int(m.group(1)))
      recovery = stamp - start if recovery is None else recovery
      if stop_at is not None and signalled is None and steps[-1] >= stop_at:
        proc.send_signal(sig)
        signalled = steps[-1]
  rc = proc.wait()
  log.write_text("".join(output))
  return Launch(rc, "".join(output), steps, resumed, recovery, signalled)
