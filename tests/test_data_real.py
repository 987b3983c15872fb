"""Standard statistics of the real datasets in ../shared/data, through pipeline.prepare."""
import numpy as np
import pytest

from r3vae_jax.configs.default import base_config
from r3vae_jax.data import dataset, pipeline

STANDARD = {  # spec.md: users, items, interactions
    "beauty": ("amazon_beauty/Beauty.txt", 22363, 12101, 198502),
    "sports": ("amazon_sports/Sports_and_Outdoors.txt", 35598, 18357, 296337),
    "toys": ("amazon_toys/Toys_and_Games.txt", 19412, 11924, 167597),
}


@pytest.mark.parametrize("name", sorted(STANDARD))
def test_iclrec_standard_statistics(shared_data, name):
  path, users, items, interactions = STANDARD[name]
  config = base_config()
  config.dataset = name
  config.data.format = "iclrec"
  config.data.path = str(shared_data / path)
  st = dataset.stats(pipeline.prepare(config))
  assert (st["users"], st["items"], st["interactions"]) == (users, items, interactions)


def test_beauty_text_joined_by_asin(shared_data):
  config = base_config()
  config.dataset = "beauty"
  config.data.format = "iclrec"
  config.data.path = str(shared_data / "amazon_beauty/Beauty.txt")
  config.data.item_map_path = str(shared_data / "amazon_beauty/p5_datamaps.json")
  config.data.item_text_path = str(shared_data / "amazon_beauty/recbole_sae_Amazon_Beauty.item")
  inter = pipeline.prepare(config)
  assert inter.num_items == 12101 and len(inter.item_text) == 12101
  # Beauty.txt id 1 is ASIN B004756YJA (p5 datamaps); its RecBole row gives the text
  assert "&amp;" not in " ".join(inter.item_text)
  assert all("Categories: Beauty" in t for t in inter.item_text[:50])
  assert sum(t.startswith("B0") for t in inter.item_text) == 0   # every item has real text


def test_p5_same_as_iclrec(shared_data):
  config = base_config()
  config.data.format = "p5"
  config.data.path = str(shared_data / "amazon_beauty/p5_sequential_data.txt")
  config.data.item_map_path = str(shared_data / "amazon_beauty/p5_datamaps.json")
  p5 = pipeline.prepare(config)
  config.data.format = "iclrec"
  config.data.path = str(shared_data / "amazon_beauty/Beauty.txt")
  ic = pipeline.prepare(config)
  assert p5.num_items == ic.num_items == 12101
  assert all(np.array_equal(a, b) for a, b in zip(p5.sequences, ic.sequences))


def test_recbole_lastfm(shared_data):
  config = base_config()
  config.dataset = "lastfm"
  config.data.format = "recbole"
  config.data.path = str(shared_data / "lastfm/recbole_lastfm.inter")
  config.data.item_text_path = str(shared_data / "lastfm/recbole_lastfm.item")
  inter = pipeline.prepare(config)
  st = dataset.stats(inter)
  assert (st["users"], st["items"], st["interactions"]) == (911, 1223, 19187)
  assert min(len(s) for s in inter.sequences) >= 5
  assert inter.item_text[0] and not inter.item_text[0].isdigit()
  config.data.first_only = True   # first tagging of each (user, artist) only
  st = dataset.stats(pipeline.prepare(config))
  assert (st["users"], st["items"], st["interactions"]) == (769, 728, 10285)
