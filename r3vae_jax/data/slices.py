"""Real-data slices for CPU sweeps and tests: Amazon Beauty restricted to its first items."""
from __future__ import annotations

import os

import numpy as np

from r3vae_jax.configs import paths
from r3vae_jax.data import splits as splits_lib
from r3vae_jax.data.splits import Splits
from r3vae_jax.data.vectors import interactions


def beauty_prefix(num_items: int, dim: int, data_dir: str = paths.DATA_DIR
                  ) -> tuple[Splits, np.ndarray]:
  """(leave-one-out splits, float32[num_items, dim] PPMI-SVD vectors of their training part):
  `data_dir/amazon_beauty/Beauty.txt` keeping items with id < num_items, users keeping >= 3."""
  path = os.path.join(data_dir, "amazon_beauty", "Beauty.txt")
  with open(path, encoding="utf-8") as f:
    sequences = [np.array(line.split()[1:], np.int32) - 1 for line in f]
  splits = splits_lib.leave_one_out(splits_lib.item_prefix(sequences, num_items))
  return splits, interactions.ppmi_svd(splits.train, num_items, dim=dim, window=5, seed=0)
