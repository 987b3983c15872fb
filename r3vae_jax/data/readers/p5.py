"""P5 `sequential_data.txt` (`uid i1 i2 …`) with `datamaps.json` (user2id/item2id/id2item …)."""
from __future__ import annotations

from r3vae_jax import io
from r3vae_jax.data import sources
from r3vae_jax.data.readers import iclrec
from r3vae_jax.data.table import RawLog


def read_datamaps(path: str) -> tuple[dict[str, str], dict[str, str]]:
  """Returns (id2user, id2item) of a P5 datamaps.json; ids are the strings used in the files."""
  sources.require_file(path, "P5 datamaps.json")
  maps = io.read_json(path)
  for field in ("id2user", "id2item"):
    if not isinstance(maps, dict) or not isinstance(maps.get(field), dict):
      raise io.ArtifactError(f"{path}: field {field!r} missing or not a mapping")
  return {str(k): str(v) for k, v in maps["id2user"].items()}, \
         {str(k): str(v) for k, v in maps["id2item"].items()}


def _line_of(seq_path: str, token: str, user_column: bool) -> int:
  for lineno, line in sources.numbered_lines(seq_path, "user sequence file"):
    tokens = line.split()
    if (tokens[:1] if user_column else tokens[1:]).count(token):
      return lineno
  return 0


def apply_datamaps(log: RawLog, datamaps_path: str, seq_path: str) -> RawLog:
  """Replaces file ids by the datamaps' source keys (user id, ASIN).

  Raises:
    ArtifactError: naming the sequence file, its line and the datamaps file for an id the
      datamaps do not know.
  """
  id2user, id2item = read_datamaps(datamaps_path)
  for keys, table, what, user_column in ((log.user_keys, id2user, "user", True),
                                         (log.item_keys, id2item, "item", False)):
    unknown = next((k for k in keys if k not in table), None)
    if unknown is not None:
      line = _line_of(seq_path, unknown, user_column)
      raise io.ArtifactError(f"{seq_path}: line {line}: {what} id {unknown} is not in "
                             f"{datamaps_path} (field id2{what})")
  return RawLog(user_keys=[id2user[k] for k in log.user_keys],
                item_keys=[id2item[k] for k in log.item_keys], sequences=log.sequences)


def read_p5(seq_path: str, datamaps_path: str) -> RawLog:
  """P5 sequential data keyed by the datamaps' user ids and ASINs; dense ids = file id - 1."""
  return apply_datamaps(iclrec.read_user_sequences(seq_path), datamaps_path, seq_path)
