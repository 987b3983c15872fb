"""RPG retrieval: score items from per-digit code log-probabilities.

An item's score is the mean over its m digits of log p_j(code_j) (`item_scores`). Two ways to
rank:

- `exact_top_k`: scores the whole catalogue, `[B, N]` (the reference).
- `graph_top_k`: RPG's graph-constrained decoding. `num_beams` start items are drawn at random;
  each step gathers the out-neighbours of the current beams in the item graph (`graph.py`),
  scores them, drops repeats (and excluded items), and keeps the best `num_beams`. Only
  `steps * num_beams * num_edges` items are scored per user. Every item is its own first
  neighbour, so a beam survives until something better is found.

Both take `exclude int[B, S]` (-1 padded): items never returned (the user's seen items under the
seen-removed protocol), and return `(ids int32[B, k], scores float32[B, k])` best first, id -1
with score -inf where fewer than k items are left.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def item_scores(log_probs: jax.Array, sids: jax.Array) -> jax.Array:
  """log_probs float[B, m, K], sids int[..., m] shared by all users -> float32[B, ...]."""
  m = log_probs.shape[1]
  flat = sids.reshape(-1, m)

  def digit(acc, j):
    return acc + jnp.take(log_probs[:, j], flat[:, j], axis=1), None

  total, _ = jax.lax.scan(digit, jnp.zeros((log_probs.shape[0], flat.shape[0]), jnp.float32),
                          jnp.arange(m))
  return (total / m).reshape(log_probs.shape[:1] + sids.shape[:-1])


def candidate_scores(log_probs: jax.Array, sids: jax.Array, candidates: jax.Array
                     ) -> jax.Array:
  """Per-user candidates: log_probs [B, m, K], sids [N, m], candidates int[B, C] -> [B, C]."""
  codes = jnp.take(sids, candidates, axis=0)                       # [B, C, m]
  picked = jnp.take_along_axis(log_probs[:, None], codes[..., None], axis=-1)[..., 0]
  return picked.mean(-1)


def _excluded(ids: jax.Array, exclude: jax.Array | None) -> jax.Array:
  """bool[B, C]: ids [B, C] found in exclude [B, S] (-1 never matches an id)."""
  if exclude is None:
    return jnp.zeros(ids.shape, bool)
  return jnp.any(ids[:, :, None] == exclude[:, None, :], axis=-1)


def _finish(scores: jax.Array, ids: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  top, pos = jax.lax.top_k(scores, k)
  picked = jnp.take_along_axis(ids, pos, axis=1)
  return jnp.where(jnp.isfinite(top), picked, -1).astype(jnp.int32), top


@functools.partial(jax.jit, static_argnames=("k",))
def exact_top_k(log_probs: jax.Array, sids: jax.Array, k: int,
                exclude: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Top k of the whole catalogue: log_probs [B, m, K], sids [N, m]."""
  scores = item_scores(log_probs, sids)                             # [B, N]
  ids = jnp.broadcast_to(jnp.arange(sids.shape[0], dtype=jnp.int32), scores.shape)
  if exclude is not None:
    rows = jnp.broadcast_to(jnp.arange(scores.shape[0])[:, None], exclude.shape)
    cols = jnp.where(exclude >= 0, exclude, sids.shape[0])          # padding -> dropped
    hit = jnp.zeros(scores.shape, bool).at[rows, cols].set(True, mode="drop")
    scores = jnp.where(hit, -jnp.inf, scores)
  return _finish(scores, ids, k)


@functools.partial(jax.jit, static_argnames=("k", "num_beams", "steps"))
def graph_top_k(log_probs: jax.Array, sids: jax.Array, adjacency: jax.Array, key: jax.Array,
                k: int, num_beams: int, steps: int, exclude: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array]:
  """Graph-constrained decoding (module docstring).

  Args:
    log_probs: float[B, m, K].
    sids: int[N, m].
    adjacency: int[N, E] out-neighbours, from `graph.build_graph`.
    key: PRNG key for the start beams.
    k: items returned (<= num_beams).
    num_beams: beams kept per step.
    steps: propagation steps (>= 1).
    exclude: int[B, S] or None.
  """
  if not 1 <= k <= num_beams or steps < 1:
    raise ValueError(f"rpg.decode: need 1 <= k={k} <= num_beams={num_beams} and steps={steps} "
                     ">= 1")
  b, n = log_probs.shape[0], sids.shape[0]
  beams = jax.random.randint(key, (b, num_beams), 0, n, dtype=jnp.int32)

  def step(carry, _):
    beams, _ = carry
    cand = jnp.sort(jnp.take(adjacency, beams, axis=0).reshape(b, -1), axis=1)   # [B, C]
    repeat = jnp.concatenate([jnp.zeros((b, 1), bool), cand[:, 1:] == cand[:, :-1]], axis=1)
    scores = candidate_scores(log_probs, sids, cand)
    scores = jnp.where(repeat | _excluded(cand, exclude), -jnp.inf, scores)
    top, pos = jax.lax.top_k(scores, num_beams)
    return (jnp.take_along_axis(cand, pos, axis=1), top), None

  (beams, top), _ = jax.lax.scan(step, (beams, jnp.zeros((b, num_beams))), None, length=steps)
  return jnp.where(jnp.isfinite(top[:, :k]), beams[:, :k], -1).astype(jnp.int32), top[:, :k]
