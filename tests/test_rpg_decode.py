"""RPG decoding and item graph against brute force on small catalogues."""
import jax
import jax.numpy as jnp
import numpy as np

from r3vae_jax.rpg import decode, graph

N, M, K, B = 60, 4, 8, 5


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  sids = rng.integers(0, K, size=(N, M)).astype(np.int32)
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(rng.normal(size=(B, M, K)) * 3), -1))
  return sids, logp


def _brute_scores(logp, sids):
  return np.stack([[np.mean([logp[b, j, sids[n, j]] for j in range(M)]) for n in range(N)]
                   for b in range(B)])


def test_item_scores_and_exact_top_k_match_brute_force():
  sids, logp = _problem()
  brute = _brute_scores(logp, sids)
  np.testing.assert_allclose(decode.item_scores(jnp.asarray(logp), jnp.asarray(sids)), brute,
                             rtol=1e-5, atol=1e-6)
  exclude = np.array([[0, 1, -1], [2, -1, -1], [-1, -1, -1], [5, 6, 7], [9, 9, 3]], np.int32)
  ids, scores = decode.exact_top_k(jnp.asarray(logp), jnp.asarray(sids), 10, jnp.asarray(exclude))
  for b in range(B):
    s = brute[b].copy()
    s[exclude[b][exclude[b] >= 0]] = -np.inf
    order = np.argsort(-s, kind="stable")[:10]
    np.testing.assert_allclose(np.asarray(scores[b]), s[order], rtol=1e-5, atol=1e-6)
    assert not set(np.asarray(ids[b]).tolist()) & set(exclude[b][exclude[b] >= 0].tolist())


def test_graph_decoding_on_complete_graph_is_exact():
  sids, logp = _problem(1)
  adjacency = jnp.asarray(np.tile(np.arange(N, dtype=np.int32), (N, 1)))
  exclude = jnp.asarray(np.array([[3, -1]] * B, np.int32))
  g_ids, g_scores = decode.graph_top_k(jnp.asarray(logp), jnp.asarray(sids), adjacency,
                                       jax.random.PRNGKey(0), 10, 12, 1, exclude)
  e_ids, e_scores = decode.exact_top_k(jnp.asarray(logp), jnp.asarray(sids), 10, exclude)
  np.testing.assert_allclose(g_scores, e_scores, rtol=1e-6)
  np.testing.assert_array_equal(g_ids, e_ids)


def _reference_propagation(logp, sids, adjacency, start, beams, steps):
  """Set-based propagation, one user at a time (the algorithm as described)."""
  out = []
  for b in range(logp.shape[0]):
    current = list(start[b])
    for _ in range(steps):
      cand = sorted({int(v) for u in current for v in adjacency[u]})
      score = {c: np.mean([logp[b, j, sids[c, j]] for j in range(M)]) for c in cand}
      current = sorted(cand, key=lambda c: -score[c])[:beams]
    out.append(current)
  return np.array(out)


def test_graph_decoding_matches_set_based_reference():
  sids, logp = _problem(2)
  rng = np.random.default_rng(3)
  adjacency = np.concatenate([np.arange(N)[:, None], rng.integers(0, N, size=(N, 4))], 1)
  key = jax.random.PRNGKey(7)
  start = np.asarray(jax.random.randint(key, (B, 6), 0, N, dtype=jnp.int32))
  ids, scores = decode.graph_top_k(jnp.asarray(logp), jnp.asarray(sids),
                                   jnp.asarray(adjacency, jnp.int32), key, 6, 6, 3)
  ref = _reference_propagation(logp, sids, adjacency, start, 6, 3)
  np.testing.assert_array_equal(np.asarray(ids), ref)
  assert np.all(np.diff(np.asarray(scores), axis=1) <= 0)


def test_build_graph_matches_brute_force():
  rng = np.random.default_rng(4)
  flat = rng.choice(K ** M, N, replace=False)           # distinct SIDs: no ties in similarity
  sids = np.stack([(flat // K ** j) % K for j in range(M)], 1).astype(np.int32)
  table = rng.normal(size=(M, K, 6)).astype(np.float32)
  adjacency = graph.build_graph(jnp.asarray(table), jnp.asarray(sids), 7, block=16)
  ref = graph.brute_force_graph(table, sids, 7)
  np.testing.assert_array_equal(np.asarray(adjacency), ref)
  np.testing.assert_array_equal(np.asarray(adjacency)[:, 0], np.arange(N))
