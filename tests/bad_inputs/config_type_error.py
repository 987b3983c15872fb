"""Bad config file (reliability corpus): assigns a string to an int field."""
from r3vae_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.train.batch_size = "64"
  return c
