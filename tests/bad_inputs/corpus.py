"""The bad-input corpus: each case is a command line of `r3vae_jax.main` on a malformed input.

  python tests/bad_inputs/corpus.py     # rewrites the generated (binary) files of the corpus

Hand-written files sit beside this module; the binary ones (gzip, .npy, .npz, latin-1 text)
are made by `generated_files()` and committed too (a test checks they still match). The
workdir artifacts fit the tiny pipeline of `reliability_harness.py` (200 items, 16-d vectors,
SIDs of 2 levels x 8 codes + a collision token).

A case runs `mode` on a copy of a base workdir ("empty", "prepared", "vectors", "tokenized"),
after copying corpus files into it (`place`: workdir path -> corpus file), writing `write`
(workdir path -> bytes or text), deleting `remove` and calling `setup(workdir)`. `{corpus}` in
flags is this folder, `{workdir}` the case's workdir. `fsize_limit` caps the size of any file the
run writes (RLIMIT_FSIZE: a full disk). Every case but the `ok` ones must fail with one
`error:` line matching `expect`, exit code != 0, no traceback, and leave the workdir as it was.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import pathlib
import socket
import subprocess
import time
from typing import Callable

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
  write: tuple[tuple[str, bytes | str], ...] = ()
  setup: Callable[[pathlib.Path], None] | None = None
  fsize_limit: int | None = None


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
         r"one_interaction\.txt: user 1 \(line 1\) has 1 items after filtering; at least 3",
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
         remove=("tokenizer/sid_metrics.json", "lineage.json")),
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


# ---- cases made at run time (inline files, workdir edits) -------------------------------------
def _raw(fmt: str, name: str, content: bytes | str, *more: str) -> dict:
  """A raw dataset file written into the case's workdir and the flags that read it."""
  return {"flags": (f"--config.data.format={fmt}", f"--config.data.path={{workdir}}/raw/{name}",
                    *more),
          "write": ((f"raw/{name}", content),)}


def _array(array: np.ndarray) -> bytes:
  return _npy(array)


def _vectors(**kw) -> np.ndarray:
  return np.random.default_rng(1).normal(size=(NUM_ITEMS, DIM)).astype(kw.get("dtype", np.float32))


def _npy_flags(name: str, array: np.ndarray) -> dict:
  return {"flags": ("--config.vectors.source=npy", f"--config.vectors.path={{workdir}}/raw/{name}"),
          "write": ((f"raw/{name}", _npy(array)),)}


def _rewrite_json(relpath: str, edit: Callable[[dict], object]) -> Callable[[pathlib.Path], None]:
  def setup(workdir: pathlib.Path) -> None:
    path = workdir / relpath
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
  return setup


def _prepare_other_data(workdir: pathlib.Path) -> None:
  """`--mode=prepare` again on another dataset of the same size (what a user may do)."""
  import reliability_harness as rh  # pylint: disable=g-import-not-at-top
  from r3vae_jax import main  # pylint: disable=g-import-not-at-top
  main._stage_prepare(rh.tiny_config(data__synthetic__seed=7), str(workdir))  # pylint: disable=protected-access


def _record_trained(workdir: pathlib.Path) -> None:
  """The lineage entry `--mode=train` writes, for a workdir without a checkpoint."""
  from r3vae_jax import lineage  # pylint: disable=g-import-not-at-top
  artifacts = lineage.read(str(workdir))
  inputs = {k: artifacts[k]["fingerprint"] for k in ("data", "sid_table")}
  lineage.record(str(workdir), "recommender", "0" * 16, inputs)


def _trained_then(*steps: Callable[[pathlib.Path], None]) -> Callable[[pathlib.Path], None]:
  def setup(workdir: pathlib.Path) -> None:
    _record_trained(workdir)
    for step in steps:
      step(workdir)
  return setup


def _replace_vectors_consistently(workdir: pathlib.Path) -> None:
  """vectors.npy and vectors.json both replaced by hand (they agree with each other)."""
  from r3vae_jax import io as r3io  # pylint: disable=g-import-not-at-top
  other = _vectors()
  np.save(workdir / "vectors.npy", other)
  meta = json.loads((workdir / "vectors.json").read_text())
  meta["fingerprint"] = r3io.fingerprint_array(other)
  (workdir / "vectors.json").write_text(json.dumps(meta))


def _lock(pid: int | None = None, host: str | None = None) -> Callable[[pathlib.Path], None]:
  def setup(workdir: pathlib.Path) -> None:
    dead = pid
    if dead is None:  # a process that has ended
      child = subprocess.Popen(["true"])
      child.wait()
      dead = child.pid
    (workdir / "lock.json").write_text(json.dumps({
        "pid": dead, "host": host or socket.gethostname(), "started": time.time(),
        "mode": "all"}))
  return setup


def _make_file(relpath: str) -> Callable[[pathlib.Path], None]:
  def setup(workdir: pathlib.Path) -> None:
    target = workdir / relpath
    if target.is_dir():
      import shutil  # pylint: disable=g-import-not-at-top
      shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("not a folder\n")
  return setup


_INTER = "user_id:token\titem_id:token\ttimestamp:float\n"
_REVIEW = '{{"reviewerID": "u{u}", "asin": "a{i}", "unixReviewTime": {t}}}\n'
_SEQ = "1 1 2 3\n2 2 3 4\n3 3 4 5\n"
_VEC = ("--config.vectors.source=npy",)


def _seqs(offsets, items, **kw) -> bytes:
  return _npz(items=np.asarray(items, kw.get("items_dtype", np.int32)),
              offsets=np.asarray(offsets, kw.get("offsets_dtype", np.int64)))


READER_CASES = (
    # ---- user-sequence files (ICLRec / S3-Rec / P5) --------------------------------------------
    Case("seq_user_without_items", "prepare", "prepared",
         r"seq\.txt: line 2: user 7 has an empty sequence", **_raw("iclrec", "seq.txt", "1 1 2\n7\n")),
    Case("seq_item_zero", "prepare", "prepared", r"seq\.txt: line 1: item id 0 < 1",
         **_raw("iclrec", "seq.txt", "1 0 2 3\n")),
    Case("seq_item_float", "prepare", "prepared",
         r"seq\.txt: line 2: item id '2\.5' is not an integer",
         **_raw("iclrec", "seq.txt", "1 1 2\n2 2.5 3\n")),
    Case("seq_item_huge", "prepare", "prepared",
         r"seq\.txt: line 1: item id 99999999999999999999999 is too large",
         **_raw("iclrec", "seq.txt", "1 1 99999999999999999999999\n")),
    Case("seq_superscript_digit", "prepare", "prepared",
         r"seq\.txt: line 1: item id '²' is not an integer",
         **_raw("iclrec", "seq.txt", "1 1 ² 3\n")),
    Case("seq_binary_garbage", "prepare", "prepared", r"seq\.txt: line 1: not utf-8",
         **_raw("iclrec", "seq.txt", b"\x00\xff\xfe\x89PNG\r\n")),
    Case("seq_only_blank_lines", "prepare", "prepared", r"seq\.txt: no user sequences",
         **_raw("iclrec", "seq.txt", "\n  \n\t\n")),
    Case("seq_path_missing", "prepare", "prepared", r"raw/nope\.txt: file not found",
         ("--config.data.format=iclrec", "--config.data.path={workdir}/raw/nope.txt")),
    Case("seq_path_is_folder", "prepare", "prepared", r"/data: file not found",
         ("--config.data.format=iclrec", "--config.data.path={workdir}/data")),
    Case("seq_all_users_below_core", "prepare", "prepared",
         r"seq\.txt: no user has any interaction left \(after k-core",
         **_raw("iclrec", "seq.txt", "1 1 2\n2 3 4\n")),
    Case("p5_datamaps_list", "prepare", "prepared",
         r"maps\.json: field 'id2user' missing or not a mapping",
         flags=("--config.data.format=p5", "--config.data.path={corpus}/p5_sequences.txt",
                "--config.data.item_map_path={workdir}/raw/maps.json"),
         write=(("raw/maps.json", "[1, 2, 3]\n"),)),
    Case("p5_datamaps_missing", "prepare", "prepared", r"raw/maps\.json: file not found",
         ("--config.data.format=p5", "--config.data.path={corpus}/p5_sequences.txt",
          "--config.data.item_map_path={workdir}/raw/maps.json")),
    Case("p5_unknown_user", "prepare", "prepared",
         r"p5_sequences\.txt: line 1: user id 1 is not in .*maps\.json \(field id2user\)",
         flags=("--config.data.format=p5", "--config.data.path={corpus}/p5_sequences.txt",
                "--config.data.item_map_path={workdir}/raw/maps.json"),
         write=(("raw/maps.json", json.dumps({"id2user": {}, "id2item": {}})),)),
    # ---- RecBole .inter --------------------------------------------------------------------------
    Case("inter_nan_timestamp", "prepare", "prepared",
         r"x\.inter: line 3: field timestamp = 'nan' is not a finite number",
         **_raw("recbole", "x.inter", _INTER + "u\ti\t1\nu\tj\tnan\n")),
    Case("inter_inf_timestamp", "prepare", "prepared",
         r"x\.inter: line 2: field timestamp = 'inf' is not a finite number",
         **_raw("recbole", "x.inter", _INTER + "u\ti\tinf\n")),
    Case("inter_missing_item_column", "prepare", "prepared",
         r"x\.inter: field 'item_id' not in header \(user_id, timestamp\)",
         **_raw("recbole", "x.inter", "user_id:token\ttimestamp:float\nu\t1\n")),
    Case("inter_extra_column", "prepare", "prepared", r"x\.inter: line 3: 4 columns, header has 3",
         **_raw("recbole", "x.inter", _INTER + "u\ti\t1\nu\tj\t2\textra\n")),
    Case("inter_empty_user", "prepare", "prepared", r"x\.inter: line 2: empty user_id or item_id",
         **_raw("recbole", "x.inter", _INTER + "\ti\t1\n")),
    Case("inter_header_only", "prepare", "prepared", r"x\.inter: no interactions",
         **_raw("recbole", "x.inter", _INTER)),
    Case("inter_latin1", "prepare", "prepared", r"x\.inter: line 3: not utf-8",
         **_raw("recbole", "x.inter", (_INTER + "u\ti\t1\nusé\ti\t2\n").encode("latin-1"))),
    Case("inter_unclosed_quote", "prepare", "prepared", r"x\.inter: line 2: ",
         **_raw("recbole", "x.inter", _INTER + 'u\t"i\t1\nu\tj\t2\n')),
    Case("inter_short_user", "prepare", "prepared",
         r"x\.inter: user bob \(line 3\) has 2 items after filtering; at least 3 are needed",
         **_raw("recbole", "x.inter", _INTER + "ann\ti\t1\nbob\ti\t2\nann\tj\t3\nann\tk\t4\n"
                "bob\tk\t5\n", "--config.data.min_core=0")),
    Case("inter_duplicate_header_field", "prepare", "prepared",
         r"x\.inter: line 1: field 'user_id' appears twice in the header",
         **_raw("recbole", "x.inter",
                "user_id:token\tuser_id:token\titem_id:token\nu\tv\ti\n")),
    # ---- Amazon reviews --------------------------------------------------------------------------
    Case("reviews_missing_asin", "prepare", "prepared",
         r"r\.json: line 2: missing field 'asin'",
         **_raw("amazon_raw", "r.json", _REVIEW.format(u=1, i=1, t=1)
                + '{"reviewerID": "u2", "unixReviewTime": 3}\n')),
    Case("reviews_time_not_number", "prepare", "prepared",
         r"r\.json: line 1: field unixReviewTime = 'soon' is not a number",
         **_raw("amazon_raw", "r.json", _REVIEW.format(u=1, i=1, t='"soon"'))),
    Case("reviews_time_nan", "prepare", "prepared",
         r"r\.json: line 1: field unixReviewTime = nan is not a finite number",
         **_raw("amazon_raw", "r.json", _REVIEW.format(u=1, i=1, t="NaN"))),
    Case("reviews_time_list", "prepare", "prepared",
         r"r\.json: line 1: field unixReviewTime = \[1\] is not a number",
         **_raw("amazon_raw", "r.json", _REVIEW.format(u=1, i=1, t="[1]"))),
    Case("reviews_json_array", "prepare", "prepared", r"r\.json: line 1: expected a dict, got list",
         **_raw("amazon_raw", "r.json", "[1, 2]\n")),
    Case("reviews_empty", "prepare", "prepared", r"r\.json: no reviews",
         **_raw("amazon_raw", "r.json", "\n")),
    Case("reviews_id_object", "prepare", "prepared",
         r"r\.json: line 1: field reviewerID = \{.*\} is not a string or number",
         **_raw("amazon_raw", "r.json", '{"reviewerID": {"a": 1}, "asin": "x", '
                '"unixReviewTime": 1}\n')),
    # ---- MovieLens -------------------------------------------------------------------------------
    Case("ml1m_unknown_movie", "prepare", "prepared",
         r"ratings\.dat: line 1: movie id 9 is not in .*movies\.dat",
         flags=("--config.data.format=ml1m", "--config.data.path={workdir}/raw"),
         write=(("raw/movies.dat", "1::A (1999)::Drama\n"), ("raw/ratings.dat", "1::9::5::1\n"))),
    Case("ml1m_bad_timestamp", "prepare", "prepared",
         r"ratings\.dat: line 1: timestamp 'x' is not an integer",
         flags=("--config.data.format=ml1m", "--config.data.path={workdir}/raw"),
         write=(("raw/movies.dat", "1::A (1999)::Drama\n"), ("raw/ratings.dat", "1::1::5::x\n"))),
    Case("ml1m_missing_movies", "prepare", "prepared", r"movies\.dat: file not found",
         flags=("--config.data.format=ml1m", "--config.data.path={workdir}/raw"),
         write=(("raw/ratings.dat", "1::1::5::1\n"),)),
    Case("ml1m_short_movie_line", "prepare", "prepared",
         r"movies\.dat: line 2: expected 3 '::'-separated fields, got 2",
         flags=("--config.data.format=ml1m", "--config.data.path={workdir}/raw"),
         write=(("raw/movies.dat", "1::A (1999)::Drama\n2::B\n"),
                ("raw/ratings.dat", "1::1::5::1\n"))),
    # ---- item vectors from a file (--mode=vectors) -------------------------------------------------
    Case("npy_zero_columns", "vectors", "prepared",
         r"v\.npy: expected a 2-D array \[items, dim >= 1\], got shape \(200, 0\)",
         **_npy_flags("v.npy", np.zeros((NUM_ITEMS, 0), np.float32))),
    Case("npy_one_dimensional", "vectors", "prepared", r"v\.npy: expected a 2-D array",
         **_npy_flags("v.npy", np.zeros(NUM_ITEMS, np.float32))),
    Case("npy_three_dimensional", "vectors", "prepared", r"v\.npy: expected a 2-D array",
         **_npy_flags("v.npy", np.zeros((NUM_ITEMS, 2, 2), np.float32))),
    Case("npy_integer_dtype", "vectors", "prepared", r"v\.npy: expected floating vectors, got",
         **_npy_flags("v.npy", np.ones((NUM_ITEMS, DIM), np.int64))),
    Case("npy_complex_dtype", "vectors", "prepared", r"v\.npy: expected floating vectors, got",
         **_npy_flags("v.npy", np.ones((NUM_ITEMS, DIM), np.complex64))),
    Case("npy_float32_overflow", "vectors", "prepared",
         r"v\.npy: row 4 \(item 4\) holds NaN or Inf as float32",
         **_npy_flags("v.npy", np.where(np.arange(NUM_ITEMS)[:, None] == 4, 1e300,
                                        _vectors(dtype=np.float64)))),
    Case("npy_pickled_objects", "vectors", "prepared", r"v\.npy: not a readable \.npy array",
         flags=_npy_flags("v.npy", np.zeros(1))["flags"],
         write=(("raw/v.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, "
                              b"'shape': (200, 16), }" + b" " * 48 + b"\n" + b"\x80\x04N."),)),
    Case("npy_is_npz", "vectors", "prepared", r"v\.npy: not a readable \.npy array",
         flags=_npy_flags("v.npy", np.zeros(1))["flags"],
         write=(("raw/v.npy", _npz(a=np.zeros((NUM_ITEMS, DIM), np.float32))),)),
    Case("npy_no_path", "vectors", "prepared", r"vectors\.source=npy needs vectors\.path", _VEC),
    Case("npy_empty_file", "vectors", "prepared", r"v\.npy: not a readable \.npy array",
         flags=_npy_flags("v.npy", np.zeros(1))["flags"], write=(("raw/v.npy", b""),)),
)

WORKDIR_CASES = (
    # ---- prepared data ---------------------------------------------------------------------------
    Case("items_json_list", "vectors", "prepared",
         r"items\.json: expected a JSON object with fields name, num_items",
         write=(("data/items.json", "[]\n"),)),
    Case("items_num_items_string", "vectors", "prepared",
         r"items\.json: field num_items = 'many': expected an int >= 1",
         setup=_rewrite_json("data/items.json", lambda m: {**m, "num_items": "many"})),
    Case("items_num_items_float", "vectors", "prepared",
         r"items\.json: field num_items = 200\.5: expected an int >= 1",
         setup=_rewrite_json("data/items.json", lambda m: {**m, "num_items": 200.5})),
    Case("items_titles_string", "vectors", "prepared",
         r"items\.json: field item_titles: expected a list of 200 strings or null",
         setup=_rewrite_json("data/items.json", lambda m: {**m, "item_titles": "abc"})),
    Case("items_text_numbers", "vectors", "prepared",
         r"items\.json: field item_text: expected a list of 200 strings or null",
         setup=_rewrite_json("data/items.json", lambda m: {**m, "item_text": list(range(200))})),
    Case("sequences_missing_offsets", "vectors", "prepared",
         r"sequences\.npz: not a readable sequences archive",
         write=(("data/sequences.npz", _npz(items=np.zeros(4, np.int32))),)),
    Case("sequences_float_items", "vectors", "prepared",
         r"sequences\.npz: field items: expected integers, got float",
         write=(("data/sequences.npz", _seqs([0, 3], [0.5, 1, 2], items_dtype=np.float32)),)),
    Case("sequences_2d_offsets", "vectors", "prepared",
         r"sequences\.npz: field offsets inconsistent with items",
         write=(("data/sequences.npz", _seqs([[0, 3]], [0, 1, 2])),)),
    Case("sequences_offsets_decreasing", "vectors", "prepared",
         r"sequences\.npz: field offsets inconsistent with items",
         write=(("data/sequences.npz", _seqs([0, 3, 2, 4], [0, 1, 2, 3])),)),
    Case("sequences_empty_user", "vectors", "prepared",
         r"sequences\.npz: user 1: empty or non-1-D sequence",
         write=(("data/sequences.npz", _seqs([0, 3, 3, 6], [0, 1, 2, 3, 4, 5])),)),
    Case("sequences_missing", "vectors", "prepared",
         r"sequences\.npz: file not found \(run --mode=prepare first\)",
         remove=("data/sequences.npz",)),
    Case("sequences_one_item_users", "vectors", "prepared",
         r"sequences\.npz: .*user 0 has 1 items",
         write=(("data/sequences.npz", _seqs([0, 1, 2], [0, 1])),)),
    # ---- vectors in the workdir (tokenize) --------------------------------------------------------
    Case("workdir_vectors_missing", "tokenize", "vectors", r"vectors\.npy: file not found",
         remove=("vectors.npy",)),
    Case("workdir_vectors_zero_columns", "tokenize", "vectors",
         r"vectors\.npy: expected a 2-D array \[items, dim >= 1\], got shape \(200, 0\)",
         write=(("vectors.npy", _npy(np.zeros((NUM_ITEMS, 0), np.float32))),)),
    Case("workdir_vectors_overflow", "tokenize", "vectors",
         r"vectors\.npy: row 0 \(item 0\) holds NaN or Inf as float32",
         write=(("vectors.npy", _npy(np.full((NUM_ITEMS, DIM), 1e39))),)),
    Case("workdir_vectors_integer", "tokenize", "vectors",
         r"vectors\.npy: expected floating vectors, got dtype int32",
         write=(("vectors.npy", _npy(np.ones((NUM_ITEMS, DIM), np.int32))),)),
    Case("vectors_json_list", "tokenize", "vectors",
         r"vectors\.json: expected a JSON object with a string field fingerprint",
         write=(("vectors.json", "[1]\n"),)),
    Case("vectors_json_no_fingerprint", "tokenize", "vectors",
         r"vectors\.json: expected a JSON object with a string field fingerprint",
         setup=_rewrite_json("vectors.json", lambda m: {"source": m["source"]})),
    # ---- SID tables ------------------------------------------------------------------------------
    Case("sid_table_missing", "train", "tokenized", r"no SID table found",
         remove=("tokenizer/sid_table.npy",)),
    Case("sid_one_dimensional", "train", "tokenized", r"sid_table\.npy: SID table must be 2-D",
         write=(("tokenizer/sid_table.npy", _npy(np.arange(NUM_ITEMS, dtype=np.int32))),),
         remove=("tokenizer/sid_metrics.json",)),
    Case("sid_too_many_levels", "train", "tokenized",
         r"sid_table.*4 columns.*expected 3|sid_table.*levels",
         write=(("tokenizer/sid_table.npy",
                 _npy(np.concatenate([_sid_table(), _sid_table()[:, :1]], axis=1))),),
         remove=("tokenizer/sid_metrics.json",)),
    Case("sid_long_table", "train", "tokenized",
         r"sid_table\.npy: 250 rows, but the prepared data has 200 items",
         write=(("tokenizer/sid_table.npy", _npy(_sid_table(250))),),
         remove=("tokenizer/sid_metrics.json",)),
    Case("sid_collision_overflow", "train", "tokenized",
         r"sid_table: item \d+ level 2 has code \d+, outside \[0, 32\)",
         write=(("tokenizer/sid_table.npy",
                 _npy(np.stack([np.zeros(NUM_ITEMS, np.int32), np.zeros(NUM_ITEMS, np.int32),
                                np.arange(NUM_ITEMS, dtype=np.int32)], 1))),),
         remove=("tokenizer/sid_metrics.json", "lineage.json")),
    Case("sid_strings", "train", "tokenized", r"sid_table\.npy: SID table must hold integers",
         write=(("tokenizer/sid_table.npy", _npy(np.full((NUM_ITEMS, 3), "a"))),),
         remove=("tokenizer/sid_metrics.json",)),
    Case("sid_metrics_garbled", "train", "tokenized", r"sid_metrics\.json: line 1: not valid JSON",
         write=(("tokenizer/sid_metrics.json", "{\"meta\": "),)),
    Case("sid_metrics_list", "train", "tokenized",
         r"sid_metrics\.json: expected a JSON object with meta\.table_fingerprint",
         write=(("tokenizer/sid_metrics.json", "[]\n"),)),
    Case("sid_made_from_other_vectors", "train", "tokenized",
         r"sid_table\.npy: made from vectors with fingerprint \w+, but .*vectors\.json says",
         setup=_rewrite_json("vectors.json", lambda m: {**m, "fingerprint": "0" * 16})),
    # ---- lineage ---------------------------------------------------------------------------------
    Case("stale_vectors_after_prepare", "tokenize", "vectors",
         r"vectors\.npy: made from .*data/sequences\.npz with fingerprint \w+, but that file now "
         r"holds \w+ \(--mode=prepare ran again since\); rerun --mode=vectors",
         setup=_prepare_other_data),
    Case("stale_table_after_prepare", "train", "tokenized",
         r"vectors\.npy: made from .*data/sequences\.npz .*rerun --mode=vectors and the stages",
         setup=_prepare_other_data),
    Case("stale_model_after_prepare", "evaluate", "tokenized",
         r"vectors\.npy: made from .*data/sequences\.npz .*rerun --mode=vectors",
         setup=_trained_then(_prepare_other_data)),
    Case("stale_model_recommend", "recommend", "tokenized",
         r"vectors\.npy: made from .*data/sequences\.npz .*rerun --mode=vectors",
         flags=("--user=0",), setup=_trained_then(_prepare_other_data)),
    Case("stale_model_after_tokenize", "evaluate", "tokenized",
         r"recommender/checkpoints: made from .*sid_table\.npy with fingerprint \w+, .*rerun "
         r"--mode=train",
         setup=_trained_then(_rewrite_json("lineage.json", lambda m: {"artifacts": {
             **m["artifacts"], "recommender": {**m["artifacts"]["recommender"], "made_from": {
                 **m["artifacts"]["recommender"]["made_from"], "sid_table": "1" * 16}}}}))),
    Case("data_replaced_by_hand", "vectors", "prepared",
         r"sequences\.npz: content \(fingerprint \w+\) differs from what --mode=prepare wrote",
         write=(("data/sequences.npz", _seqs([0, 3, 6], [0, 1, 2, 3, 4, 5])),)),
    Case("vectors_replaced_by_hand", "tokenize", "vectors",
         r"vectors\.npy: content \(fingerprint \w+\) differs from what --mode=vectors wrote",
         setup=_replace_vectors_consistently),
    Case("lineage_garbled", "tokenize", "vectors", r"lineage\.json: line 1: not valid JSON",
         write=(("lineage.json", "{\"artifacts\": "),)),
    Case("lineage_wrong_shape", "tokenize", "vectors",
         r"lineage\.json: expected \{\"artifacts\": \{name: \{\.\.\.\}\}\}, got list",
         write=(("lineage.json", "{\"artifacts\": []}"),)),
    Case("lineage_unknown_artifact", "tokenize", "vectors",
         r"lineage\.json: field artifacts\.model: unknown artifact",
         setup=_rewrite_json("lineage.json", lambda m: {"artifacts": {
             **m["artifacts"], "model": {"fingerprint": "x", "made_from": {}}}})),
    Case("lineage_fingerprint_number", "tokenize", "vectors",
         r"lineage\.json: field artifacts\.data: expected",
         setup=_rewrite_json("lineage.json", lambda m: {"artifacts": {
             **m["artifacts"], "data": {"fingerprint": 5, "made_from": {}}}})),
    # ---- checkpoints and trained artifacts -------------------------------------------------------
    Case("evaluate_untrained", "evaluate", "tokenized",
         r"recommender/checkpoints: no recommender checkpoint; run --mode=train first"),
    Case("recommend_untrained", "recommend", "tokenized",
         r"recommender/checkpoints: no recommender checkpoint; run --mode=train first",
         ("--user=0",)),
    Case("checkpoints_is_a_file", "train", "tokenized",
         r"recommender/checkpoints: not a folder", setup=_make_file("recommender/checkpoints")),
    Case("checkpoint_step_garbage", "evaluate", "tokenized",
         r"recommender/checkpoints/5: checkpoint unreadable",
         write=(("recommender/checkpoints/5/_CHECKPOINT_METADATA", "{garbage"),
                ("recommender/checkpoints/5/state/junk", "x"))),
    Case("wall_time_garbled", "all", "tokenized", r"wall_time\.json: line 1: not valid JSON",
         write=(("wall_time.json", "{"),)),
    Case("wall_time_wrong_shape", "all", "tokenized",
         r"wall_time\.json: expected \{\"launches\"", write=(("wall_time.json", "{\"launches\": 3}"),)),
    # ---- the workdir and its lock ----------------------------------------------------------------
    Case("lock_held_by_live_process", "tokenize", "vectors",
         r"lock\.json: the workdir is in use by pid 1 on host", setup=_lock(pid=1)),
    Case("lock_of_another_host", "tokenize", "vectors",
         r"lock\.json: the workdir is locked by pid \d+ on host elsewhere-7.*delete",
         setup=_lock(host="elsewhere-7")),
    Case("lock_of_dead_process", "prepare", "prepared", "", setup=_lock(), ok=True),
    Case("workdir_is_a_file", "prepare", "empty", r"sub: .*(Not a directory|File exists)",
         ("--workdir={workdir}/sub",), write=(("sub", "x"),)),
    Case("disk_full_vectors", "vectors", "prepared", r"vectors\.npy: cannot write",
         fsize_limit=4096),
    Case("disk_full_prepare", "prepare", "prepared", r"File too large", fsize_limit=2048),
    # ---- recommend arguments ---------------------------------------------------------------------
    Case("recommend_items_not_int", "recommend", "tokenized",
         r"--items: 'abc' is not an item id", ("--items=1,abc",),
         setup=_record_trained),
    Case("recommend_fuse_missing", "recommend", "tokenized",
         r"nowhere/data/sequences\.npz: file not found", ("--user=0", "--fuse={workdir}/nowhere"),
         setup=_record_trained),
    # ---- configs ---------------------------------------------------------------------------------
    Case("beam_zero", "prepare", "prepared", r"config\.eval\.beam_size: expected an int >= 1",
         ("--config.eval.beam_size=0",)),
    Case("codebook_one", "prepare", "prepared", r"config\.sid\.codebook_size: expected an int >= 2",
         ("--config.sid.codebook_size=1",)),
    Case("dropout_one", "prepare", "prepared", r"config\.recommender\.dropout: .* < 1",
         ("--config.recommender.dropout=1.0",)),
    Case("mesh_zero", "prepare", "prepared", r"config\.mesh\.data: expected an int >= 1",
         ("--config.mesh.data=0",)),
    Case("tokenizer_unknown", "prepare", "prepared", r"config\.tokenizer: expected one of",
         ("--config.tokenizer=vqvae",)),
    Case("select_metric_mrr", "prepare", "prepared", r"config\.train\.select_metric: expected",
         ("--config.train.select_metric=mrr@10",)),
    Case("data_format_unknown", "prepare", "prepared", r"config\.data\.format: expected one of",
         ("--config.data.format=parquet",)),
    Case("vectors_source_unknown", "prepare", "prepared",
         r"config\.vectors\.source: expected one of", ("--config.vectors.source=bert",)),
    Case("inf_lr", "prepare", "prepared", r"config\.train\.lr: expected a finite number > 0",
         ("--config.train.lr=inf",)),
    Case("stop_at_negative", "prepare", "prepared", r"config\.train\.stop_at: expected",
         ("--config.train.stop_at=-1.0",)),
)

CASES = CASES + READER_CASES + WORKDIR_CASES


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


# Archives (`.npz`) are written where a case places them, from `generated_files()`, not kept in
# the tree.
UNTRACKED = frozenset({"sequences_truncated.npz", "sequences_ids_out_of_range.npz"})


def source_bytes(name: str) -> bytes:
  """The content of corpus file `name`."""
  return generated_files()[name] if name in UNTRACKED else (HERE / name).read_bytes()


if __name__ == "__main__":
  for name, content in generated_files().items():
    if name in UNTRACKED:
      continue
    (HERE / name).write_bytes(content)
    print(f"wrote {HERE / name} ({len(content)} bytes)")
