"""Trie-constrained beam search over fixed-length semantic IDs, entirely on the device.

Model-agnostic (t5x's `tokens_to_logits` pattern): the caller passes a step function

    step_fn(prev_codes int32[batch*beam], level: int, cache) -> (logits float[batch*beam, K_level], cache)

where `level` is a Python int (static), `prev_codes` are -1 (BOS) at level 0, and every cache
leaf has leading dimension batch*beam in batch-major order (row b*beam + j is beam j of user b);
0-d cache leaves (e.g. a step counter) are passed through unchanged.

The SID length L' is small and each level has its own vocabulary and trie layout, so the levels
are unrolled in Python; under `jax.jit` the whole search is one program with no host round trip.
Per level: the model's logits are restricted to the valid children of each beam's trie node
(invalid ones set to -inf BEFORE the log-softmax: "masked log-softmax"), added to the beam score,
and the top `beam` of the `beam x candidates` continuations of each user survive; the cache rows
follow their parent beam. Beams start as `[0, -inf, ...]` so the identical step-0 beams never
produce duplicates. A user with fewer valid SIDs than beams gets -inf slots, returned as item -1.

The batch may be sharded over the mesh's `data` axis: every array is batch-major and the beam
bookkeeping (top-k, parent gathers) never mixes users, so it stays local to each shard. XLA's
partitioner would gather a `lax.top_k` operand onto every device, so under a mesh (passed, or set
with `jax.set_mesh`) whose `data` axis divides the batch, the top-k runs in `jax.shard_map`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from r3vae_jax import parallel
from r3vae_jax.decode.trie import DeviceTrie

StepFn = Callable[[jax.Array, int, Any], tuple[jax.Array, Any]]


class BeamResult(NamedTuple):
  """Best-first decoding result.

  Attributes:
    item_ids: int32[batch, beam] item ids; -1 where the user has fewer valid SIDs than beams.
    scores: float32[batch, beam] summed masked log-softmax of the SID; -inf where item_ids = -1.
    sids: int32[batch, beam, levels] the decoded SIDs; -1 rows where item_ids = -1.
  """
  item_ids: jax.Array
  scores: jax.Array
  sids: jax.Array


def masked_log_softmax(logits: jax.Array, valid: jax.Array) -> jax.Array:
  """log-softmax over the valid entries only; invalid entries get -inf.

  Args:
    logits: float[rows, C].
    valid: bool[rows, C]; every row needs at least one valid entry.

  Returns:
    float32[rows, C].
  """
  return jax.nn.log_softmax(jnp.where(valid, logits.astype(jnp.float32), -jnp.inf), axis=-1)


def ensemble_step_fn(step_fns: Sequence[StepFn]) -> StepFn:
  """One step function for several models decoding together.

  Its "logits" at each level are the mean of the models' log-softmax over the level's codes (a
  normalised geometric mean of their distributions); `beam_search` then renormalises them over
  each node's valid children as for one model. Its cache is the tuple of the models' caches
  (every leaf keeps its leading batch*beam axis, so `gather_beams` reorders them together).
  With one model the ranking is that model's (log-softmax only shifts each row).
  """
  if not step_fns:
    raise ValueError("ensemble_step_fn: needs at least one step function")

  def step(prev: jax.Array, level: int, caches: tuple) -> tuple[jax.Array, tuple]:
    outs = [fn(prev, level, cache) for fn, cache in zip(step_fns, caches, strict=True)]
    logp = sum(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1) for logits, _ in outs)
    return logp / len(outs), tuple(cache for _, cache in outs)

  return step


def gather_beams(tree: Any, parent: jax.Array) -> Any:
  """Reorders the batch-major beam rows of every leaf by parent beam index.

  Args:
    tree: leaves [batch*beam, ...] (or 0-d, passed through).
    parent: int32[batch, beam] index of the beam (within the same user) each new beam extends.

  Returns:
    The tree with leaf row b*beam + j taken from row b*beam + parent[b, j].
  """
  batch, beam = parent.shape

  def gather(path, x):
    if x.ndim == 0:
      return x
    if x.shape[0] != batch * beam:
      raise ValueError(f"beam_search: cache leaf {jax.tree_util.keystr(path)} has shape "
                       f"{x.shape}; expected leading dimension batch*beam = {batch * beam}")
    x = x.reshape(batch, beam, *x.shape[1:])
    x = jax.vmap(lambda xb, pb: xb[pb])(x, parent)
    return x.reshape(batch * beam, *x.shape[2:])

  return jax.tree_util.tree_map_with_path(gather, tree)


def top_continuations(total: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """The k best of every user's beam x candidate scores.

  When candidates outnumber k, each beam first keeps its own k best (the overall k best are
  among them), so the per-user top-k runs over beam*k entries instead of beam*C.

  Args:
    total: float32[batch, beam, C].
    k: how many to keep.

  Returns:
    (scores float32[batch, k] best first, flat int32[batch, k] indices into beam*C).
  """
  batch, beam, c = total.shape
  if c <= k:
    scores, flat = jax.lax.top_k(total.reshape(batch, beam * c), k)
    return scores, flat
  beam_scores, cand = jax.lax.top_k(total, k)                       # [batch, beam, k]
  scores, pos = jax.lax.top_k(beam_scores.reshape(batch, beam * k), k)
  cand = jnp.take_along_axis(cand.reshape(batch, beam * k), pos, axis=1)
  return scores, (pos // k) * c + cand


def _top_fn(batch_size: int, mesh: jax.sharding.Mesh | None
            ) -> Callable[[jax.Array, int], tuple[jax.Array, jax.Array]]:
  """`top_continuations`, per `data` shard when the mesh (or the ambient one) splits the batch."""
  mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
  shards = 1 if mesh.empty else dict(mesh.shape).get(parallel.DATA, 1)
  if shards == 1 or batch_size % shards or parallel.DATA in mesh.manual_axes:
    return top_continuations
  spec = P(parallel.DATA)
  return lambda total, k: jax.shard_map(lambda t: top_continuations(t, k), mesh=mesh,
                                        in_specs=spec, out_specs=(spec, spec))(total)


def beam_search(step_fn: StepFn, init_cache: Any, trie: DeviceTrie, batch_size: int,
                beam_size: int, mesh: jax.sharding.Mesh | None = None) -> BeamResult:
  """Decodes the `beam_size` best valid SIDs per user (jit it; see the module docstring).

  Args:
    step_fn: the model's decoding step (contract in the module docstring).
    init_cache: the decoder cache, leaves [batch_size*beam_size, ...] batch-major.
    trie: the `DeviceTrie` of valid SIDs.
    batch_size: number of users.
    beam_size: beams per user (and items returned).
    mesh: the mesh whose `data` axis shards the batch (default: the one set by `jax.set_mesh`,
      if any); only used to keep the top-k local to each shard.

  Returns:
    `BeamResult`, best first.
  """
  if batch_size < 1 or beam_size < 1:
    raise ValueError(f"beam_search: batch_size {batch_size} and beam_size {beam_size} must be "
                     f">= 1")
  rows = batch_size * beam_size
  top = _top_fn(batch_size, mesh)
  scores = jnp.where(jnp.arange(beam_size) == 0, 0.0, -jnp.inf).astype(jnp.float32)
  scores = jnp.broadcast_to(scores, (batch_size, beam_size))
  node = jnp.zeros((batch_size, beam_size), jnp.int32)
  sids = jnp.zeros((batch_size, beam_size, 0), jnp.int32)
  prev = jnp.full((rows,), -1, jnp.int32)
  cache = init_cache
  for level, trie_level in enumerate(trie.levels):
    logits, cache = step_fn(prev, level, cache)
    if logits.shape != (rows, trie_level.size):
      raise ValueError(f"beam_search: step_fn returned logits {logits.shape} at level {level}; "
                       f"expected (batch*beam, K_level) = {(rows, trie_level.size)}")
    cand_logits, codes, child = trie_level.candidates(node.reshape(rows), logits)
    c = trie_level.num_candidates
    logp = masked_log_softmax(cand_logits, child >= 0)
    total = scores[:, :, None] + logp.reshape(batch_size, beam_size, c)
    scores, flat = top(total, beam_size)
    parent = flat // c
    code = jnp.take_along_axis(codes.reshape(batch_size, -1), flat, axis=1)
    node = jnp.maximum(jnp.take_along_axis(child.reshape(batch_size, -1), flat, axis=1), 0)
    sids = jnp.concatenate([jax.vmap(lambda s, p: s[p])(sids, parent), code[:, :, None]], 2)
    prev = code.reshape(rows)
    if level + 1 < trie.num_levels:
      cache = gather_beams(cache, parent)
  alive = scores > -jnp.inf
  item_ids = jnp.where(alive, trie.leaf_items[node], -1)
  sids = jnp.where(alive[:, :, None], sids, -1)
  return BeamResult(item_ids=item_ids, scores=scores, sids=sids)
