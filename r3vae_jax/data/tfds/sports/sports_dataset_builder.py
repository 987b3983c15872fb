"""Amazon 2014 Sports_and_Outdoors 5-core (35,598 users, 18,357 items, 296,337 interactions).

Sequences: ICLRec's Sports_and_Outdoors.txt. No item text is available under an open licence:
use the interaction-learned vectors (vectors.source=interactions-svd) or your own .npy.
"""
from r3vae_jax.data import table
from r3vae_jax.data.readers import iclrec
from r3vae_jax.data.tfds import common


class Builder(common.SequenceBuilder):
  """sports: leave-one-out splits of the 5-core sequences."""

  SUBDIR = "amazon_sports"
  DESCRIPTION = __doc__
  CITATION = "He & McAuley, WWW 2016; McAuley et al., SIGIR 2015."
  RESOURCES = {
      "sequences": common.Resource(common.ICLREC_DATA + "Sports_and_Outdoors.txt",
                                   ("Sports_and_Outdoors.txt",)),
  }

  def read(self, paths):
    log = iclrec.read_user_sequences(paths["sequences"])
    return table.to_interactions("sports", log, None, source=paths["sequences"])
