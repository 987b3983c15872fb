"""Item vectors learned from training interactions only: windowed co-occurrence -> PPMI -> SVD.

Two items co-occur when they sit within `window` positions of each other in a user's training
sequence (Splits.train: validation and test targets never enter). The positive pointwise mutual
information matrix (Levy & Goldberg 2014, with context-distribution smoothing 0.75) is factorised
by a seeded randomised SVD; an item's vector is its row of U·sqrt(S), L2-normalised. Items that
never co-occur in training (rare) get a small seeded random unit vector, and are counted in the log.
"""
from __future__ import annotations

from typing import Sequence

from absl import logging
import numpy as np
from scipy import sparse

LABEL = "interactions-svd"
_SMOOTHING = 0.75
_OVERSAMPLE = 10
_POWER_ITERS = 3


def cooccurrence(train: Sequence[np.ndarray], num_items: int, window: int) -> sparse.csr_matrix:
  """Symmetric counts float64[N, N] of item pairs within `window` positions (no self-pairs)."""
  if window < 1:
    raise ValueError(f"cooccurrence: window must be >= 1, got {window}")
  rows, cols = [], []
  for seq in train:
    seq = np.asarray(seq, np.int64)
    for d in range(1, min(window, len(seq) - 1) + 1):
      rows.append(seq[:-d])
      cols.append(seq[d:])
  if not rows:
    return sparse.csr_matrix((num_items, num_items))
  r, c = np.concatenate(rows), np.concatenate(cols)
  keep = r != c
  r, c = r[keep], c[keep]
  m = sparse.coo_matrix((np.ones(r.size), (r, c)), shape=(num_items, num_items)).tocsr()
  return m + m.T


def ppmi(counts: sparse.csr_matrix) -> sparse.csr_matrix:
  """max(0, log P(i,j) / (P(i) P_0.75(j))) on the non-zeros of `counts` [N, N]."""
  total = counts.sum()
  if total == 0:
    return counts.copy()
  row = np.asarray(counts.sum(1)).ravel()
  col = np.asarray(counts.sum(0)).ravel() ** _SMOOTHING
  coo = counts.tocoo()
  pmi = np.log(coo.data * col.sum() / (row[coo.row] * col[coo.col]))
  keep = pmi > 0
  return sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape)


def _orthonormalize(a: np.ndarray) -> np.ndarray:
  """Orthonormal basis [N, r] of the columns of a [N, k] via the eigenvectors of its Gram matrix."""
  w, v = np.linalg.eigh(a.T @ a)
  keep = w > w.max() * 1e-10
  return a @ (v[:, keep] / np.sqrt(w[keep]))


def randomized_svd(m: sparse.csr_matrix, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Top-`dim` left singular vectors [N, <=dim] and values [<=dim] (Halko et al., seeded).

  Only products with the sparse matrix and eigen-decompositions of small [k, k] matrices
  (k = dim + 10) are computed, so memory stays O(N k).
  """
  rng = np.random.default_rng(seed)
  k = min(dim + _OVERSAMPLE, min(m.shape))
  q = _orthonormalize(m @ rng.normal(size=(m.shape[1], k)))
  for _ in range(_POWER_ITERS):
    q = _orthonormalize(m @ _orthonormalize(m.T @ q))
  b = (m.T @ q).T                      # [r, N] = Q^T M
  w, u_small = np.linalg.eigh(b @ b.T)  # B B^T = U S^2 U^T
  top = np.argsort(w)[::-1][:dim]
  return q @ u_small[:, top], np.sqrt(np.maximum(w[top], 0.0))


def ppmi_svd(train: Sequence[np.ndarray], num_items: int, dim: int = 128, window: int = 5,
             seed: int = 0) -> np.ndarray:
  """float32[num_items, dim] unit vectors from training sequences (see module docstring)."""
  if dim < 1 or dim > num_items:
    raise ValueError(f"ppmi_svd: need 1 <= dim <= num_items ({num_items}), got {dim}")
  m = ppmi(cooccurrence(train, num_items, window))
  u, s = randomized_svd(m, dim, seed)
  vecs = u * np.sqrt(s)[None]
  if vecs.shape[1] < dim:
    vecs = np.pad(vecs, ((0, 0), (0, dim - vecs.shape[1])))
  norms = np.linalg.norm(vecs, axis=1)
  empty = norms < 1e-8
  if empty.any():
    logging.warning("%s: %d of %d items never co-occur in training; they get random vectors",
                    LABEL, int(empty.sum()), num_items)
    vecs[empty] = np.random.default_rng(seed + 1).normal(size=(int(empty.sum()), dim))
    norms = np.linalg.norm(vecs, axis=1)
  return (vecs / norms[:, None]).astype(np.float32)
