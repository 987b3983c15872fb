"""Amazon 2014 Sports_and_Outdoors (35,598 users, 18,357 items, 296,337 interactions): the paper protocol (5-core, leave-one-out, history 20, T5 6+6 d128, beam 20).

  python -m r3vae_jax.main --config=r3vae_jax/configs/sports.py:r3vae --workdir=/tmp/sports_r3vae --mode=all

The argument is `tokenizer[+variant][,vector_source]`: tokenizer rqkmeans | rqvae | r3vae | diger
(variant: an ablation of configs/variants.py, e.g. r3vae+no_sc)
(default r3vae); vectors interactions-svd (training interactions only) | npy (default interactions-svd).
Item text is not available offline: the default vectors are learned from training
interactions only (labelled interactions-svd in every result). With meta_Sports_and_Outdoors
text encoded elsewhere, use `,npy` and --config.vectors.path.
"""
from r3vae_jax.configs import default
from r3vae_jax.configs import paths


def get_config(arg=None):
  c = default.base_config()
  # Recommender epochs (the cosine decay spans them): the rows that reached the paper's R3-VAE
  # numbers ran 30 (results/README.md, session 5).
  c.train.epochs = 30
  c.dataset = "sports"
  paths.apply_arg(c, arg, "r3vae", "interactions-svd")
  c.data.format = "iclrec"
  c.data.path = paths.data_file("amazon_sports", "Sports_and_Outdoors.txt")
  c.data.item_map_path = paths.data_file("amazon_sports", "p5_datamaps.json")
  return c
