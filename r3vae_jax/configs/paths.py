"""Where dataset configs look for local copies of the public files, and the config argument.

`$R3VAE_DATA_DIR` if set, else `../shared/data` beside the repository (the layout of the
project's CI and dev machines). Point it at your own copies, or override `--config.data.path`.
"""
import os

from r3vae_jax.baselines import config as baselines
from r3vae_jax.configs import ablations, presets

DATA_DIR = os.environ.get(
    "R3VAE_DATA_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data"))


def data_file(*parts: str) -> str:
  return os.path.normpath(os.path.join(DATA_DIR, *parts))


def apply_arg(config, arg: str | None, default_preset: str, default_vectors: str) -> None:
  """Applies the config argument `preset[+ablation...][,vector_source]` (e.g. `"r3vae"`,
  `"r3vae,interactions-svd"`, `"r3vae+no_sc"`): the preset of `config.dataset`
  (`presets.py`, which sets config.tokenizer), config.vectors.source and the named ablations'
  fields (`ablations.py`). A baseline's name instead (popularity | markov | sasrec) sets
  `config.method` and `config.sasrec` (`baselines/config.py`)."""
  parts = [p for p in (arg or "").split(",") if p]
  if len(parts) > 2:
    raise ValueError(f"config argument {arg!r}: expected 'preset[+ablation...][,vector_source]'")
  preset, _, variant = (parts[0] if parts else default_preset).partition("+")
  if preset in baselines.METHODS and not variant:  # a baseline row (r3vae_jax/baselines)
    baselines.apply(config, preset)
    return
  presets.apply(config, config.dataset, preset)
  config.vectors.source = parts[1] if len(parts) > 1 else default_vectors
  if variant:
    ablations.apply(config, preset, variant)
