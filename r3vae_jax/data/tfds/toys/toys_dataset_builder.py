"""Amazon 2014 Toys_and_Games 5-core (19,412 users, 11,924 items, 167,597 interactions).

Sequences: ICLRec's Toys_and_Games.txt. No item text is available under an open licence: use
the interaction-learned vectors (vectors.source=interactions-svd) or your own .npy.
"""
from r3vae_jax.data import table
from r3vae_jax.data.readers import iclrec
from r3vae_jax.data.tfds import common


class Builder(common.SequenceBuilder):
  """toys: leave-one-out splits of the 5-core sequences."""

  SUBDIR = "amazon_toys"
  DESCRIPTION = __doc__
  CITATION = "He & McAuley, WWW 2016; McAuley et al., SIGIR 2015."
  RESOURCES = {
      "sequences": common.Resource(common.ICLREC_DATA + "Toys_and_Games.txt",
                                   ("Toys_and_Games.txt",)),
  }

  def read(self, paths):
    log = iclrec.read_user_sequences(paths["sequences"])
    return table.to_interactions("toys", log, None, source=paths["sequences"])
