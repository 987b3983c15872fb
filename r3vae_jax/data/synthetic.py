"""The embedded default catalogue: deterministic items with latent topics, users that drift.

Items belong to latent topics; an item's vector is its topic centre plus noise, and its
popularity inside the topic follows a Zipf law. A user starts in a topic, and at each step
stays there or (with probability `drift`) moves to one of the topic's nearest neighbour
topics, then picks an item of the current topic by popularity. Everything follows from `seed`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from r3vae_jax.data.dataset import Interactions

_WORDS = (
    "amber", "basil", "cedar", "denim", "ember", "fern", "garnet", "harbor", "indigo", "jasmine",
    "kelp", "linen", "maple", "nickel", "onyx", "pepper", "quartz", "rosin", "sable", "thistle",
    "umber", "velvet", "willow", "yarrow", "zinc", "birch", "cobalt", "dune", "flint", "gravel",
    "hazel", "iris", "juniper", "lotus", "moss", "opal", "pine", "reed", "slate", "tide")
_NOISE = 0.35        # item noise scale relative to the unit-norm topic centre
_NEIGHBOURS = 3      # a drifting user moves to one of this many nearest topics


def _check(cfg: Any) -> None:
  if cfg.num_topics < 1 or cfg.num_items < cfg.num_topics:
    raise ValueError(f"synthetic: need 1 <= num_topics <= num_items, got num_topics="
                     f"{cfg.num_topics}, num_items={cfg.num_items}")
  if not 3 <= cfg.min_len <= cfg.max_len:
    raise ValueError(f"synthetic: need 3 <= min_len <= max_len, got {cfg.min_len}, {cfg.max_len}")
  if cfg.num_users < 1 or cfg.dim < 1:
    raise ValueError(
        f"synthetic: num_users and dim must be positive, got {cfg.num_users}, {cfg.dim}")
  if not 0.0 <= cfg.drift <= 1.0:
    raise ValueError(f"synthetic: drift must be in [0, 1], got {cfg.drift}")


def make_synthetic(cfg: Any) -> tuple[Interactions, np.ndarray]:
  """Builds the synthetic catalogue from `cfg` (config.data.synthetic).

  Args:
    cfg: fields num_items, num_users, num_topics, dim, min_len, max_len, drift,
      popularity_skew, seed.

  Returns:
    (Interactions named "synthetic", item vectors float32[num_items, dim]).
  """
  _check(cfg)
  rng = np.random.default_rng(cfg.seed)
  n, t = cfg.num_items, cfg.num_topics
  centres = rng.normal(size=(t, cfg.dim))
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  topic = rng.permutation(np.arange(n) % t)
  vectors = centres[topic] + _NOISE * rng.normal(size=(n, cfg.dim)) / np.sqrt(cfg.dim)

  members, weights = [], []
  rank_in_topic = np.zeros(n, np.int64)
  for z in range(t):
    items = rng.permutation(np.flatnonzero(topic == z))
    rank_in_topic[items] = np.arange(items.size)
    w = (np.arange(items.size) + 1.0) ** -cfg.popularity_skew
    members.append(items)
    weights.append(np.cumsum(w / w.sum()))
  sims = centres @ centres.T
  np.fill_diagonal(sims, -np.inf)
  neighbours = np.argsort(-sims, axis=1)[:, :min(_NEIGHBOURS, max(t - 1, 1))]

  sequences = []
  for _ in range(cfg.num_users):
    length = int(rng.integers(cfg.min_len, cfg.max_len + 1))
    z = int(rng.integers(t))
    seq = np.empty(length, np.int32)
    moves, picks = rng.random(length), rng.random(length)
    hops = rng.integers(0, neighbours.shape[1], length)
    for i in range(length):
      if i and t > 1 and moves[i] < cfg.drift:
        z = int(neighbours[z, hops[i]])
      seq[i] = members[z][min(int(np.searchsorted(weights[z], picks[i])), members[z].size - 1)]
    sequences.append(seq)

  titles = [f"topic {topic[i]} item {rank_in_topic[i]}" for i in range(n)]
  words = [f"{_WORDS[z % len(_WORDS)]} {_WORDS[(3 * z + 1) % len(_WORDS)]}" for z in range(t)]
  text = [f"{titles[i]}: {words[topic[i]]}" for i in range(n)]
  inter = Interactions(name="synthetic", num_items=n, sequences=sequences,
                       item_titles=titles, item_text=text)
  return inter, vectors.astype(np.float32)
