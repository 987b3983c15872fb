"""HetRec 2011 LastFM (RecBole atomic files; artist names are the item text): the paper protocol (5-core, leave-one-out, history 20, T5 6+6 d128, beam 20).

  python -m r3vae_jax.main --config=r3vae_jax/configs/lastfm.py:r3vae --workdir=/tmp/lastfm_r3vae --mode=all

The argument is `preset[+ablation...][,vector_source]`: preset rqkmeans | rqvae | r3vae | diger,
each the published row of that method on this dataset (configs/presets.py; ablations of
configs/ablations.py on top, e.g. r3vae+no_sc)
(default r3vae); vectors minilm-text (artist names) | interactions-svd (default minilm-text).
"""
from r3vae_jax.configs import default
from r3vae_jax.configs import paths


def get_config(arg=None):
  c = default.base_config()
  c.dataset = "lastfm"
  paths.apply_arg(c, arg, "r3vae", "minilm-text")
  c.data.format = "recbole"
  c.data.path = paths.data_file("lastfm", "recbole_lastfm.inter")
  c.data.item_text_path = paths.data_file("lastfm", "recbole_lastfm.item")
  c.data.first_only = True
  return c
