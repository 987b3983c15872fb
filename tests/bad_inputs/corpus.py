"""The bad-input corpus: each case is a command line of `r3vae_jax.main` on a malformed input.

  python tests/bad_inputs/corpus.py     # rewrites the generated (binary) files of the corpus

Hand-written files sit beside this module; the binary ones (gzip, .npy, .npz, latin-1 text)
are made by `generated_files()` and committed too (a test checks they still match). The
workdir artifacts fit the tiny pipeline of `reliability_harness.py` (200 items, 16-d vectors,
SIDs of 2 levels x 8 codes + a collision token).

A case runs `mode` on a copy of a base workdir ("empty", "prepared", "vectors", "tokenized"),
after copying corpus files into it (`place`: workdir path -> corpus file) and deleting
`remove`. `{corpus}` in flags is this folder. Every case but the `ok` ones must fail with one
`error:` line matching `expect`, exit code != 0, no traceback, and leave the workdir as it was.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
NUM_ITEMS, DIM, SID_COLUMNS = 200, 16, 3


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  mode: str
  base: str
  expect: str                                   # regex the error line must match
  flags: tuple[str, ...] = ()
  place: tuple[tuple[str, str], ...] = ()       # (workdir path, corpus file)
  remove: tuple[str, ...] = ()
  ok: bool = False                              # a hostile input that must be accepted


def _data(fmt: str, path: str, *more: str) -> tuple[str, ...]:
  return (f"--config.data.format={fmt}", f"--config.data.path={{corpus}}/{path}", *more)


CASES: tuple[Case, ...] = (
    # ---- raw dataset files (prepare; the prepared data/ already there must survive) ------
    Case("truncated_gzip", "prepare", "prepared",
         r"truncated_reviews\.json\.gz: after line \d+: truncated or corrupt",
         _data("amazon_raw", "truncated_reviews.json.gz")),
    Case("not_gzip", "prepare", "prepared", r"plain_text\.json\.gz: .*truncated or corrupt",
         _data("amazon_raw", "plain_text.json.gz")),
    Case("latin1_bytes", "prepare", "prepared", r"latin1_sequences\.txt: line \d+: not utf-8",
         _data("iclrec", "latin1_sequences.txt")),
    Case("half_json_line", "prepare", "prepared",
         r"half_line_reviews\.json: line 3: not a JSON object or Python dict",
         _data("amazon_raw", "half_line_reviews.json")),
    Case("python_literal_json", "prepare", "prepared",
         r"python_literal_datamaps\.json: line 1: not valid JSON",
         _data("p5", "p5_sequences.txt",
               "--config.data.item_map_path={corpus}/python_literal_datamaps.json")),
    Case("p5_id_out_of_range", "prepare", "prepared",
         r"p5_sequences\.txt: line 2: item id 9 is not in .*p5_datamaps_missing_item\.json",
         _data("p5", "p5_sequences.txt",
               "--config.data.item_map_path={corpus}/p5_datamaps_missing_item.json")),
    Case("one_interaction_users", "prepare", "prepared",
         r"one_interaction\.txt: .*user 0 has 1 items",
         _data("iclrec", "one_interaction.txt", "--config.data.min_core=0")),
    Case("empty_sequence_file", "prepare", "prepared", r"empty_sequences\.txt: no user sequences",
         _data("iclrec", "empty_sequences.txt")),
    Case("empty_inter_file", "prepare", "prepared", r"empty\.inter: empty file",
         _data("recbole", "empty.inter")),
    Case("non_integer_item", "prepare", "prepared",
         r"nonint_item\.txt: line 2: item id 'x5' is not an integer",
         _data("iclrec", "nonint_item.txt")),
    Case("negative_item", "prepare", "prepared", r"negative_item\.txt: line 2: item id -5 < 1",
         _data("iclrec", "negative_item.txt")),
    Case("duplicate_user", "prepare", "prepared",
         r"duplicate_user\.txt: line 2: user 1 appears twice",
         _data("iclrec", "duplicate_user.txt")),
    Case("ml1m_wrong_separator", "prepare", "prepared", r"ratings\.dat: line 1: expected 4",
         _data("ml1m", "ml1m_comma")),
    Case("untyped_header", "prepare", "prepared",
         r"untyped_header\.inter: line 1: header column 'user_id' is not",
         _data("recbole", "untyped_header.inter")),
    Case("non_numeric_timestamp", "prepare", "prepared",
         r"bad_timestamp\.inter: line 2: field timestamp = 'yesterday'",
         _data("recbole", "bad_timestamp.inter")),
    Case("duplicate_timestamps", "prepare", "empty", "",
         _data("recbole", "dup_timestamps.inter", "--config.data.min_core=0"), ok=True),
    # ---- item vectors ----------------------------------------------------------------------
    Case("npy_wrong_rows", "vectors", "prepared",
         r"vectors_wrong_rows\.npy: 199 rows, but the item table has 200 items",
         ("--config.vectors.source=npy", "--config.vectors.path={corpus}/vectors_wrong_rows.npy")),
    Case("npy_nan", "vectors", "prepared", r"vectors_nan\.npy: row 7 \(item 7\) holds NaN or Inf",
         ("--config.vectors.source=npy", "--config.vectors.path={corpus}/vectors_nan.npy")),
    Case("npy_truncated", "vectors", "prepared", r"vectors_truncated\.npy: not a readable \.npy",
         ("--config.vectors.source=npy", "--config.vectors.path={corpus}/vectors_truncated.npy")),
    Case("workdir_vectors_inf", "tokenize", "vectors", r"vectors\.npy: row 3 \(item 3\) holds NaN",
         place=(("vectors.npy", "vectors_inf.npy"),)),
    Case("vectors_fingerprint_mismatch", "tokenize", "vectors",
         r"vectors\.npy: fingerprint \w+ does not match .*vectors\.json",
         place=(("vectors.npy", "vectors_other_run.npy"),)),
    Case("vectors_json_garbled", "tokenize", "vectors", r"vectors\.json: line 2: not valid JSON",
         place=(("vectors.json", "vectors_json_garbled.json"),)),
    # ---- SID tables (train on a tokenized workdir) -----------------------------------------
    Case("sid_duplicate_rows", "train", "tokenized",
         r"sid_table\.npy: SID rows must be unique; items \[5, 9\]",
         place=(("tokenizer/sid_table.npy", "sid_table_duplicate_rows.npy"),)),
    Case("sid_negative", "train", "tokenized", r"sid_table\.npy: SID table has negative codes",
         place=(("tokenizer/sid_table.npy", "sid_table_negative.npy"),)),
    Case("sid_float", "train", "tokenized", r"sid_table\.npy: .*non-integer values",
         place=(("tokenizer/sid_table.npy", "sid_table_float.npy"),)),
    Case("sid_json_other_run", "train", "tokenized",
         r"sid_metrics\.json: its table_fingerprint \w+ does not match",
         place=(("tokenizer/sid_table.npy", "sid_table_out_of_range.npy"),)),
    Case("sid_codes_out_of_range", "train", "tokenized",
         r"sid_table: item 8 level 0 has code 8, outside \[0, 8\) \(config\.sid\.codebook_size\)",
         place=(("tokenizer/sid_table.npy", "sid_table_out_of_range.npy"),),
         remove=("tokenizer/sid_metrics.json",)),
    Case("sid_short_table", "train", "tokenized",
         r"sid_table\.npy: 150 rows, but the prepared data has 200 items",
         place=(("tokenizer/sid_table.npy", "sid_table_short.npy"),),
         remove=("tokenizer/sid_metrics.json",)),
    # ---- a workdir from an older version / damaged artifacts -------------------------------
    Case("old_sid_metrics", "train", "tokenized",
         r"sid_metrics\.json: expected a JSON object with meta\.table_fingerprint",
         place=(("tokenizer/sid_metrics.json", "sid_metrics_old.json"),)),
    Case("old_items_json", "vectors", "prepared", r"items\.json: missing field 'item_titles'",
         place=(("data/items.json", "items_old_version.json"),)),
    Case("truncated_sequences_npz", "vectors", "prepared",
         r"sequences\.npz: not a readable sequences archive",
         place=(("data/sequences.npz", "sequences_truncated.npz"),)),
    Case("sequence_ids_out_of_range", "vectors", "prepared",
         r"sequences\.npz: user 2: item id 250 outside \[0, 200\)",
         place=(("data/sequences.npz", "sequences_ids_out_of_range.npz"),)),
    # ---- configs ---------------------------------------------------------------------------
    Case("levels_zero", "prepare", "prepared", r"config\.sid\.levels: expected an int >= 1, got 0",
         ("--config.sid.levels=0",)),
    Case("negative_batch", "prepare", "prepared", r"config\.train\.batch_size: .* got -1",
         ("--config.train.batch_size=-1",)),
    Case("string_for_int", "prepare", "prepared", r"flags: .*config\.train\.batch_size=abc",
         ("--config.train.batch_size=abc",)),
    Case("nan_lr", "prepare", "prepared", r"config\.train\.lr: expected a finite number > 0",
         ("--config.train.lr=nan",)),
    Case("unknown_field", "prepare", "prepared", r"no such config field 'batch_sizee'",
         ("--config.train.batch_sizee=3",)),
    Case("ks_beyond_beam", "prepare", "prepared", r"config\.eval\.ks: .*beam_size \(10\)",
         ("--config.eval.ks=(5,20)",)),
    Case("config_file_string_int", "prepare", "prepared",
         r"config\.train\.batch_size: expected an int >= 1, got '64'",
         ("--config={corpus}/config_string_int.py",)),
    Case("config_file_type_error", "prepare", "prepared",
         r"config_type_error\.py: .*batch_size.*cannot be casted",
         ("--config={corpus}/config_type_error.py",)),
    Case("config_file_syntax_error", "prepare", "prepared",
         r"SyntaxError: .*config_syntax_error\.pyconfig, line 3",
         ("--config={corpus}/config_syntax_error.pyconfig",)),
    Case("config_file_missing_field", "prepare", "prepared", r"config\.train\.nonfinite: missing",
         ("--config={corpus}/config_missing_field.py",)),
)


def _npy(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, array, allow_pickle=False)
  return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _sid_table(rows: int = NUM_ITEMS) -> np.ndarray:
  """Unique rows `[code0, code1, collision]` with codes < 8."""
  i = np.arange(rows)
  return np.stack([i % 8, (i // 8) % 8, i // 64], axis=1).astype(np.int32)


def generated_files() -> dict[str, bytes]:
  """Every generated corpus file, by name (deterministic bytes)."""
  rng = np.random.default_rng(0)
  reviews = "".join(json.dumps({"reviewerID": f"U{i % 40}", "asin": f"B{i % 70:03d}",
                                "unixReviewTime": 1400000000 + i}) + "\n" for i in range(400))
  gz = gzip.compress(reviews.encode(), mtime=0)
  vectors = rng.normal(size=(NUM_ITEMS, DIM)).astype(np.float32)
  nan, inf = vectors.copy(), vectors.copy()
  nan[7, 3] = np.nan
  inf[3, 0] = np.inf
  duplicate, negative, floats = _sid_table(), _sid_table(), _sid_table().astype(np.float32)
  duplicate[9] = duplicate[5]
  negative[11, 1] = -1
  floats[4, 0] = 0.5
  out_of_range = _sid_table()
  out_of_range[:, 0] = np.arange(NUM_ITEMS) % 20       # level 0 holds codes up to 19 >= 8
  sequences = _npz(items=np.array([0, 1, 2, 3, 4, 5, 6, 250], np.int32),
                   offsets=np.array([0, 3, 6, 8], np.int64))
  return {
      "truncated_reviews.json.gz": gz[:len(gz) // 2],
      "latin1_sequences.txt": "1 1 2 3\ncafé 4 5 6\n".encode("latin-1"),
      "vectors_wrong_rows.npy": _npy(vectors[:NUM_ITEMS - 1]),
      "vectors_nan.npy": _npy(nan),
      "vectors_inf.npy": _npy(inf),
      "vectors_truncated.npy": _npy(vectors)[:100],
      "vectors_other_run.npy": _npy(vectors),
      "sid_table_duplicate_rows.npy": _npy(duplicate),
      "sid_table_negative.npy": _npy(negative),
      "sid_table_float.npy": _npy(floats),
      "sid_table_out_of_range.npy": _npy(out_of_range),
      "sid_table_short.npy": _npy(_sid_table(150)),
      "sequences_truncated.npz": sequences[:len(sequences) // 2],
      "sequences_ids_out_of_range.npz": sequences,
  }


if __name__ == "__main__":
  for name, content in generated_files().items():
    (HERE / name).write_bytes(content)
    print(f"wrote {HERE / name} ({len(content)} bytes)")
