"""Quality of a semantic-ID assignment (R3-VAE's SC and PD, usage, perplexity, collisions, Gini).

Hard metrics group items by their code tuple first (a sort, then `segment_sum`): nothing is
`[N, N]`. With G groups, arrays are padded to N rows and the first G rows are the groups
(`collision.group_ids`), so everything is jittable with static shapes.

Definitions (`v̂ = v / ||v||`; a "group" = the items sharing a code tuple):

* Semantic cohesion `SC = mean over groups g with n_g >= 2 of`
  `sc_g = (||sum_{i in g} v̂_i||^2 - sum_{i in g} ||v̂_i||^2) / (n_g (n_g - 1))`, the mean
  pairwise cosine inside the group (the numerator is the sum over ordered pairs i != j of
  v̂_i . v̂_j). NaN when no group has two items. Higher = more cohesive.
* Preference discrimination `PD = log(mean_{a<b} exp(-t (1 - cos(p_a, p_b))))` over the group
  centres `p_g = mean_{i in g} v_i`. NaN with fewer than 2 groups. Lower = more uniform.
  Beyond `PD_MAX_GROUPS` items, estimated on that many random groups (a fixed key).
* Collision rate: fraction of items whose code tuple is shared with another item.
* Usage per level: fraction of the K codes used at that level. Perplexity per level:
  `exp(-sum_k p_k log p_k)` of the code distribution at that level.
* Gini of the group sizes: `sum_i (2i - n - 1) x_(i) / (n sum x)` (sizes sorted ascending).
* Transition lift at level l (host numpy, needs the users' sequences): over the pairs (a, b) of
  distinct items that follow each other in a sequence, `P(prefix_l(a) = prefix_l(b))` divided
  by `sum_c P_a(c) P_b(c)`, the same probability for a and b drawn independently from the
  pairs' two prefix distributions. 1 = the table ignores what users consume together.
* Changes between two tables of the same items (host numpy; e.g. DIGER's pretrained and final
  SIDs): per level, the share of items whose code differs (`code_changed`) and whose prefix up
  to that level differs (`prefix_changed`); `sid_changed`, the share whose whole row differs
  (collision token included).

Differentiable (soft) variants, for the R3-VAE regulariser `L_metric = -SC + PD`, take
assignment probabilities `W [B, K]` (e.g. the rating weights of one level) instead of codes:

* `soft_semantic_cohesion(v, W) = sum_{a != b} m_ab cos(v_a, v_b) / sum_{a != b} m_ab` with
  `m_ab = sum_k W_ak W_bk`, the probability that a and b draw the same code. Computed as
  `sum_k (||S_k||^2 - sum_b W_bk^2 ||v̂_b||^2) / sum_k (n_k^2 - sum_b W_bk^2)` with
  `S = W^T v̂`, `n = W^T 1`: `O(B K + K D)`, never `[B, B]`. For one-hot W this is the mean
  cosine over all same-code pairs, i.e. the hard `sc_g` averaged with weights `n_g (n_g - 1)`.
* `soft_preference_discrimination(p, u, t) = log(sum_{a != b} u_a u_b exp(-t (1 - cos(p_a, p_b)))
  / sum_{a != b} u_a u_b)` over K centres `p` (codewords, or `soft_group_centres`) weighted by
  their usage `u` (default 1: then it equals the hard PD over those centres).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax.quantize.assign import l2_normalize
from r3vae_jax.quantize.collision import group_ids, packed_prefix_keys

_HIGHEST = jax.lax.Precision.HIGHEST


@jax.jit
def code_groups(codes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Size of every code-tuple group.

  Args:
    codes: `int[N, L']`.

  Returns:
    ids `int32[N]` (group of each item), sizes `int32[N]` (first G rows are the groups' sizes,
    the rest 0) and num_groups (int32 scalar G).
  """
  ids, num_groups = group_ids(codes)
  n = codes.shape[0]
  sizes = jax.ops.segment_sum(jnp.ones((n,), jnp.int32), ids, num_segments=n)
  return ids, sizes, num_groups


@jax.jit
def semantic_cohesion(vectors: jax.Array, codes: jax.Array) -> jax.Array:
  """Mean over groups with >= 2 items of the mean pairwise cosine inside the group.

  Args:
    vectors: `[N, D]` item vectors.
    codes: `int[N, L']` code tuples (any prefix length).

  Returns:
    scalar SC (NaN when no group has two items). Differentiable with respect to `vectors`.
  """
  n = vectors.shape[0]
  ids, sizes, _ = code_groups(codes)
  unit = l2_normalize(vectors)
  sums = jax.ops.segment_sum(unit, ids, num_segments=n)
  self_dots = jax.ops.segment_sum(jnp.sum(unit * unit, axis=-1), ids, num_segments=n)
  sizes = sizes.astype(vectors.dtype)
  multi = sizes >= 2
  pair_count = jnp.where(multi, sizes * (sizes - 1), 1.0)
  per_group = (jnp.sum(sums * sums, axis=-1) - self_dots) / pair_count
  return jnp.sum(jnp.where(multi, per_group, 0.0)) / jnp.sum(multi)


@jax.jit
def group_centres(vectors: jax.Array, codes: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean vector of every code-tuple group.

  Args:
    vectors: `[N, D]`.
    codes: `int[N, L']`.

  Returns:
    centres `[N, D]` (the first G rows are the groups, in lexicographic tuple order; the rest
    zero) and num_groups (int32 scalar G).
  """
  n = vectors.shape[0]
  ids, sizes, num_groups = code_groups(codes)
  sums = jax.ops.segment_sum(vectors, ids, num_segments=n)
  return sums / jnp.maximum(sizes, 1).astype(vectors.dtype)[:, None], num_groups


@functools.partial(jax.jit, static_argnames=("block",))
def mean_pair_kernel(points: jax.Array, count: jax.Array, t: float = 2.0,
                     block: int = 2048) -> jax.Array:
  """`mean_{a<b<count} exp(-t (1 - cos(points_a, points_b)))` in `[block, block]` tiles.

  Only tiles of the upper triangle below `count` are computed (a dynamic-bound `fori_loop`),
  so the cost is `O(count^2 D / 2)` and memory `O(block^2)`. Not reverse-differentiable (use
  `soft_preference_discrimination` for gradients).

  Args:
    points: `[M, D]`; rows `>= count` are ignored.
    count: number of valid rows (int scalar, may be traced).
    t: kernel sharpness.
    block: tile size (static).

  Returns:
    scalar mean over the `count (count - 1) / 2` pairs (NaN when count < 2).
  """
  m, d = points.shape
  count = jnp.asarray(count, jnp.int32)
  block = max(1, min(block, m))
  num_tiles = -(-m // block)
  unit = jnp.zeros((num_tiles * block, d), points.dtype).at[:m].set(l2_normalize(points))
  live_tiles = (count + block - 1) // block
  offsets = jnp.arange(block)

  def tile_sum(i, j):
    a = jax.lax.dynamic_slice_in_dim(unit, i * block, block)
    b = jax.lax.dynamic_slice_in_dim(unit, j * block, block)
    rows = i * block + offsets
    cols = j * block + offsets
    keep = (rows[:, None] < cols[None, :]) & (cols[None, :] < count)
    kernel = jnp.exp(t * (jnp.matmul(a, b.T, precision=_HIGHEST) - 1.0))
    return jnp.sum(jnp.where(keep, kernel, 0.0))

  def row(i, total):
    return jax.lax.fori_loop(i, live_tiles, lambda j, acc: acc + tile_sum(i, j), total)

  total = jax.lax.fori_loop(0, live_tiles, row, jnp.zeros((), points.dtype))
  count = count.astype(points.dtype)
  return total / (count * (count - 1) / 2)


PD_MAX_GROUPS = 65536  # PD over more groups than this is estimated on a random subset


@functools.partial(jax.jit, static_argnames=("block", "max_groups"))
def preference_discrimination(vectors: jax.Array, codes: jax.Array, t: float = 2.0,
                              block: int = 2048, max_groups: int = PD_MAX_GROUPS) -> jax.Array:
  """`log(mean_{a<b} exp(-t (1 - cos(p_a, p_b))))` over the group centres p.

  The pairs cost `O(G^2 D)`: 1M groups would be 5e11 kernel values. With more than
  `max_groups` items (N, static), the mean runs over the pairs of a uniform random subset of
  `max_groups` groups (drawn with a fixed key, so reproducible): an unbiased estimate of the
  mean pair kernel; with at most `max_groups` items every pair counts.

  Args:
    vectors: `[N, D]`.
    codes: `int[N, L']`.
    t: kernel sharpness (R3-VAE: 2).
    block: tile size of the pairwise sum (static).
    max_groups: the subset size beyond which PD is estimated (static).

  Returns:
    scalar PD (NaN with fewer than two groups). Lower = centres spread more uniformly.
  """
  centres, num_groups = group_centres(vectors, codes)
  if centres.shape[0] > max_groups:
    rows = jnp.arange(centres.shape[0])
    draw = jax.random.uniform(jax.random.PRNGKey(0), rows.shape)
    keep = jnp.argsort(jnp.where(rows < num_groups, draw, 2.0))[:max_groups]
    centres, num_groups = centres[keep], jnp.minimum(num_groups, max_groups)
  return jnp.log(mean_pair_kernel(centres, num_groups, t, block))


def transition_lift(codes: np.ndarray, sequences: list[np.ndarray]) -> np.ndarray:
  """Transition lift per level (module docstring) of a table over item sequences.

  Args:
    codes: int `[N, L]` code table (row = item id).
    sequences: int arrays of item ids, each a user's items in order (e.g. the training split).

  Returns:
    float64 `[L]`: lift of prefixes of length 1..L (NaN where no pair of distinct consecutive
    items exists).
  """
  codes = np.asarray(codes)
  a, b = _consecutive_pairs(sequences)
  keep = a != b
  a, b = a[keep], b[keep]
  lifts = np.full(codes.shape[1], np.nan)
  if a.size == 0:
    return lifts
  for level, prefix in enumerate(_prefix_ids(codes), 1):
    pa, pb = prefix[a], prefix[b]
    n = prefix.max() + 1
    chance = np.dot(np.bincount(pa, minlength=n), np.bincount(pb, minlength=n)) / a.size ** 2
    lifts[level - 1] = np.mean(pa == pb) / chance if chance > 0 else 0.0
  return lifts


def _prefix_ids(codes: np.ndarray):
  """Yields, for prefix lengths 1..L, int `[N]` ids equal exactly where the items' prefixes are
  (dense ids 0..; from `packed_prefix_keys` while the codes fit 63 bits)."""
  keys = packed_prefix_keys(codes)
  for level in range(1, codes.shape[1] + 1):
    if keys is None:
      yield np.unique(codes[:, :level], axis=0, return_inverse=True)[1].ravel()
    else:
      yield np.unique(keys[level - 1], return_inverse=True)[1].ravel()


def _consecutive_pairs(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """(items, next items) int `[P]`: every consecutive pair inside a sequence, in order; taken
  from all sequences concatenated, dropping the pairs that straddle two sequences."""
  seqs = [np.asarray(s).ravel() for s in sequences]
  flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
  if flat.size < 2:
    return flat[:0], flat[:0]
  inside = np.ones(flat.size - 1, bool)
  last = np.cumsum(np.fromiter(map(len, seqs), np.int64, len(seqs)))[:-1] - 1
  inside[last[(last >= 0) & (last < inside.size)]] = False
  return flat[:-1][inside], flat[1:][inside]


def sid_changes(before: np.ndarray, after: np.ndarray, levels: int) -> dict[str, Any]:
  """How two SID tables of the same items differ (module docstring).

  Args:
    before, after: int `[N, C]` tables (codes in the first `levels` columns, e.g. `[N, L+1]`
      SID tables with their collision token).
    levels: code levels to compare one by one.

  Returns:
    {"sid_changed": float, "code_changed": [levels floats], "prefix_changed": [levels floats]}.
  """
  before, after = np.asarray(before), np.asarray(after)
  if before.shape != after.shape or before.ndim != 2 or not 0 < levels <= before.shape[1]:
    raise ValueError(f"sid_changes: tables {before.shape} and {after.shape} with {levels} levels; "
                     "expected two [N, C] tables of one shape and 0 < levels <= C")
  differs = before != after
  return {"sid_changed": float(np.mean(np.any(differs, axis=1))),
          "code_changed": [float(np.mean(differs[:, level])) for level in range(levels)],
          "prefix_changed": [float(np.mean(np.any(differs[:, :level + 1], axis=1)))
                             for level in range(levels)]}


@jax.jit
def collision_rate(codes: jax.Array) -> jax.Array:
  """Fraction of items whose code tuple is shared with at least one other item.

  codes `int[N, L]` -> scalar.
  """
  ids, sizes, _ = code_groups(codes)
  return jnp.mean((jnp.take(sizes, ids) >= 2).astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("num_codes",))
def code_counts(codes: jax.Array, num_codes: int) -> jax.Array:
  """Histogram of the codes at every level.  codes `int[N, L]` in `[0, K)` -> `float32[L, K]`."""
  levels = codes.shape[1]
  return jnp.zeros((levels, num_codes), jnp.float32).at[
      jnp.arange(levels)[None, :], codes].add(1.0)


@functools.partial(jax.jit, static_argnames=("num_codes",))
def usage_per_level(codes: jax.Array, num_codes: int) -> jax.Array:
  """Fraction of the K codes used at each level.  codes `int[N, L]` -> `[L]`."""
  return jnp.mean((code_counts(codes, num_codes) > 0).astype(jnp.float32), axis=1)


@functools.partial(jax.jit, static_argnames=("num_codes",))
def perplexity_per_level(codes: jax.Array, num_codes: int) -> jax.Array:
  """`exp(entropy)` of the code distribution at each level (1 .. K).  `[N, L]` -> `[L]`."""
  p = code_counts(codes, num_codes) / codes.shape[0]
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=1)
  return jnp.exp(entropy)


@jax.jit
def gini(group_sizes: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Gini coefficient of non-negative sizes (0 = all equal, -> 1 = one group holds all).

  Args:
    group_sizes: `[G]` sizes.
    valid: optional `bool[G]`; invalid entries are left out (lets padded arrays be used).

  Returns:
    scalar `sum_i (2i - n - 1) x_(i) / (n sum x)` over the n valid sizes sorted ascending.
  """
  x = jnp.asarray(group_sizes, jnp.float32)
  if valid is None:
    valid = jnp.ones(x.shape, bool)
  x = jnp.where(valid, x, 0.0)
  n = jnp.sum(valid).astype(jnp.float32)
  # Invalid entries are zeros and sort first; shift the ranks so valid ones run 1..n.
  rank = jnp.arange(1, x.shape[0] + 1, dtype=jnp.float32) - (x.shape[0] - n)
  xs = jnp.sort(x)
  return jnp.sum((2.0 * rank - n - 1.0) * xs) / (n * jnp.sum(xs))


@jax.jit
def soft_semantic_cohesion(vectors: jax.Array, assign_weights: jax.Array,
                           eps: float = 1e-9) -> jax.Array:
  """Differentiable SC: mean cosine over pairs weighted by their chance of sharing a code.

  Args:
    vectors: `[B, D]`.
    assign_weights: `[B, K]` assignment probabilities (rows sum to 1).
    eps: added to the pair mass.

  Returns:
    scalar in [-1, 1]; see the module docstring for the formula.
  """
  unit = l2_normalize(vectors)
  w = assign_weights.astype(unit.dtype)
  sums = jnp.matmul(w.T, unit, precision=_HIGHEST)
  w2 = w * w
  self_dots = jnp.matmul(w2.T, jnp.sum(unit * unit, axis=-1), precision=_HIGHEST)
  mass = jnp.sum(w, axis=0)
  pair_cos = jnp.sum(jnp.sum(sums * sums, axis=-1) - self_dots)
  pair_mass = jnp.sum(mass * mass - jnp.sum(w2, axis=0))
  return pair_cos / (pair_mass + eps)


@jax.jit
def soft_group_centres(vectors: jax.Array, assign_weights: jax.Array,
                       eps: float = 1e-9) -> tuple[jax.Array, jax.Array]:
  """Soft group centres and usage.

  Args:
    vectors: `[B, D]`.
    assign_weights: `[B, K]`.
    eps: guards empty codes.

  Returns:
    centres `[K, D]` (`W^T v / n_k`) and usage `[K]` (`n_k / B`, with `n = W^T 1`).
  """
  mass = jnp.sum(assign_weights, axis=0)
  centres = jnp.matmul(assign_weights.T, vectors, precision=_HIGHEST) / (mass[:, None] + eps)
  return centres, mass / assign_weights.shape[0]


@jax.jit
def soft_preference_discrimination(centres: jax.Array, weights: jax.Array | None = None,
                                   t: float = 2.0) -> jax.Array:
  """Differentiable PD over K centres weighted by usage; `[K, K]` is formed (K is small).

  Args:
    centres: `[K, D]` (codewords or `soft_group_centres`).
    weights: `[K]` non-negative usage weights u, or None for all ones.
    t: kernel sharpness.

  Returns:
    scalar `log(sum_{a != b} u_a u_b exp(-t (1 - cos)) / sum_{a != b} u_a u_b)`.
  """
  k = centres.shape[0]
  unit = l2_normalize(centres)
  u = jnp.ones((k,), centres.dtype) if weights is None else weights.astype(centres.dtype)
  pair_w = (u[:, None] * u[None, :]) * (1.0 - jnp.eye(k, dtype=centres.dtype))
  kernel = jnp.exp(t * (jnp.matmul(unit, unit.T, precision=_HIGHEST) - 1.0))
  return jnp.log(jnp.sum(pair_w * kernel) / jnp.sum(pair_w))


@functools.partial(jax.jit, static_argnames=("num_codes", "t", "block"))
def _report_arrays(vectors: jax.Array, codes: jax.Array, num_codes: int, t: float,
                   block: int) -> dict[str, jax.Array]:
  _, sizes, num_groups = code_groups(codes)
  valid = jnp.arange(codes.shape[0]) < num_groups
  return dict(
      usage_per_level=usage_per_level(codes, num_codes),
      perplexity_per_level=perplexity_per_level(codes, num_codes),
      collision_rate=collision_rate(codes),
      semantic_cohesion=semantic_cohesion(vectors, codes),
      semantic_cohesion_per_prefix=jnp.stack(
          [semantic_cohesion(vectors, codes[:, :l + 1]) for l in range(codes.shape[1])]),
      preference_discrimination=preference_discrimination(vectors, codes, t, block),
      gini=gini(sizes, valid),
      max_group_size=jnp.max(sizes),
      num_groups=num_groups,
  )


def sid_report(vectors: Any, codes: Any, num_codes: int, t: float = 2.0,
               block: int = 2048) -> dict[str, Any]:
  """All SID metrics of the L code levels (without the collision token), as Python values.

  Args:
    vectors: `[N, D]` item vectors.
    codes: `int[N, L]` codes in `[0, num_codes)`.
    num_codes: K, codes per level.
    t: PD kernel sharpness.
    block: PD tile size.

  Returns:
    dict with usage_per_level, perplexity_per_level, semantic_cohesion_per_prefix (lists over
    levels / prefix lengths 1..L), collision_rate, semantic_cohesion, preference_discrimination,
    gini (floats; SC/PD NaN when undefined), max_group_size and num_groups (ints). Groups are
    the full L-code tuples.
  """
  vectors = jnp.asarray(vectors, jnp.float32)
  codes = jnp.asarray(codes, jnp.int32)
  if vectors.ndim != 2 or codes.ndim != 2 or vectors.shape[0] != codes.shape[0]:
    raise ValueError("quantize/sid_metrics.py: sid_report needs vectors [N, D] and codes "
                     f"[N, L]; got {vectors.shape} and {codes.shape}")
  arrays = jax.device_get(_report_arrays(vectors, codes, num_codes, float(t), block))
  out: dict[str, Any] = {}
  for name, value in arrays.items():
    value = np.asarray(value)
    if value.ndim:
      out[name] = [float(v) for v in value]
    elif np.issubdtype(value.dtype, np.integer):
      out[name] = int(value)
    else:
      out[name] = float(value)
  return out
