"""Amazon 2014 Beauty 5-core (22,363 users, 12,101 items, 198,502 interactions) + item text.

Sequences: ICLRec's Beauty.txt. Item text (title, brand, categories): RecBole's Amazon_Beauty.item
keyed by ASIN, joined through P5's datamaps.json (Beauty.txt id -> ASIN).
"""
from r3vae_jax.data import table
from r3vae_jax.data.readers import iclrec, p5, recbole
from r3vae_jax.data.tfds import common

TEXT_FIELDS = ("title", "brand", "categories")


class Builder(common.SequenceBuilder):
  """Beauty: leave-one-out splits of the 5-core sequences, item text in metadata."""

  SUBDIR = "amazon_beauty"
  DESCRIPTION = __doc__
  CITATION = "He & McAuley, WWW 2016; McAuley et al., SIGIR 2015."
  RESOURCES = {
      "sequences": common.Resource(common.ICLREC_DATA + "Beauty.txt", ("Beauty.txt",)),
      "datamaps": common.Resource(
          "https://raw.githubusercontent.com/Wenyueh/LLM-RecSys-ID/"
          "377977a29e68e18842ffa06e96e8be05825dd524/data/beauty/datamaps.json",
          ("datamaps.json", "p5_datamaps.json")),
      "items": common.Resource(
          "https://raw.githubusercontent.com/parepic/RecBole_SAE/"
          "cebc1fa9eed33dcf9af27b7d3fe4b4a2121ad0e1/dataset/Amazon_Beauty/Amazon_Beauty.item",
          ("Amazon_Beauty.item", "recbole_sae_Amazon_Beauty.item")),
  }
  OPTIONAL = ("datamaps", "items")

  def read(self, paths):
    log = iclrec.read_user_sequences(paths["sequences"])
    info = None
    if paths["datamaps"] and paths["items"]:
      log = p5.apply_datamaps(log, paths["datamaps"], paths["sequences"])
      info = recbole.read_item_text(paths["items"], TEXT_FIELDS)
    return table.to_interactions("beauty", log, info, source=paths["sequences"])
