"""Where dataset configs look for local copies of the public files.

`$R3VAE_DATA_DIR` if set, else `../shared/data` beside the repository (the layout of the
project's CI and dev machines). Point it at your own copies, or override `--config.data.path`.
"""
import os

DATA_DIR = os.environ.get(
    "R3VAE_DATA_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data"))


def data_file(*parts: str) -> str:
  return os.path.normpath(os.path.join(DATA_DIR, *parts))


def parse_arg(arg: str | None, default_tokenizer: str, default_vectors: str) -> tuple[str, str]:
  """`"r3vae"` or `"r3vae,interactions-svd"` -> (tokenizer, vector source)."""
  parts = [p for p in (arg or "").split(",") if p]
  if len(parts) > 2:
    raise ValueError(f"config argument {arg!r}: expected 'tokenizer[,vector_source]'")
  tokenizer = parts[0] if parts else default_tokenizer
  vectors = parts[1] if len(parts) > 1 else default_vectors
  return tokenizer, vectors
