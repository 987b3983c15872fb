"""The pieces the million-item run rests on, at a reduced size: the catalogue generator, the bulk
ICLRec parser, collision spilling, evaluation over a user subset, PD on a group subset."""
import json
import os

import numpy as np
import pytest

from benchmarks import scale_run
from r3vae_jax import quantize
from r3vae_jax.configs import validate
from r3vae_jax.data import splits as splits_lib
from r3vae_jax.data import synthetic_catalogue as sc
from r3vae_jax.data.readers import iclrec
from r3vae_jax.io import ArtifactError
from r3vae_jax.recommender import data
from r3vae_jax.tokenizer import sid_table
from r3vae_jax.tokenizer import train as tok_train

_SPEC = sc.CatalogueSpec(num_items=300, num_users=400, dim=8, num_topics=6, subtopics=3)


def test_format_lines_matches_python_formatting():
  uids, lengths = np.array([1, 10, 123456]), np.array([2, 1, 3])
  items = np.array([5, 0, 99, 1000000, 7, 42])
  expected = "1 5 0\n10 99\n123456 1000000 7 42\n"
  assert sc.format_lines(uids, lengths, items).decode() == expected


def test_catalogue_files_cover_every_item_and_are_deterministic(tmp_path):
  summary = sc.write_catalogue(str(tmp_path / "a"), _SPEC, workers=2)
  sc.write_catalogue(str(tmp_path / "b"), _SPEC, workers=1)
  text_a = (tmp_path / "a" / "sequences.txt").read_bytes()
  assert text_a == (tmp_path / "b" / "sequences.txt").read_bytes()
  vec_a, vec_b = (np.load(tmp_path / d / "vectors.npy") for d in ("a", "b"))
  np.testing.assert_array_equal(vec_a, vec_b)  # threads do not change the vectors
  assert vec_a.shape == (300, 8) and vec_a.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(vec_a, axis=1), 1.0, rtol=1e-5)
  lines = [list(map(int, l.split())) for l in text_a.decode().splitlines()]
  assert [l[0] for l in lines] == list(range(1, 401))
  lengths = np.array([len(l) - 1 for l in lines])
  assert lengths.min() >= _SPEC.min_len and lengths.max() <= _SPEC.max_len
  assert sorted({i for l in lines for i in l[1:]}) == list(range(1, 301))
  assert summary["interactions"] == lengths.sum()
  assert json.loads((tmp_path / "a" / "catalogue.json").read_text())["users"] == 400


def test_catalogue_topics_shape_vectors_and_histories(tmp_path):
  """Items of one topic are closer than items of different topics; users stay in topics."""
  rng = np.random.default_rng([_SPEC.seed, 0])
  layout = sc._layout(_SPEC, rng)  # pylint: disable=protected-access
  sc.write_catalogue(str(tmp_path), _SPEC)
  v = np.load(tmp_path / "vectors.npy")
  same = layout.topic[:, None] == layout.topic[None, :]
  cos = v @ v.T
  assert cos[same & ~np.eye(300, dtype=bool)].mean() > cos[~same].mean() + 0.2
  lines = [np.array(l.split()[1:], int) - 1 for l in
           (tmp_path / "sequences.txt").read_text().splitlines()]
  stay = np.mean([layout.topic[s[1:]] == layout.topic[s[:-1]] for s in lines][0])
  assert stay > 1.0 / _SPEC.num_topics + 0.2


def test_spec_errors_name_the_field():
  with pytest.raises(ValueError, match="min_len"):
    sc.check_spec(sc.CatalogueSpec(num_items=10, num_users=10, num_topics=2, min_len=2))
  with pytest.raises(ValueError, match="cannot cover num_items"):
    sc.check_spec(sc.CatalogueSpec(num_items=1000, num_users=10, num_topics=4))


def test_bulk_parser_equals_line_reader(tmp_path, monkeypatch):
  sc.write_catalogue(str(tmp_path), _SPEC)
  path = str(tmp_path / "sequences.txt")
  bulk = iclrec.read_user_sequences(path)
  monkeypatch.setattr(iclrec, "parse_numeric", lambda _: None)
  lines = iclrec.read_user_sequences(path)
  assert bulk.user_keys == lines.user_keys and bulk.item_keys == lines.item_keys
  assert len(bulk.sequences) == len(lines.sequences) == 400
  for a, b in zip(bulk.sequences, lines.sequences):
    assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("text", ["1 2 3\n2 4 x\n", "1 2\n1 3\n", "1 2\n2\n", "1 0 2\n",
                                  "1 02 3\n"])
def test_bulk_parser_leaves_bad_files_to_the_line_reader(tmp_path, text):
  assert iclrec.parse_numeric(text.encode()) is None
  path = tmp_path / "seq.txt"
  path.write_text(text)
  if text == "1 02 3\n":  # a leading zero is legal, only not for the bulk parser
    assert iclrec.read_user_sequences(str(path)).item_keys == ["2", "3"]
    return
  with pytest.raises(ArtifactError, match="line"):
    iclrec.read_user_sequences(str(path))


def test_spill_overflow_moves_only_the_overflow_within_the_prefix():
  # prefix (0,): tuple (0, 1) holds 5 items, max 2 -> 3 move to the free codes 0, 2, 3 in order.
  codes = np.array([[0, 1]] * 5 + [[0, 0], [1, 1], [1, 1]], np.int32)
  moved, count = quantize.spill_overflow(codes, max_collisions=2, codebook_size=4)
  assert count == 3
  np.testing.assert_array_equal(moved[:, 0], codes[:, 0])
  np.testing.assert_array_equal(moved[:, 1], [1, 1, 0, 2, 2, 0, 1, 1])
  table = sid_table.make_sid_table(codes, max_collisions=2, spill_codes=4)
  assert table[:, -1].max() < 2 and len({tuple(r) for r in table}) == 8
  with pytest.raises(ValueError, match="share the code tuple"):
    sid_table.make_sid_table(codes, max_collisions=2)


def test_spill_overflow_is_identity_without_overflow_and_refuses_a_full_prefix():
  codes = np.array([[0, 1], [0, 1], [1, 0]], np.int32)
  same, count = quantize.spill_overflow(codes, max_collisions=2, codebook_size=2)
  assert count == 0 and np.array_equal(same, codes)
  full = np.array([[0, 0]] * 3 + [[0, 1]] * 2, np.int32)   # 5 items, 2 codes x 2 places
  with pytest.raises(ValueError, match=r"prefix \(0,\)"):
    quantize.spill_overflow(full, max_collisions=2, codebook_size=2)


def test_pick_best_counts_spilled_tables_as_buildable():
  sid = scale_run.scale_config(scale_run.SCALES["tiny"], "/tmp").sid
  history = [{"epoch": 1, "max_group_size": 999, "collision_rate": 0.1,
              "reconstruction_mse": 1.0},
             {"epoch": 2, "max_group_size": 3, "collision_rate": 0.5, "reconstruction_mse": 1.0}]
  assert tok_train.pick_best(history, sid)["epoch"] == 1
  sid.spill_overflow = False
  assert tok_train.pick_best(history, sid)["epoch"] == 2


def test_eval_examples_over_a_user_subset_are_those_users_rows():
  rng = np.random.default_rng(0)
  seqs = [rng.integers(0, 50, rng.integers(3, 12)).astype(np.int32) for _ in range(103)]
  spl = splits_lib.leave_one_out(seqs)
  full = data.eval_examples(spl, "test", 5)
  part = data.eval_examples(spl, "test", 5, max_users=10)
  users = data.eval_users(103, 10)
  np.testing.assert_array_equal(users, [0, 10, 20, 30, 41, 51, 61, 72, 82, 92])
  np.testing.assert_array_equal(part.history, full.history[users])
  np.testing.assert_array_equal(part.target, full.target[users])
  assert data.eval_users(103, 0) is None and data.eval_users(103, 500) is None
  with pytest.raises(ValueError, match="max_users"):
    data.eval_users(103, -1)


def test_pd_on_a_group_subset_estimates_the_exact_value():
  rng = np.random.default_rng(0)
  vectors = rng.normal(size=(1200, 8)).astype(np.float32)
  codes = rng.integers(0, 30, (1200, 3)).astype(np.int32)
  exact = float(quantize.preference_discrimination(vectors, codes))
  same = float(quantize.preference_discrimination(vectors, codes, max_groups=1200))
  estimate = float(quantize.preference_discrimination(vectors, codes, max_groups=500))
  assert same == exact
  assert estimate != exact and abs(estimate - exact) < 0.01


def test_scale_configs_validate():
  for name, scale in scale_run.SCALES.items():
    config = scale_run.scale_config(scale, "/tmp/run")
    validate.validate(config)
    assert config.data.path == os.path.join("/tmp/run", "catalogue", "sequences.txt"), name
    assert config.eval.max_users == scale["eval_users"]
