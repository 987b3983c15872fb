"""MovieLens-1M (6,040 users, 3,706 rated movies, 1,000,209 ratings): every rating is an event,
ordered by time (ties in file order); item text "Title (year). Genres: A, B."; then 5-core
(users all have >= 20 ratings; movies rated < 5 times go: SASRec reports 3,416 items left).
The GroupLens licence forbids redistribution: the builder downloads the zip from GroupLens.
"""
from r3vae_jax.data import table
from r3vae_jax.data.readers import movielens
from r3vae_jax.data.tfds import common

MIN_CORE = 5


class Builder(common.SequenceBuilder):
  """ml1m: leave-one-out splits of chronological rating sequences."""

  SUBDIR = "ml-1m"
  DESCRIPTION = __doc__
  CITATION = "Harper & Konstan, ACM TiiS 2015 (GroupLens MovieLens)."
  RESOURCES = {
      "ratings": common.Resource("https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                                 ("ml-1m/ratings.dat", "ratings.dat"), extract=True),
  }

  def read(self, paths):
    log, info = movielens.read_ml1m(paths["ratings"].rsplit("/", 1)[0])
    log = table.first_seen_ids(table.k_core(log, MIN_CORE))
    return table.to_interactions("ml1m", log, info, source=paths["ratings"])
