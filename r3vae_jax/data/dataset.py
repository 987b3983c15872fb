"""The item/interaction table every stage shares, and its on-disk form in `workdir/data/`.

Files written (atomically) by `save_prepared`:
  sequences.npz  `items` int32[total] (all sequences concatenated), `offsets` int64[U + 1]
  items.json     name, num_items, item_titles, item_text
  stats.json     `stats(inter)`
"""
from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from r3vae_jax import io


@dataclasses.dataclass
class Interactions:
  """Users' chronological item sequences over a dense item-id space `0..num_items-1`."""
  name: str
  num_items: int
  sequences: list[np.ndarray]
  item_titles: list[str] | None
  item_text: list[str] | None
  user_keys: list[str] | None = None   # the source's user ids (not saved; for messages)


def validate(inter: Interactions, source: str = "interactions") -> None:
  """Raises ArtifactError naming `source` when ids, sequences or text lists are inconsistent."""
  if inter.num_items <= 0:
    raise io.ArtifactError(f"{source}: num_items must be positive, got {inter.num_items}")
  if not inter.sequences:
    raise io.ArtifactError(f"{source}: no user sequences")
  if not _sequences_ok(inter.sequences, inter.num_items):
    _raise_first_bad_sequence(inter, source)
  for field in ("item_titles", "item_text"):
    values = getattr(inter, field)
    if values is not None and len(values) != inter.num_items:
      raise io.ArtifactError(
          f"{source}: field {field} has {len(values)} entries, expected num_items="
          f"{inter.num_items}")


def _sequences_ok(sequences: list[np.ndarray], num_items: int) -> bool:
  """Whether every sequence is 1-D, non-empty and inside [0, num_items), checked on all of them
  concatenated (one pass in C instead of one per user)."""
  try:
    flat = np.concatenate(sequences)
  except ValueError:  # a 0-D sequence, or sequences of different ranks
    return False
  lengths = np.fromiter(map(len, sequences), np.int64, len(sequences))
  return bool(flat.ndim == 1 and lengths.min() > 0 and flat.min() >= 0
              and flat.max() < num_items)


def _raise_first_bad_sequence(inter: Interactions, source: str) -> None:
  """Raises ArtifactError naming the first user whose sequence `_sequences_ok` refuses."""
  for u, seq in enumerate(inter.sequences):
    if seq.ndim != 1 or seq.size == 0:
      raise io.ArtifactError(f"{source}: user {u}: empty or non-1-D sequence (shape {seq.shape})")
    lo, hi = int(seq.min()), int(seq.max())
    if lo < 0 or hi >= inter.num_items:
      raise io.ArtifactError(
          f"{source}: user {u}: item id {lo if lo < 0 else hi} outside [0, {inter.num_items})")


def describe_user(inter: Interactions, u: int, path: str | None) -> str:
  """User `u` as the source file names it: its id and the first line that starts with it
  (when `path` is a text file), else its 0-based index."""
  if not inter.user_keys:
    return f"#{u} (0-based index)"
  key = inter.user_keys[u]
  if path and os.path.isfile(path):
    from r3vae_jax.data import sources  # pylint: disable=g-import-not-at-top
    try:
      for lineno, line in sources.numbered_lines(path, "dataset file", errors="replace"):
        if line.replace("::", " ").replace(",", " ").split()[:1] == [key]:
          return f"{key} (line {lineno})"
    except io.ArtifactError:
      pass
  return key


def check_splittable(inter: Interactions, source: str, min_items: int = 3) -> None:
  """Raises ArtifactError naming the first user (by `describe_user`) with < `min_items` items:
  leave-one-out needs one training item, one validation and one test target."""
  for u, seq in enumerate(inter.sequences):
    if len(seq) < min_items:
      raise io.ArtifactError(
          f"{source}: user {describe_user(inter, u, source)} has {len(seq)} items after "
          f"filtering; at least {min_items} are needed (one to train on, one validation and one "
          "test target); raise config.data.min_core or drop the user")


def stats(inter: Interactions) -> dict:
  """Users, items, interactions, mean sequence length and density of the table."""
  users = len(inter.sequences)
  total = int(sum(len(s) for s in inter.sequences))
  return {
      "name": inter.name,
      "users": users,
      "items": int(inter.num_items),
      "interactions": total,
      "avg_len": total / max(users, 1),
      "density": total / max(users * inter.num_items, 1),
  }


def save_prepared(workdir: str, inter: Interactions) -> None:
  """Writes workdir/data/{sequences.npz, items.json, stats.json}, each file atomically."""
  validate(inter)
  directory = os.path.join(workdir, "data")
  lengths = np.array([len(s) for s in inter.sequences], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  flat = np.concatenate(inter.sequences).astype(np.int32)
  with io.atomic_open(os.path.join(directory, "sequences.npz"), "wb") as f:
    np.savez(f, items=flat, offsets=offsets)
  io.write_json(os.path.join(directory, "items.json"), {
      "name": inter.name, "num_items": int(inter.num_items),
      "item_titles": inter.item_titles, "item_text": inter.item_text})
  io.write_json(os.path.join(directory, "stats.json"), stats(inter))


def _check_items_json(meta, path: str) -> dict:
  """items.json's fields, type-checked (ArtifactError naming the field and its value)."""
  if not isinstance(meta, dict):
    raise io.ArtifactError(f"{path}: expected a JSON object with fields name, num_items, "
                           f"item_titles, item_text; got {type(meta).__name__}")
  for key in ("name", "num_items", "item_titles", "item_text"):
    if key not in meta:
      raise io.ArtifactError(f"{path}: missing field {key!r}")
  n = meta["num_items"]
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    raise io.ArtifactError(f"{path}: field num_items = {n!r}: expected an int >= 1")
  if not isinstance(meta["name"], str):
    raise io.ArtifactError(f"{path}: field name = {meta['name']!r}: expected a string")
  for key in ("item_titles", "item_text"):
    values = meta[key]
    if values is not None and (not isinstance(values, list) or len(values) != n
                               or not all(isinstance(v, str) for v in values)):
      raise io.ArtifactError(f"{path}: field {key}: expected a list of {n} strings or null")
  return meta


def load_prepared(workdir: str) -> Interactions:
  """Reads what `save_prepared` wrote; raises ArtifactError naming the file on any damage."""
  directory = os.path.join(workdir, "data")
  path = os.path.join(directory, "sequences.npz")
  if not io.exists(path):
    raise io.ArtifactError(f"{path}: file not found (run --mode=prepare first)")
  try:
    with io.open_file(path, "rb") as f, np.load(f, allow_pickle=False) as z:
      flat, offsets = z["items"], z["offsets"]
  except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise io.ArtifactError(f"{path}: not a readable sequences archive ({e})") from None
  for field, array in (("items", flat), ("offsets", offsets)):
    if not np.issubdtype(array.dtype, np.integer):
      raise io.ArtifactError(f"{path}: field {field}: expected integers, got {array.dtype}")
  if (flat.ndim != 1 or offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0
      or offsets[-1] != flat.size or np.any(np.diff(offsets) < 0)):
    raise io.ArtifactError(f"{path}: field offsets inconsistent with items ({flat.size} entries)")
  meta_path = os.path.join(directory, "items.json")
  meta = _check_items_json(io.read_json(meta_path), meta_path)
  flat = flat.astype(np.int32)
  sequences = [flat[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
  inter = Interactions(name=meta["name"], num_items=meta["num_items"], sequences=sequences,
                       item_titles=meta["item_titles"], item_text=meta["item_text"])
  validate(inter, source=path)
  return inter
