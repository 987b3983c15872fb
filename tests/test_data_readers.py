"""Every reader on small upstream-format excerpts written here.

Amazon raw (reviews + meta), ML-1M, HetRec, RecBole, P5.
"""
import gzip
import json

import numpy as np

from r3vae_jax.configs.default import base_config
from r3vae_jax.data import dataset, pipeline, table, text
from r3vae_jax.data.readers import recbole


def _config(fmt, path, **data):
  config = base_config()
  config.dataset = "excerpt"
  config.data.format = fmt
  config.data.path = str(path)
  config.data.update(data)
  return config


def _write_gz(path, lines):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def _amazon_excerpt(tmp_path):
  rows = [("u1", "a", 3), ("u1", "b", 1), ("u2", "a", 5), ("u1", "c", 2), ("u2", "b", 5),
          ("u3", "c", 1), ("u3", "d", 2)]
  reviews = [json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 5.0,
                         "reviewText": "ok"}) for u, i, t in rows]
  _write_gz(tmp_path / "reviews_Beauty_5.json.gz", reviews)
  meta = [
      "{'asin': 'a', 'title': 'Alpha &amp; Co\\'s cream', 'brand': 'AB', "
      "'categories': [['Beauty', 'Skin Care'], ['Beauty', 'Face']], 'description': 'Soft.'}",
      json.dumps({"asin": "b", "title": "Beta gloss", "categories": [["Beauty", "Makeup"]]}),
      "{'asin': 'z', 'title': 'never reviewed'}",
  ]
  _write_gz(tmp_path / "meta_Beauty.json.gz", meta)
  return tmp_path / "reviews_Beauty_5.json.gz", tmp_path / "meta_Beauty.json.gz"


def test_amazon_raw_kcore_order_and_text(tmp_path):
  reviews, meta = _amazon_excerpt(tmp_path)
  config = _config("amazon_raw", reviews, item_text_path=str(meta), min_core=2)
  inter = pipeline.prepare(config)
  # k=2: d (1 event) goes, then u3 (1 event left), then c (1 event left): stable after 3 rounds.
  # u1 chronological b(1) a(3); u2's tie at t=5 keeps line order a, b. Ids by first sight: b=0, a=1.
  assert [s.tolist() for s in inter.sequences] == [[0, 1], [1, 0]]
  assert inter.item_titles == ["Beta gloss", "Alpha & Co's cream"]
  assert inter.item_text[1] == "Alpha & Co's cream. Brand: AB. Categories: Beauty, Skin Care, Face."
  config.data.text_fields = ("title", "brand", "categories", "description")
  assert pipeline.prepare(config).item_text[1].endswith("Description: Soft.")


def test_amazon_raw_without_kcore_keeps_all(tmp_path):
  reviews, _ = _amazon_excerpt(tmp_path)
  st = dataset.stats(pipeline.prepare(_config("amazon_raw", reviews, min_core=0)))
  assert (st["users"], st["items"], st["interactions"]) == (3, 4, 7)


def test_k_core_reaches_fixed_point():
  rng = np.random.default_rng(0)
  log = table.RawLog([str(u) for u in range(60)], [str(i) for i in range(40)],
                     [rng.integers(0, 40, rng.integers(1, 9)).astype(np.int32) for _ in range(60)])
  out = table.k_core(log, 4)
  counts = np.bincount(np.concatenate(out.sequences))
  assert min(len(s) for s in out.sequences) >= 4 and counts.min() >= 4
  assert len(out.item_keys) == counts.size and table.k_core(out, 4).sequences[0].tolist() == \
      out.sequences[0].tolist()


def test_ml1m_excerpt(tmp_path):
  (tmp_path / "movies.dat").write_bytes(
      "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Amélie (2001)::Comedy|Romance\n"
      "3::Heat (1995)::Action|Crime|Thriller\n".encode("latin-1"))
  (tmp_path / "ratings.dat").write_text(
      "1::2::5::978300760\n1::1::3::978300700\n2::3::4::978300800\n2::1::5::978300800\n"
      "1::3::4::978300900\n", encoding="latin-1")
  inter = pipeline.prepare(_config("ml1m", tmp_path, min_core=0))
  # user 1: 1(700) 2(760) 3(900); user 2: tie at 800 keeps line order 3, 1. Ids by first sight.
  assert [s.tolist() for s in inter.sequences] == [[0, 1, 2], [2, 0]]
  assert inter.item_titles[1] == "Amélie (2001)"
  assert inter.item_text[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."


def _hetrec_excerpt(tmp_path, with_tags=True):
  (tmp_path / "artists.dat").write_text(
      "id\tname\turl\tpictureURL\n1\tMALICE MIZER\tu\tp\n2\tDiary of Dreams\tu\tp\n"
      "3\tCarpathian Forest\tu\tp\n", encoding="utf-8")
  (tmp_path / "user_artists.dat").write_text(
      "userID\tartistID\tweight\n2\t3\t100\n2\t1\t50\n5\t2\t7\n5\t3\t1\n", encoding="utf-8")
  if with_tags:
    (tmp_path / "user_taggedartists-timestamps.dat").write_text(
        "userID\tartistID\ttagID\ttimestamp\n2\t1\t13\t300\n2\t1\t15\t300\n2\t3\t13\t100\n"
        "5\t2\t7\t50\n5\t3\t7\t60\n5\t2\t9\t70\n", encoding="utf-8")


def test_hetrec_tagged_timestamps(tmp_path):
  _hetrec_excerpt(tmp_path)
  inter = pipeline.prepare(_config("hetrec", tmp_path, min_core=0))
  # user 2: artist 3 (t=100), artist 1 (t=300, two tag rows = one event); user 5: 2, 3, 2
  assert [s.tolist() for s in inter.sequences] == [[0, 1], [2, 0, 2]]
  assert inter.item_titles == ["Carpathian Forest", "MALICE MIZER", "Diary of Dreams"]
  config = _config("hetrec", tmp_path, min_core=0, first_only=True)
  assert [s.tolist() for s in pipeline.prepare(config).sequences] == [[0, 1], [2, 0]]


def test_hetrec_without_timestamps_uses_file_order(tmp_path):
  _hetrec_excerpt(tmp_path, with_tags=False)
  inter = pipeline.prepare(_config("hetrec", tmp_path, min_core=0))
  assert [s.tolist() for s in inter.sequences] == [[0, 1], [2, 0]]


def test_recbole_quoted_newline_and_token_seq(tmp_path):
  item = tmp_path / "x.item"
  item.write_text('item_id:token\ttitle:token\tcategories:token_seq\tbrand:token\n'
                  'A1\t"Cream \nVanilla"\t"\'Beauty\', ""Women\'s""\"\tOrganix\n'
                  'A2\tGel &amp; Co\t\'Beauty\', \'Hair\'\t\n', encoding="utf-8")
  info = recbole.read_item_text(str(item), ("title", "brand", "categories"))
  assert info["A1"].text == "Cream Vanilla. Brand: Organix. Categories: Beauty, Women's."
  assert info["A2"] == table.ItemInfo("Gel & Co", "Gel & Co. Categories: Beauty, Hair.")
  inter = tmp_path / "x.inter"
  inter.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                   "u\tA2\t5\t20\nu\tA1\t5\t10\nv\tA1\t4\t1\nv\tA1\t4\t1\nv\tA2\t3\t2\n",
                   encoding="utf-8")
  prepared = pipeline.prepare(_config("recbole", inter, item_text_path=str(item), min_core=0))
  assert [s.tolist() for s in prepared.sequences] == [[0, 1], [0, 1]]
  assert prepared.item_titles == ["Cream Vanilla", "Gel & Co"]


def test_p5_excerpt(tmp_path):
  (tmp_path / "sequential_data.txt").write_text("1 2 1 3\n2 3 2\n", encoding="utf-8")
  (tmp_path / "datamaps.json").write_text(json.dumps({
      "user2id": {"UA": "1", "UB": "2"}, "id2user": {"1": "UA", "2": "UB"},
      "item2id": {"X": "1", "Y": "2", "Z": "3"}, "id2item": {"1": "X", "2": "Y", "3": "Z"}}))
  (tmp_path / "items.item").write_text("item_id:token\ttitle:token\nX\tex\nY\twhy\nZ\tzed\n")
  config = _config("p5", tmp_path / "sequential_data.txt", min_core=0,
                   item_map_path=str(tmp_path / "datamaps.json"),
                   item_text_path=str(tmp_path / "items.item"))
  inter = pipeline.prepare(config)
  assert [s.tolist() for s in inter.sequences] == [[1, 0, 2], [2, 1]]
  assert inter.item_titles == ["ex", "why", "zed"]


def test_text_compose_and_clean():
  assert text.clean("a &amp;\n b\t c") == "a & b c"
  title, body = text.compose({"name": "X", "brand": "", "categories": [["a", "b"], ["a"]]},
                             ("title", "name", "brand", "categories"))
  assert (title, body) == ("X", "X. Categories: a, b.")
  assert text.parse_token_seq("'Beauty', \"Men's\"") == ["Beauty", "Men's"]
