"""TFDS builders: build from manual files into a tmp data_dir, read back without TensorFlow."""
import json
import sys

import numpy as np
import pytest

from r3vae_jax import io
from r3vae_jax.configs.default import base_config
from r3vae_jax.data import dataset, pipeline
from r3vae_jax.data.tfds import common


def _beauty_excerpt(folder):
  """Five users in ICLRec format, P5 datamaps and a RecBole .item for three of the items."""
  folder.mkdir(parents=True)
  (folder / "Beauty.txt").write_text(
      "1 1 2 3 4 5\n2 6 7 8 4 9\n3 4 1 10 11 12 2\n4 13 14 1 2\n5 3 5 6 14 13 7\n")
  ids = {str(i): f"B{i:09d}" for i in range(1, 15)}
  (folder / "p5_datamaps.json").write_text(json.dumps(
      {"id2user": {str(u): f"U{u}" for u in range(1, 6)}, "id2item": ids}))
  (folder / "recbole_sae_Amazon_Beauty.item").write_text(
      "item_id:token\ttitle:token\tcategories:token_seq\tbrand:token\n"
      "B000000001\tRed lipstick\t'Beauty', 'Makeup'\tAcme\n"
      "B000000004\tNail &amp; cuticle oil\t'Beauty', 'Nails'\t\n"
      "B000000014\tShampoo\t'Beauty', 'Hair Care'\tSuds\n")


def test_beauty_builder_from_manual_dir_without_tensorflow(tmp_path):
  _beauty_excerpt(tmp_path / "manual" / "amazon_beauty")   # found in manual_dir/amazon_beauty/
  builder = common.prepare_builder("beauty", str(tmp_path / "tfds"), str(tmp_path / "manual"))
  assert "tensorflow" not in sys.modules          # the no-TensorFlow path (array_record)
  source = builder.as_data_source()
  assert {k: len(v) for k, v in source.items()} == {"train": 5, "validation": 5, "test": 5}
  by_user = {int(ex["user_id"]): ex for ex in (source["test"][i] for i in range(5))}
  # user 2 (line 2): ids 6 7 8 4 9 -> dense 5 6 7 3 8
  assert by_user[1]["history"].tolist() == [5, 6, 7, 3] and int(by_user[1]["target"]) == 8
  val = {int(ex["user_id"]): ex for ex in (source["validation"][i] for i in range(5))}
  assert val[1]["history"].tolist() == [5, 6, 7] and int(val[1]["target"]) == 3
  train = {int(ex["user_id"]): ex for ex in (source["train"][i] for i in range(5))}
  assert train[1]["history"].tolist() == [5, 6] and int(train[1]["target"]) == 7
  meta = builder.info.metadata
  assert meta["num_items"] == 14 and meta["stats"]["interactions"] == 26
  assert meta["item_text"][3] == "Nail & cuticle oil. Categories: Beauty, Nails."
  assert meta["item_titles"][0] == "Red lipstick" and meta["item_titles"][1] == "B000000002"

  config = base_config()
  config.dataset = "beauty"
  config.data.update(dict(format="tfds", path=str(tmp_path / "tfds")))
  inter = pipeline.prepare(config)          # already prepared: read back, no rebuild
  assert [s.tolist() for s in inter.sequences][1] == [5, 6, 7, 3, 8]
  assert dataset.stats(inter)["users"] == 5 and inter.item_text == meta["item_text"]
  assert "tensorflow" not in sys.modules


def test_lastfm_builder_recbole_excerpt(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  rows = [(u, a, t) for u in range(1, 7) for a, t in zip(range(1, 7), range(6, 0, -1))]
  (manual / "lastfm.inter").write_text(
      "user_id:token\titem_id:token\tweight:float\ttimestamp:float\n"
      + "".join(f"{u}\t{a}\t13\t{t}\n{u}\t{a}\t15\t{t}\n" for u, a, t in rows))
  (manual / "lastfm.item").write_text(
      "item_id:token\tname:token\turl:token\tpicture_url:token\n"
      + "".join(f"{a}\tArtist {a}\tu\tp\n" for a in range(1, 7)))
  builder = common.prepare_builder("lastfm", str(tmp_path / "tfds"), str(manual))
  meta = builder.info.metadata
  assert meta["stats"]["users"] == 6 and meta["stats"]["interactions"] == 36   # tag rows merged
  test = builder.as_data_source()["test"]
  ex = test[0]
  # timestamps run 6..1 for artists 1..6, so the sequence is artists 6, 5, …, 1
  assert meta["item_titles"][int(ex["target"])] == "Artist 1"
  assert "tensorflow" not in sys.modules


def test_missing_manual_file_is_named(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "unrelated.txt").write_text("x")
  with pytest.raises(io.ArtifactError, match=r"no Toys_and_Games\.txt for toys"):
    common.prepare_builder("toys", str(tmp_path / "tfds"), str(manual))
  with pytest.raises(io.ArtifactError, match="is not prepared"):
    common.load_interactions("toys", str(tmp_path / "empty"))


@pytest.mark.slow
def test_beauty_builder_full_real_files(tmp_path, shared_data):
  builder = common.prepare_builder("beauty", str(tmp_path), str(shared_data))
  st = builder.info.metadata["stats"]
  assert (st["users"], st["items"], st["interactions"]) == (22363, 12101, 198502)
  inter = common.load_interactions("beauty", str(tmp_path))
  assert sum(len(s) for s in inter.sequences) == 198502
  assert np.all([len(s) >= 5 for s in inter.sequences])


def test_ml1m_builder_excerpt(tmp_path):
  folder = tmp_path / "manual" / "ml-1m"
  folder.mkdir(parents=True)
  (folder / "movies.dat").write_bytes("".join(
      f"{m}::Movie {m} (199{m})::Drama|Comedy\n" for m in range(1, 7)).encode("latin-1"))
  (folder / "ratings.dat").write_text("".join(
      f"{u}::{m}::4::{1000 * u + (7 - m)}\n" for u in range(1, 6) for m in range(1, 7)))
  builder = common.prepare_builder("ml1m", str(tmp_path / "tfds"), str(tmp_path / "manual"))
  meta = builder.info.metadata
  assert (meta["stats"]["users"], meta["stats"]["items"]) == (5, 6)
  ex = builder.as_data_source()["validation"][0]
  # each user rates movies 6, 5, …, 1 in time order; ids by first sight: movie 6 -> 0, …
  assert ex["history"].tolist() == [0, 1, 2, 3] and int(ex["target"]) == 4
  assert meta["item_text"][0] == "Movie 6 (1996). Genres: Drama, Comedy."
