"""Bad input: each case raises ArtifactError naming the file and the line or field."""
import gzip
import json
import os

import numpy as np
import pytest

from r3vae_jax import io
from r3vae_jax.configs.default import base_config
from r3vae_jax.data import dataset, pipeline, splits
from r3vae_jax.data.readers import amazon_raw, hetrec, iclrec, movielens, p5, recbole
from r3vae_jax.data.vectors import npy


def test_missing_files(tmp_path):
  with pytest.raises(io.ArtifactError, match=r"nope\.txt: file not found"):
    iclrec.read_user_sequences(str(tmp_path / "nope.txt"))
  with pytest.raises(io.ArtifactError, match=r"movies\.dat: file not found"):
    movielens.read_ml1m(str(tmp_path))
  with pytest.raises(io.ArtifactError, match=r"artists\.dat: file not found"):
    hetrec.read_hetrec(str(tmp_path))
  with pytest.raises(io.ArtifactError, match=r"x\.inter: file not found"):
    recbole.read_inter(str(tmp_path / "x.inter"))
  with pytest.raises(io.ArtifactError, match=r"v\.npy: file not found"):
    npy.load_vectors(str(tmp_path / "v.npy"), 3)
  config = base_config()
  config.data.format = "iclrec"
  with pytest.raises(io.ArtifactError, match="no path given"):
    pipeline.prepare(config)


def test_malformed_lines(tmp_path):
  seq = tmp_path / "seq.txt"
  seq.write_text("1 1 2 3\n2 4 x5 6\n")
  with pytest.raises(io.ArtifactError, match=r"seq\.txt: line 2: item id 'x5' is not an integer"):
    iclrec.read_user_sequences(str(seq))
  (tmp_path / "movies.dat").write_text("1::A (1999)::Drama\n2::B (2000)\n", encoding="latin-1")
  (tmp_path / "ratings.dat").write_text("1::1::5::1\n", encoding="latin-1")
  with pytest.raises(io.ArtifactError, match=r"movies\.dat: line 2: expected 3 '::'-separated"):
    movielens.read_ml1m(str(tmp_path))
  inter = tmp_path / "a.inter"
  inter.write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\tj\n")
  with pytest.raises(io.ArtifactError, match=r"a\.inter: line 3: 2 columns, header has 3"):
    recbole.read_inter(str(inter))
  inter.write_text("user_id\titem_id\nu\ti\n")
  with pytest.raises(io.ArtifactError, match=r"a\.inter: line 1: header column 'user_id' is not"):
    recbole.read_inter(str(inter))
  inter.write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ti\tsoon\n")
  with pytest.raises(io.ArtifactError, match=r"a\.inter: line 2: field timestamp = 'soon'"):
    recbole.read_inter(str(inter))


def test_truncated_lines_and_files(tmp_path):
  reviews = tmp_path / "reviews_X_5.json.gz"
  good = json.dumps({"reviewerID": "u", "asin": "a", "unixReviewTime": 1})
  with gzip.open(reviews, "wt") as f:
    f.write(good + "\n" + good[:25] + "\n")
  with pytest.raises(io.ArtifactError, match=r"reviews_X_5\.json\.gz: line 2: not a JSON object"):
    amazon_raw.read_reviews(str(reviews))
  with gzip.open(reviews, "wt") as f:
    f.write(json.dumps({"reviewerID": "u", "asin": "a"}) + "\n")
  with pytest.raises(io.ArtifactError, match=r"line 1: missing field 'unixReviewTime'"):
    amazon_raw.read_reviews(str(reviews))
  with gzip.open(reviews, "wt") as f:
    f.write((good + "\n") * 2000)
  data = reviews.read_bytes()
  reviews.write_bytes(data[: len(data) // 2])
  with pytest.raises(io.ArtifactError, match=r"reviews_X_5\.json\.gz: after line \d+: truncated"):
    amazon_raw.read_reviews(str(reviews))
  (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n1::1::5", encoding="latin-1")
  (tmp_path / "movies.dat").write_text("1::A (1999)::Drama\n", encoding="latin-1")
  with pytest.raises(io.ArtifactError, match=r"ratings\.dat: line 2: expected 4"):
    movielens.read_ml1m(str(tmp_path))


def test_unknown_ids(tmp_path):
  (tmp_path / "seq.txt").write_text("1 1 2\n2 2 9\n")
  (tmp_path / "datamaps.json").write_text(json.dumps(
      {"id2user": {"1": "UA", "2": "UB"}, "id2item": {"1": "X", "2": "Y"}}))
  with pytest.raises(io.ArtifactError,
                     match=r"seq\.txt: line 2: item id 9 is not in .*datamaps\.json "
                     r"\(field id2item\)"):
    p5.read_p5(str(tmp_path / "seq.txt"), str(tmp_path / "datamaps.json"))
  (tmp_path / "seq.txt").write_text("1 1 2\n7 2 1\n")
  with pytest.raises(io.ArtifactError, match=r"seq\.txt: line 2: user id 7 is not in"):
    p5.read_p5(str(tmp_path / "seq.txt"), str(tmp_path / "datamaps.json"))
  (tmp_path / "datamaps.json").write_text(json.dumps({"id2user": {}}))
  with pytest.raises(io.ArtifactError, match=r"datamaps\.json: field 'id2item' missing"):
    p5.read_datamaps(str(tmp_path / "datamaps.json"))
  (tmp_path / "movies.dat").write_text("1::A (1999)::Drama\n", encoding="latin-1")
  (tmp_path / "ratings.dat").write_text("1::1::5::1\n1::42::4::2\n", encoding="latin-1")
  with pytest.raises(io.ArtifactError, match=r"ratings\.dat: line 2: movie id 42 is not in"):
    movielens.read_ml1m(str(tmp_path))


def test_empty_sequences(tmp_path):
  (tmp_path / "seq.txt").write_text("1 1 2 3\n2\n")
  with pytest.raises(io.ArtifactError, match=r"seq\.txt: line 2: user 2 has an empty sequence"):
    iclrec.read_user_sequences(str(tmp_path / "seq.txt"))
  (tmp_path / "seq.txt").write_text("1 1 2\n2 1 3\n")
  config = base_config()
  config.data.update(dict(format="iclrec", path=str(tmp_path / "seq.txt"), min_core=5))
  with pytest.raises(io.ArtifactError, match=r"seq\.txt: no user has any interaction left"):
    pipeline.prepare(config)
  inter = dataset.Interactions("t", 3, [np.array([0, 1]), np.array([], np.int32)], None, None)
  with pytest.raises(io.ArtifactError, match="user 1: empty"):
    dataset.save_prepared(str(tmp_path / "w"), inter)


def test_vectors_wrong_rows_nan_and_shape(tmp_path):
  path = str(tmp_path / "v.npy")
  io.write_npy(path, np.ones((4, 8), np.float32))
  with pytest.raises(io.ArtifactError, match=r"v\.npy: 4 rows, but the item table has 5 items"):
    npy.load_vectors(path, 5)
  bad = np.ones((5, 8), np.float32)
  bad[3, 2] = np.nan
  io.write_npy(path, bad)
  with pytest.raises(io.ArtifactError, match=r"v\.npy: row 3 \(item 3\) holds NaN or Inf"):
    npy.load_vectors(path, 5)
  io.write_npy(path, np.ones(5, np.float32))
  with pytest.raises(io.ArtifactError, match=r"v\.npy: expected a 2-D array"):
    npy.load_vectors(path, 5)
  io.write_npy(path, np.ones((5, 2), np.int64))
  with pytest.raises(io.ArtifactError, match=r"v\.npy: expected floating vectors"):
    npy.load_vectors(path, 5)
  io.write_npy(path, np.ones((5, 2), np.float64))
  assert npy.load_vectors(path, 5).dtype == np.float32


def test_short_sequence_in_splits():
  with pytest.raises(ValueError, match="user 0 has 2 items"):
    splits.leave_one_out([np.array([1, 2])])


def test_failed_write_keeps_previous_files(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  good = dataset.Interactions("t", 3, [np.array([0, 1, 2], np.int32)], None, None)
  dataset.save_prepared(workdir, good)
  before = {n: (tmp_path / "data" / n).read_bytes() for n in os.listdir(tmp_path / "data")}

  def fail(*args, **kwargs):
    raise OSError("disk full")
  monkeypatch.setattr(np, "savez", fail)
  changed = dataset.Interactions("t", 3, [np.array([2, 1, 0, 1], np.int32)], None, None)
  with pytest.raises(OSError, match="disk full"):
    dataset.save_prepared(workdir, changed)
  after = {n: (tmp_path / "data" / n).read_bytes() for n in os.listdir(tmp_path / "data")}
  assert after == before   # no temp files left, nothing half-written
  assert dataset.load_prepared(workdir).sequences[0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf"])
def test_non_finite_timestamps_are_refused(tmp_path, stamp):
  """A NaN time would sort last and silently become the user's test target."""
  inter = tmp_path / "a.inter"
  inter.write_text(f"user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\nu\tj\t{stamp}\n")
  with pytest.raises(io.ArtifactError, match=rf"a\.inter: line 3: .*'{stamp}' is not a finite"):
    recbole.read_inter(str(inter))
  reviews = tmp_path / "r.json"
  reviews.write_text(json.dumps({"reviewerID": "u", "asin": "a",
                                 "unixReviewTime": float(stamp)}) + "\n")
  with pytest.raises(io.ArtifactError, match=r"r\.json: line 1: .* is not a finite number"):
    amazon_raw.read_reviews(str(reviews))


def test_float32_overflow_and_empty_columns(tmp_path):
  path = str(tmp_path / "v.npy")
  big = np.ones((5, 3), np.float64)
  big[2, 1] = 1e300
  io.write_npy(path, big)
  with pytest.raises(io.ArtifactError, match=r"row 2 \(item 2\) holds NaN or Inf as float32"):
    npy.load_vectors(path, 5)
  io.write_npy(path, np.ones((5, 0), np.float32))
  with pytest.raises(io.ArtifactError, match=r"expected a 2-D array \[items, dim >= 1\]"):
    npy.load_vectors(path, 5)


def test_item_id_beyond_int64(tmp_path):
  seq = tmp_path / "seq.txt"
  seq.write_text("1 1 2\n2 3 123456789012345678901234567890\n")
  with pytest.raises(io.ArtifactError, match=r"seq\.txt: line 2: item id 1234\d+ is too large"):
    iclrec.read_user_sequences(str(seq))


@pytest.mark.parametrize("field,value,message", [
    ("num_items", "3", r"field num_items = '3': expected an int >= 1"),
    ("num_items", True, r"field num_items = True: expected an int >= 1"),
    ("item_titles", ["a", "b"], r"field item_titles: expected a list of 3 strings or null"),
    ("item_text", [1, 2, 3], r"field item_text: expected a list of 3 strings or null"),
    ("name", 7, r"field name = 7: expected a string"),
])
def test_items_json_field_types(tmp_path, field, value, message):
  dataset.save_prepared(str(tmp_path), dataset.Interactions(
      "t", 3, [np.array([0, 1, 2], np.int32)], ["a", "b", "c"], ["x", "y", "z"]))
  path = tmp_path / "data" / "items.json"
  path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
  with pytest.raises(io.ArtifactError, match=rf"items\.json: {message}"):
    dataset.load_prepared(str(tmp_path))
