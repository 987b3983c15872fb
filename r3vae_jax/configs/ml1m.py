"""MovieLens-1M (ratings.dat, movies.dat; titles and genres are the item text): the paper protocol (5-core, leave-one-out, history 20, T5 6+6 d128, beam 20).

  python -m r3vae_jax.main --config=r3vae_jax/configs/ml1m.py:r3vae --workdir=/tmp/ml1m_r3vae --mode=all

The argument is `preset[+ablation...][,vector_source]`: preset rqkmeans | rqvae | r3vae | diger,
each the published row of that method on this dataset (configs/presets.py; ablations of
configs/ablations.py on top, e.g. r3vae+no_sc)
(default r3vae); vectors minilm-text (title, genres) | interactions-svd (default minilm-text).
Its licence forbids redistribution: download ml-1m.zip from GroupLens, unzip, and pass
--config.data.path=/path/to/ml-1m (default $R3VAE_DATA_DIR/ml-1m).
"""
from r3vae_jax.configs import default
from r3vae_jax.configs import paths


def get_config(arg=None):
  c = default.base_config()
  c.dataset = "ml1m"
  paths.apply_arg(c, arg, "r3vae", "minilm-text")
  c.data.format = "ml1m"
  c.data.path = paths.data_file("ml-1m")
  return c
