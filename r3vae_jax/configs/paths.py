"""Where dataset configs look for local copies of the public files.

`$R3VAE_DATA_DIR` if set, else `../shared/data` beside the repository (the layout of the
project's CI and dev machines). Point it at your own copies, or override `--config.data.path`.
"""
import os

from r3vae_jax.configs import variants

DATA_DIR = os.environ.get(
    "R3VAE_DATA_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data"))


def data_file(*parts: str) -> str:
  return os.path.normpath(os.path.join(DATA_DIR, *parts))


def apply_arg(config, arg: str | None, default_tokenizer: str, default_vectors: str) -> None:
  """Applies the config argument `tokenizer[+variant][,vector_source]` (e.g. `"r3vae"`,
  `"r3vae,interactions-svd"`, `"r3vae+no_sc"`): sets config.tokenizer, config.vectors.source
  and the named variant's fields (`variants.py`)."""
  parts = [p for p in (arg or "").split(",") if p]
  if len(parts) > 2:
    raise ValueError(f"config argument {arg!r}: expected 'tokenizer[+variant][,vector_source]'")
  tokenizer, _, variant = (parts[0] if parts else default_tokenizer).partition("+")
  config.tokenizer = tokenizer
  config.vectors.source = parts[1] if len(parts) > 1 else default_vectors
  if variant:
    variants.apply(config, tokenizer, variant)
