"""Bad config file (reliability corpus): an int field holding a string (a rebuilt section)."""
import ml_collections

from r3vae_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.train = ml_collections.ConfigDict({**c.train.to_dict(), "batch_size": "64"})
  return c
