"""Real-data slices for CPU sweeps and tests: an Amazon 5-core file restricted to its first items."""
from __future__ import annotations

import os

import numpy as np

from r3vae_jax.configs import paths
from r3vae_jax.data import splits as splits_lib
from r3vae_jax.data.splits import Splits
from r3vae_jax.data.vectors import interactions


AMAZON_FILES = {"beauty": ("amazon_beauty", "Beauty.txt"),
                "sports": ("amazon_sports", "Sports_and_Outdoors.txt"),
                "toys": ("amazon_toys", "Toys_and_Games.txt")}


def amazon_prefix(dataset: str, num_items: int, dim: int, data_dir: str = paths.DATA_DIR
                  ) -> tuple[Splits, np.ndarray]:
  """(leave-one-out splits, float32[num_items, dim] PPMI-SVD vectors of their training part):
  the 5-core file of `dataset` (beauty | sports | toys) under `data_dir`, keeping items with
  id < num_items and users keeping >= 3 of them."""
  if dataset not in AMAZON_FILES:
    raise ValueError(f"amazon_prefix: dataset must be one of {sorted(AMAZON_FILES)}, got "
                     f"{dataset!r}")
  path = os.path.join(data_dir, *AMAZON_FILES[dataset])
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: the {dataset} 5-core file is missing (see "
                            f"../shared/data/README.md)")
  with open(path, encoding="utf-8") as f:
    sequences = [np.array(line.split()[1:], np.int32) - 1 for line in f]
  splits = splits_lib.leave_one_out(splits_lib.item_prefix(sequences, num_items))
  return splits, interactions.ppmi_svd(splits.train, num_items, dim=dim, window=5, seed=0)


def beauty_prefix(num_items: int, dim: int, data_dir: str = paths.DATA_DIR
                  ) -> tuple[Splits, np.ndarray]:
  """`amazon_prefix("beauty", ...)`: Beauty's first items (CPU sweeps and tests)."""
  return amazon_prefix("beauty", num_items, dim, data_dir)
