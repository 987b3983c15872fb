"""Device trie: node numbering, dense and CSR layouts, memory formula, pytree, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r3vae_jax.decode import CsrLevel, DenseLevel, build_trie

TABLE = np.asarray([[1, 0, 2],   # item 0
                    [0, 2, 0],   # item 1
                    [1, 0, 0],   # item 2
                    [0, 1, 1],   # item 3
                    [0, 2, 1]])  # item 4
SIZES = [2, 3, 3]


def _children(trie, level, node):
  """(codes, child ids) of one node, read through the level's `candidates`."""
  lv = trie.levels[level]
  logits = jnp.zeros((1, lv.size))
  _, codes, child = lv.candidates(jnp.asarray([node]), logits)
  keep = np.asarray(child[0]) >= 0
  return np.asarray(codes[0])[keep].tolist(), np.asarray(child[0])[keep].tolist()


@pytest.mark.parametrize("budget", [0, 2**26])
def test_nodes_children_and_leaves(budget):
  trie = build_trie(TABLE, SIZES, dense_budget=budget)
  # Sorted SIDs 011, 020, 021, 100, 102 are items 3, 1, 4, 2, 0.
  np.testing.assert_array_equal(trie.leaf_items, [3, 1, 4, 2, 0])
  assert _children(trie, 0, 0) == ([0, 1], [0, 1])             # root -> prefixes 0, 1
  assert _children(trie, 1, 0) == ([1, 2], [0, 1])             # 0 -> 01, 02
  assert _children(trie, 1, 1) == ([0], [2])                   # 1 -> 10
  assert _children(trie, 2, 1) == ([0, 1], [1, 2])             # 02 -> 020, 021
  assert _children(trie, 2, 2) == ([0, 2], [3, 4])             # 10 -> 100, 102
  assert trie.num_items == 5 and trie.num_levels == 3


def test_layout_choice_and_memory_formula():
  trie = build_trie(TABLE, SIZES, dense_budget=4)              # nodes per depth: 1, 2, 3, 5
  assert trie.layouts == ("dense", "csr", "csr")
  assert isinstance(trie.levels[0], DenseLevel) and isinstance(trie.levels[1], CsrLevel)
  assert [lv.max_branch for lv in trie.levels[1:]] == [2, 2]
  expect = (1 * 2 + (2 + 1 + 3) + (3 + 1 + 5) + 5) * 4
  assert trie.nbytes == expect
  dense = build_trie(TABLE, SIZES)
  assert dense.nbytes == (1 * 2 + 2 * 3 + 3 * 3 + 5) * 4


def test_csr_gathers_only_candidate_logits():
  trie = build_trie(TABLE, SIZES, dense_budget=0)
  logits = jnp.asarray([[10., 11., 12.], [20., 21., 22.]])
  cand, codes, child = trie.levels[2].candidates(jnp.asarray([1, 2]), logits)
  np.testing.assert_array_equal(cand, [[10., 11.], [20., 22.]])
  np.testing.assert_array_equal(codes, [[0, 1], [0, 2]])
  np.testing.assert_array_equal(child, [[1, 2], [3, 4]])


def test_is_a_pytree_with_static_sizes():
  trie = build_trie(TABLE, SIZES, dense_budget=4)
  leaves, treedef = jax.tree.flatten(trie)
  assert all(isinstance(x, jax.Array) for x in leaves) and len(leaves) == 1 + 2 + 2 + 1
  again = jax.tree.unflatten(treedef, leaves)
  assert again.level_sizes == (2, 3, 3) and again.levels[2].max_branch == 2
  out = jax.jit(lambda t: t.leaf_items[t.levels[1].offsets] * t.levels[2].max_branch)(trie)
  np.testing.assert_array_equal(out, [6, 8, 4])   # offsets [0, 2, 3] -> items 3, 4, 2


@pytest.mark.parametrize("table,sizes,match", [
    (np.zeros((0, 2), int), [2, 2], "non-empty"),
    (np.zeros((3,), int), [2], "non-empty"),
    (TABLE, [2, 3], "3 SID levels"),
    (TABLE, [2, 3, 2], r"sid_table\[0, 2\] = 2"),
    (np.asarray([[0, 1], [1, 1], [0, 1]]), [2, 2], "item 2 repeats"),
    (np.asarray([[0.5, 1.0]]), [2, 2], "integers"),
])
def test_bad_tables_are_rejected(table, sizes, match):
  with pytest.raises(ValueError, match=match):
    build_trie(table, sizes)
