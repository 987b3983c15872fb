"""Item-item graph for RPG's decoding, built from the SIDs and the trained token embeddings.

Two items are as similar as their codes, digit by digit: with e_j(c) the unit-normalised token
row of code c at digit j, sim(a, b) = mean_j (1 + <e_j(a_j), e_j(b_j)>) / 2, in [0, 1] (1 for
identical SIDs). Each item's out-edges are its `num_edges` most similar items (itself first, as
sim(a, a) = 1 is the maximum). Rows are computed in blocks of `block` items, so memory is
[block, N], never [N, N].
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def code_similarity(token_table: jax.Array) -> jax.Array:
  """token_table float[m, K, d] -> float32[m, K, K] (1 + cosine) / 2 between codes of a digit."""
  unit = token_table * jax.lax.rsqrt(jnp.sum(token_table ** 2, -1, keepdims=True) + 1e-12)
  return 0.5 * (1.0 + jnp.einsum("mkd,mld->mkl", unit, unit, precision="highest"))


def similarity_rows(code_sim: jax.Array, rows: jax.Array, sids: jax.Array) -> jax.Array:
  """sim(rows[i], every item): code_sim [m, K, K], rows int[b, m], sids int[N, m] -> [b, N]."""
  def digit(acc, j):
    table = code_sim[j][rows[:, j]]                     # [b, K]
    return acc + jnp.take(table, sids[:, j], axis=1), None

  m = sids.shape[1]
  total, _ = jax.lax.scan(digit, jnp.zeros((rows.shape[0], sids.shape[0]), jnp.float32),
                          jnp.arange(m))
  return total / m


@functools.partial(jax.jit, static_argnames=("num_edges", "block"))
def build_graph(token_table: jax.Array, sids: jax.Array, num_edges: int, block: int = 1024
                ) -> jax.Array:
  """Adjacency lists int32[N, num_edges]: each item's most similar items, best first.

  Args:
    token_table: float[m, K, d] token embeddings per digit.
    sids: int[N, m] every item's codes.
    num_edges: out-degree E (<= N).
    block: items per row block.
  """
  n = sids.shape[0]
  if not 1 <= num_edges <= n:
    raise ValueError(f"rpg.graph: num_edges must be in [1, {n}], got {num_edges}")
  code_sim = code_similarity(token_table)
  pad = (-n) % block
  rows = jnp.concatenate([sids, jnp.zeros((pad, sids.shape[1]), sids.dtype)])

  def one(r):
    return jax.lax.top_k(similarity_rows(code_sim, r, sids), num_edges)[1].astype(jnp.int32)

  out = jax.lax.map(one, rows.reshape(-1, block, sids.shape[1]))
  return out.reshape(-1, num_edges)[:n]


def brute_force_graph(token_table: np.ndarray, sids: np.ndarray, num_edges: int) -> np.ndarray:
  """Reference: the full [N, N] similarity in numpy, then a stable sort per row."""
  t = np.asarray(token_table, np.float64)
  unit = t / np.linalg.norm(t, axis=-1, keepdims=True)
  n, m = sids.shape
  sim = np.zeros((n, n))
  for j in range(m):
    e = unit[j][sids[:, j]]
    sim += 0.5 * (1.0 + e @ e.T)
  return np.argsort(-sim / m, axis=1, kind="stable")[:, :num_edges]
