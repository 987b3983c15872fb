"""TensorBoard event files of a stage's metrics, without TensorFlow (tensorboardX).

`TensorBoardWriter(logdir)` is a `metrics.MetricsWriter`: every numeric field of a record
becomes the scalar `<kind>/<field>` at the record's "step" (else its "epoch"); a list field
(`usage_per_level`, `loss_per_level`) becomes one scalar per entry, `<kind>/<field>/<i>`.
`stage.begin` adds one per stage under `workdir/tensorboard/<stage>`, so
`tensorboard --logdir WORKDIR` shows the tokenizer, recommender and DIGER curves side by side.
"""
from __future__ import annotations

import math
import numbers
import sys

import jax

# Fields that locate a record rather than measure something.
_POSITION = ("kind", "step", "epoch")


def scalars(record: dict) -> dict[str, float]:
  """{tag: value} of a record's finite numeric fields (see the module docstring)."""
  kind = record.get("kind", "metrics")
  out = {}
  for key, value in record.items():
    if key in _POSITION or isinstance(value, bool):
      continue
    if isinstance(value, numbers.Real):
      out[f"{kind}/{key}"] = float(value)
    elif isinstance(value, (list, tuple)):
      for i, v in enumerate(value):
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
          out[f"{kind}/{key}/{i}"] = float(v)
  return {tag: v for tag, v in out.items() if math.isfinite(v)}


def summary_writer_class():
  """tensorboardX's `SummaryWriter`, imported without PyTorch.

  tensorboardX imports torch when it is installed (about 2.5 s) only to accept torch tensors;
  this module writes Python floats. Unless torch is already loaded, `import torch` is made to
  raise ImportError for the duration of the import, which tensorboardX handles as "no torch"; a
  later `import torch` elsewhere is unaffected.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class TensorBoardWriter:
  """Writes each record's scalars to an event file in `logdir` (process 0 only; a local folder:
  a workdir in an object store, `scheme://...`, gets no event files)."""

  def __init__(self, logdir: str):
    self.logdir = logdir
    self._writer = None
    if jax.process_index() == 0 and "://" not in logdir:
      self._writer = summary_writer_class()(logdir, flush_secs=10)

  def write(self, record: dict) -> None:
    if self._writer is None:
      return
    step = record.get("step", record.get("epoch", 0))
    step = int(step) if isinstance(step, numbers.Real) and math.isfinite(step) else 0
    for tag, value in scalars(record).items():
      self._writer.add_scalar(tag, value, step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} of every event file in `logdir`, in file order (for tests and
  notebooks; TensorBoard itself reads the same files)."""
  import os  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out: dict[str, list[tuple[int, float]]] = {}
  for name in sorted(os.listdir(logdir)):
    if not name.startswith("events.out.tfevents"):
      continue
    with open(os.path.join(logdir, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      payload = data[pos + 12:pos + 12 + length]
      pos += 12 + length + 4
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
  return out
