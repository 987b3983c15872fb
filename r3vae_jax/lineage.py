"""Artifact lineage: which inputs every artifact of a workdir was made from.

`workdir/lineage.json` holds, per artifact, the fingerprint of its content when its stage wrote
it and the fingerprints of the artifacts it was made from:

  {"artifacts": {"vectors": {"fingerprint": "3fa0...", "stage": "vectors",
                             "made_from": {"data": "91c2..."}}, ...}}

Artifacts (`ARTIFACTS`: name -> file, stage that writes it): data (data/sequences.npz +
items.json, by prepare), vectors (vectors.npy), sid_table (tokenizer/sid_table.npy, by tokenize;
by train for DIGER), recommender (recommender/checkpoints + result.json, by train), rankings
(recommender/*_ranking.npz) and eval (eval.json, by evaluate), results (results.json, by all).
Fingerprints are of content (arrays, parsed JSON), so a stage rerun on the same inputs gives
the same fingerprint and invalidates nothing.

Before a stage uses its inputs, `check(workdir, current)` compares, for every artifact it reads
(`current`: name -> fingerprint of the file as read now) and every artifact upstream of those:
- the file's fingerprint with the one recorded when it was written (a file replaced by hand or
  by another program);
- each artifact's recorded inputs with what those inputs are now (an upstream stage rerun on
  other inputs: e.g. prepare on another dataset leaves vectors.npy made from the old data/).
A mismatch is one `LineageError` naming both files and the stage to rerun. A workdir without
lineage.json (made by an older version, or artifacts placed by hand) is not checked.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

import numpy as np

from r3vae_jax import io

LINEAGE_FILE = "lineage.json"

# name -> (file or folder under the workdir, the --mode that writes it)
ARTIFACTS: dict[str, tuple[str, str]] = {
    "data": ("data/sequences.npz", "prepare"),
    "vectors": ("vectors.npy", "vectors"),
    "sid_table": ("tokenizer/sid_table.npy", "tokenize"),
    "recommender": ("recommender/checkpoints", "train"),
    "rankings": ("recommender/test_ranking.npz", "evaluate"),
    "eval": ("eval.json", "evaluate"),
    "results": ("results.json", "all"),
}


_STAGE_ORDER = ("prepare", "vectors", "tokenize", "train", "evaluate", "all")


class LineageError(io.ArtifactError):
  """An artifact was made from inputs other than the ones now in the workdir."""


def data_fingerprint(sequences: list[np.ndarray], num_items: int, item_titles: Any,
                     item_text: Any) -> str:
  """Fingerprint of the prepared data: sequences (int32 [total] + lengths), items and text."""
  flat = np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, np.int32)
  lengths = np.array([len(s) for s in sequences], np.int64)
  return io.fingerprint_json([io.fingerprint_array(flat), io.fingerprint_array(lengths),
                              int(num_items), io.fingerprint_json(item_titles),
                              io.fingerprint_json(item_text)])


def files_fingerprint(paths: list[str]) -> str:
  """Fingerprint of the bytes of `paths` (missing ones count as absent)."""
  h = hashlib.sha256()
  for path in paths:
    h.update(os.path.basename(path).encode())
    if io.exists(path):
      h.update(io.read_bytes(path))
  return h.hexdigest()[:16]


def _path(workdir: str) -> str:
  return os.path.join(workdir, LINEAGE_FILE)


def read(workdir: str) -> dict[str, dict[str, Any]] | None:
  """{artifact: {"fingerprint", "stage", "made_from"}}, None without lineage.json.

  Raises:
    ArtifactError: lineage.json is not what `record` writes (naming the field).
  """
  path = _path(workdir)
  if not io.exists(path):
    return None
  record = io.read_json(path)
  artifacts = record.get("artifacts") if isinstance(record, dict) else None
  if not isinstance(artifacts, dict):
    raise io.ArtifactError(f"{path}: expected {{\"artifacts\": {{name: {{...}}}}}}, got "
                           f"{type(artifacts if isinstance(record, dict) else record).__name__}")
  for name, entry in artifacts.items():
    if name not in ARTIFACTS:
      raise io.ArtifactError(f"{path}: field artifacts.{name}: unknown artifact (expected one "
                             f"of {', '.join(sorted(ARTIFACTS))})")
    if (not isinstance(entry, dict) or not isinstance(entry.get("fingerprint"), str)
        or not isinstance(entry.get("made_from", {}), dict)
        or not all(isinstance(v, str) for v in entry.get("made_from", {}).values())):
      raise io.ArtifactError(f"{path}: field artifacts.{name}: expected {{\"fingerprint\": str, "
                             "\"made_from\": {name: str}}")
  return artifacts


def record(workdir: str, name: str, fingerprint: str, made_from: Mapping[str, str],
           stage: str | None = None) -> None:
  """Records that artifact `name` (content `fingerprint`) was made from `made_from` by `stage`
  (default: the stage of `ARTIFACTS`)."""
  if name not in ARTIFACTS:
    raise ValueError(f"lineage.record: unknown artifact {name!r}; expected one of "
                     f"{sorted(ARTIFACTS)}")
  if not io.writes_files():  # process 0 records; the others would read a file being written
    return
  artifacts = read(workdir) or {}
  artifacts[name] = {"fingerprint": fingerprint, "stage": stage or ARTIFACTS[name][1],
                     "made_from": dict(made_from)}
  io.write_json(_path(workdir), {"artifacts": artifacts})


def fingerprint_of(workdir: str, name: str) -> str | None:
  """The recorded fingerprint of artifact `name`, None when unrecorded."""
  artifacts = read(workdir) or {}
  return artifacts.get(name, {}).get("fingerprint")


def check(workdir: str, current: Mapping[str, str], uses: tuple[str, ...] = ()) -> None:
  """Refuses inputs whose lineage does not match the files present (see the module docstring).

  Args:
    workdir: the run folder.
    current: artifact name -> fingerprint of the file as the stage read it.
    uses: artifacts the stage reads without fingerprinting them (a checkpoint): their recorded
      inputs are checked.

  Raises:
    LineageError: naming the artifact, the input it was made from and the stage to rerun.
  """
  artifacts = read(workdir)
  if artifacts is None:
    return
  path = lambda name: os.path.join(workdir, ARTIFACTS[name][0])
  now = {name: entry["fingerprint"] for name, entry in artifacts.items()}
  now.update(current)
  for name, fingerprint in current.items():
    entry = artifacts.get(name)
    if entry is not None and entry["fingerprint"] != fingerprint:
      raise LineageError(
          f"{path(name)}: content (fingerprint {fingerprint}) differs from what "
          f"--mode={entry['stage']} wrote (fingerprint {entry['fingerprint']}, {_path(workdir)}); "
          f"the file was replaced; rerun --mode={entry['stage']}")
  todo, seen, stale = list(current) + list(uses), set(), []
  while todo:
    name = todo.pop()
    if name in seen or name not in artifacts:
      continue
    seen.add(name)
    for source, used in artifacts[name]["made_from"].items():
      if source in now and now[source] != used:
        stale.append((name, source, used))
      todo.append(source)
  if stale:  # the most upstream one: rebuilding it (and what follows) rebuilds the others
    name, source, used = min(stale, key=lambda s: _STAGE_ORDER.index(artifacts[s[0]]["stage"]))
    raise LineageError(
        f"{path(name)}: made from {path(source)} with fingerprint {used}, but that file now "
        f"holds {now[source]} (--mode={ARTIFACTS[source][1]} ran again since); rerun "
        f"--mode={artifacts[name]['stage']} and the stages after it")
