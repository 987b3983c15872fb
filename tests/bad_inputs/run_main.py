"""Runs many `python -m r3vae_jax.main ...` command lines cheaply: one forked child per job.

  python tests/bad_inputs/run_main.py JOBS.json RESULTS.json

The parent imports JAX and the pipeline once (without starting a JAX backend) and forks a child
per job, at most `os.cpu_count()` at a time (one under pytest-xdist). Each child is a fresh
command line run in all that matters here: its own flag parsing (`sys.argv` is the job's), its
own JAX backend, stdout and stderr in its own file, exit code as `python -m r3vae_jax.main`
would return it (an uncaught exception prints its traceback and exits 1, as the interpreter
does).

JOBS.json: a list of {"name", "argv": [flags of r3vae_jax.main], "log": stdout+stderr path,
"phase": optional int (default 0; phases run in ascending order, the jobs of one phase in
parallel), "poison_step": optional int, "fsize_limit": optional int}. `poison_step` makes the recommender's training batch
of that global step carry NaN loss weights (a test hook: the compiled step is unchanged).
`fsize_limit` caps the size of every file the child writes (RLIMIT_FSIZE, as a full disk: a
write beyond it fails with EFBIG); the log file is opened before and written at the end.
RESULTS.json: {name: {"rc": int, "seconds": float}}.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback

import numpy as np

import jax  # pylint: disable=unused-import  # imported once here, before forking
from r3vae_jax import main as r3vae_main
from r3vae_jax.recommender import data as recommender_data
from r3vae_jax.recommender import train as _recommender_train  # pylint: disable=unused-import
from r3vae_jax.tokenizer import api as _tokenizer_api  # pylint: disable=unused-import
# What the stages import, loaded once here rather than in every child.
from r3vae_jax import api as _api, lineage as _lineage, workdir_lock as _lock  # pylint: disable=unused-import
from r3vae_jax.configs import validate as _validate  # pylint: disable=unused-import
from r3vae_jax.data import dataset as _dataset, pipeline as _pipeline, splits as _splits  # pylint: disable=unused-import
from r3vae_jax.recommender import evaluation as _evaluation  # pylint: disable=unused-import
from r3vae_jax import compile_cache as _cache, summary as _summary  # pylint: disable=unused-import
from r3vae_jax.training import profile as _profile  # pylint: disable=unused-import
# The stages' event-file writer (tensorboardX, imported without torch as the stages do).
from r3vae_jax.training import tensorboard as _tensorboard  # pylint: disable=g-bad-import-order
_tensorboard.summary_writer_class()


def _poison(step: int) -> None:
  """Makes training batch `step` carry NaN weights, so that step's loss is NaN."""
  host_batch = recommender_data.BatchSource.host_batch

  def poisoned(self, s):
    batch = host_batch(self, s)
    if s == step:
      batch = {**batch, "weight": np.full_like(batch["weight"], np.nan)}
    return batch
  recommender_data.BatchSource.host_batch = poisoned


def _child(job: dict) -> None:
  fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  code = 1
  if job.get("fsize_limit"):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(job["fsize_limit"]),) * 2)
  try:
    if job.get("poison_step") is not None:
      _poison(int(job["poison_step"]))
    sys.argv = ["r3vae_jax.main"] + list(job["argv"])
    r3vae_main.run()
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # pylint: disable=broad-except  # what the interpreter would print
    traceback.print_exc()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def run_jobs(jobs: list[dict], parallel: int) -> dict[str, dict]:
  results, running = {}, {}
  queue = list(jobs)
  while queue or running:
    while queue and len(running) < parallel:
      job = queue.pop(0)
      pid = os.fork()
      if pid == 0:
        _child(job)
      running[pid] = (job["name"], time.time())
    pid, status = os.wait()
    name, start = running.pop(pid)
    results[name] = {"rc": os.waitstatus_to_exitcode(status), "seconds": time.time() - start}
  return results


def main() -> None:
  jobs_path, results_path = sys.argv[1:3]
  with open(jobs_path, encoding="utf-8") as f:
    jobs = json.load(f)
  # Under pytest-xdist the other workers keep the other cores busy: one job at a time there.
  parallel = 1 if os.environ.get("PYTEST_XDIST_WORKER") else max(os.cpu_count() or 1, 1)
  results = {}
  for phase in sorted({job.get("phase", 0) for job in jobs}):
    results.update(run_jobs([j for j in jobs if j.get("phase", 0) == phase], parallel))
  with open(results_path, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
