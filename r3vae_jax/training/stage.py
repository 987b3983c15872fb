"""A trainer's stage: its folder under the workdir, its metrics writer, its clock.

`begin(workdir, name, fingerprints)` is called once at the start of every stage (tokenizer,
recommender, diger); it is where checks that concern the whole workdir belong (a lock against
two launches in one workdir, the lineage of the artifacts the stage reads).
"""
from __future__ import annotations

import dataclasses
import os
import time

from absl import logging

from r3vae_jax import io
from r3vae_jax.training import metrics as metrics_lib
from r3vae_jax.training import tensorboard

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"  # workdir/tensorboard/<stage>: event files (tensorboard.py)


@dataclasses.dataclass
class Stage:
  """Attributes:
    name: the stage ("tokenizer", "recommender", "diger").
    root: `workdir/<name>`, where its files go.
    metrics: its `MetricsWriter` (`root/metrics.jsonl`, `workdir/tensorboard/<name>/`).
    fingerprints: what its checkpoints must agree with (`resume.check_meta`).
    start_time: `time.time()` at `begin`.
  """
  name: str
  root: str
  metrics: metrics_lib.MetricsWriter
  fingerprints: dict[str, str]
  start_time: float

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  def elapsed(self) -> float:
    """Seconds since `begin`."""
    return time.time() - self.start_time

  def close(self) -> None:
    self.metrics.close()


def begin(workdir: str, name: str, fingerprints: dict[str, str],
          writer: metrics_lib.MetricsWriter | None = None) -> Stage:
  """Opens stage `name` of `workdir`.

  Args:
    workdir: the run folder.
    name: the stage; its files go to `workdir/<name>/`.
    fingerprints: what its checkpoints must agree with.
    writer: where its metrics go (default: `metrics.jsonl` in the stage folder and TensorBoard
      event files in `workdir/tensorboard/<name>`).
  """
  root = os.path.join(workdir, name)
  io.makedirs(root)
  writer = writer or metrics_lib.MultiWriter(
      metrics_lib.JsonlWriter(os.path.join(root, METRICS_FILE)),
      tensorboard.TensorBoardWriter(os.path.join(workdir, TENSORBOARD_DIR, name)))
  logging.info("%s: stage in %s (fingerprints %s)", name, root, fingerprints)
  return Stage(name, root, writer, dict(fingerprints), time.time())
