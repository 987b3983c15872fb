"""HetRec-2011 LastFM: users' artist-tagging events in time order, 5-core; artist names as text.

Input: RecBole's lastfm.inter (user, artist, tag id in the `weight` column, timestamp) and
lastfm.item (artist names), or the HetRec files (user_taggedartists-timestamps.dat,
artists.dat). Rows of one tagging event (same user, artist, time) count once; then users and
artists with fewer than 5 events are removed until stable. From the RecBole files this gives
911 users, 1,223 artists, 19,187 interactions.
"""
from r3vae_jax.data import table
from r3vae_jax.data.readers import hetrec, recbole
from r3vae_jax.data.tfds import common

MIN_CORE = 5
_RECBOLE = ("https://raw.githubusercontent.com/parepic/RecBole_SAE/"
            "a0cc140c6958c7273570e392e0e6b94362b9d807/dataset/lastfm/")


class Builder(common.SequenceBuilder):
  """lastfm: leave-one-out splits of chronological 5-core tagging sequences."""

  SUBDIR = "lastfm"
  DESCRIPTION = __doc__
  CITATION = "Cantador et al., HetRec 2011 (GroupLens, Last.fm)."
  RESOURCES = {
      "inter": common.Resource(_RECBOLE + "lastfm.inter", ("lastfm.inter", "recbole_lastfm.inter",
                                                            hetrec.TAGS)),
      "items": common.Resource(_RECBOLE + "lastfm.item", ("lastfm.item", "recbole_lastfm.item",
                                                           "artists.dat")),
  }

  def read(self, paths):
    if paths["inter"].endswith(".dat"):
      log, info = hetrec.read_hetrec(paths["inter"].rsplit("/", 1)[0])
    else:
      log = recbole.read_inter(paths["inter"])
      info = recbole.read_item_text(paths["items"], ("name",))
    log = table.first_seen_ids(table.k_core(log, MIN_CORE))
    return table.to_interactions("lastfm", log, info, source=paths["inter"])
