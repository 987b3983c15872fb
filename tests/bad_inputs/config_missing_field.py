"""Bad config file (reliability corpus): written before train.nonfinite existed."""
from r3vae_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  del c.train["nonfinite"]
  return c
