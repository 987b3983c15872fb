"""Label smoothing of the SID targets, optionally along the trie (`train.label_smoothing`).

With weight `eps`, each SID position's target is `(1 - eps) * onehot(code) + eps * uniform(S)`
where the support S is either

* "level": every code of that position's level (ordinary label smoothing), or
* "siblings": the codes that continue the target's own prefix to a valid SID (its siblings in
  the trie of the SID table, the target included): the same codes the constrained beam search
  chooses among at that position. The smoothed mass stays on items that share the target's
  coarser codes, i.e. on semantically close items, and never on SIDs that cannot be decoded.

The support of every item is computed once on the host (`support_table`); a batch carries its
targets' rows as "target_dist" (`target_distributions`), and the loss reads soft targets.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SUPPORTS = ("level", "siblings")


def support_table(sid_table: np.ndarray, level_sizes: Sequence[int], support: str
                  ) -> np.ndarray:
  """Per item and SID position, the codes the smoothed target spreads over.

  Args:
    sid_table: int[N, L+1] the SID of every item (unique rows).
    level_sizes: codes per position, len L+1.
    support: "level" | "siblings" (module docstring).

  Returns:
    bool[N, L+1, Kmax], Kmax = max(level_sizes) (read-only for "level"); row i, position p
    holds the item's own code.
  """
  if support not in SUPPORTS:
    raise ValueError(f"label smoothing support: expected one of {SUPPORTS}, got {support!r}")
  sid_table = np.asarray(sid_table)
  n, positions = sid_table.shape
  if positions != len(level_sizes):
    raise ValueError(f"label smoothing: sid_table has {positions} positions, level_sizes "
                     f"{len(level_sizes)}")
  kmax = max(level_sizes)
  if support == "level":  # one mask for every item: a read-only broadcast view, no N copies
    mask = np.arange(kmax) < np.asarray(level_sizes)[:, None]  # [L+1, Kmax]
    return np.broadcast_to(mask, (n, positions, kmax))
  out = np.zeros((n, positions, kmax), bool)
  for p in range(positions):
    # Items with equal prefixes (codes 0..p-1) share one support: group them by prefix.
    group = (np.unique(sid_table[:, :p], axis=0, return_inverse=True)[1].reshape(-1) if p
             else np.zeros(n, np.int64))
    used = np.zeros((group.max() + 1, kmax), bool)
    used[group, sid_table[:, p]] = True
    out[:, p] = used[group]
  return out


def target_distributions(targets: np.ndarray, support: np.ndarray, eps: float) -> np.ndarray:
  """Smoothed targets of a batch.

  Args:
    targets: int[B, L+1] codes.
    support: bool[B, L+1, Kmax] (rows of `support_table` for the batch's target items).
    eps: smoothing weight in [0, 1).

  Returns:
    float32[B, L+1, Kmax]; each position sums to 1, with `1 - eps + eps / |S|` on the target
    code and `eps / |S|` on the other codes of S.
  """
  dist = support.astype(np.float32) * (eps / support.sum(-1, keepdims=True))
  np.put_along_axis(dist, targets[..., None],
                    np.take_along_axis(dist, targets[..., None], -1) + (1.0 - eps), -1)
  return dist
