"""Interactions save/load, leave-one-out splits, history padding, synthetic determinism."""
import numpy as np
import pytest

from r3vae_jax import io
from r3vae_jax.configs.default import base_config
from r3vae_jax.data import dataset, pipeline, splits, synthetic


def _inter():
  seqs = [np.array([0, 1, 2, 3], np.int32), np.array([2, 1, 0], np.int32)]
  return dataset.Interactions("toy", 4, seqs, ["a", "b", "c", "d"], ["ta", "tb", "tc", "td"])


def test_save_load_roundtrip(tmp_path):
  inter = _inter()
  dataset.save_prepared(str(tmp_path), inter)
  back = dataset.load_prepared(str(tmp_path))
  assert back.name == "toy" and back.num_items == 4
  assert [s.tolist() for s in back.sequences] == [[0, 1, 2, 3], [2, 1, 0]]
  assert back.item_text == inter.item_text and back.sequences[0].dtype == np.int32
  st = io.read_json(str(tmp_path / "data" / "stats.json"))
  assert st["users"] == 2 and st["interactions"] == 7 and st["items"] == 4
  assert st["density"] == pytest.approx(7 / 8)


def test_load_missing_and_damaged(tmp_path):
  with pytest.raises(io.ArtifactError, match="sequences.npz: file not found"):
    dataset.load_prepared(str(tmp_path))
  dataset.save_prepared(str(tmp_path), _inter())
  (tmp_path / "data" / "sequences.npz").write_bytes(b"PK\x03\x04 truncated")
  with pytest.raises(io.ArtifactError, match="sequences.npz"):
    dataset.load_prepared(str(tmp_path))


def test_validate_rejects_bad_ids_and_empty():
  inter = _inter()
  inter.sequences[1] = np.array([5], np.int32)
  with pytest.raises(io.ArtifactError, match="user 1: item id 5 outside"):
    dataset.validate(inter)
  inter.sequences[1] = np.array([], np.int32)
  with pytest.raises(io.ArtifactError, match="user 1: empty"):
    dataset.validate(inter)
  for bad, message in ((np.array([[1, 2]], np.int32), "user 1: empty or non-1-D"),
                       (np.array(1, np.int32), "user 1: empty or non-1-D"),
                       (np.array([0, -1], np.int32), "user 1: item id -1 outside")):
    inter = _inter()
    inter.sequences[1:] = [bad, np.array([9], np.int32)]  # the first bad user is named
    with pytest.raises(io.ArtifactError, match=message):
      dataset.validate(inter)
  inter = _inter()
  inter.item_text = ["x"]
  with pytest.raises(io.ArtifactError, match="item_text has 1 entries"):
    dataset.validate(inter)


def test_leave_one_out():
  s = splits.leave_one_out([np.array([5, 6, 7, 8]), np.array([1, 2, 3])])
  assert [t.tolist() for t in s.train] == [[5, 6], [1]]
  assert s.valid_target.tolist() == [7, 2] and s.test_target.tolist() == [8, 3]
  assert s.valid_target.dtype == s.test_target.dtype == np.int32
  assert [h.tolist() for h in s.test_history] == [[5, 6, 7], [1, 2]]
  assert [h.tolist() for h in s.valid_history] == [[5, 6], [1]]
  with pytest.raises(ValueError, match="user 1 has 2 items"):
    splits.leave_one_out([np.array([1, 2, 3]), np.array([1, 2])])


def test_pad_histories_truncates_and_left_pads():
  out = splits.pad_histories([np.arange(10), np.array([7]), np.array([], np.int32)], 4)
  assert out.dtype == np.int32
  assert out.tolist() == [[6, 7, 8, 9], [-1, -1, -1, 7], [-1, -1, -1, -1]]


def test_training_examples_every_prefix():
  hist, tgt = splits.training_examples([np.array([4, 5, 6]), np.array([1, 2])], 2)
  assert tgt.tolist() == [5, 6, 2]
  assert hist.tolist() == [[-1, 4], [4, 5], [-1, 1]]


def test_training_examples_match_pad_histories_of_prefixes():
  rng = np.random.default_rng(0)
  train = [rng.integers(0, 50, rng.integers(0, 25)).astype(np.int32) for _ in range(80)]
  hist, tgt = splits.training_examples(train, 6)
  prefixes = [s[:t] for s in train for t in range(1, len(s))]
  np.testing.assert_array_equal(hist, splits.pad_histories(prefixes, 6))
  np.testing.assert_array_equal(tgt, [s[t] for s in train for t in range(1, len(s))])
  assert splits.training_examples([np.array([3])], 4)[0].shape == (0, 4)


def test_synthetic_deterministic_and_shaped():
  cfg = base_config().data.synthetic
  cfg.update(dict(num_items=200, num_users=300, num_topics=8, dim=16, min_len=5, max_len=12))
  a, va = synthetic.make_synthetic(cfg)
  b, vb = synthetic.make_synthetic(cfg)
  assert np.array_equal(va, vb) and va.shape == (200, 16) and va.dtype == np.float32
  assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))
  assert all(5 <= len(s) <= 12 for s in a.sequences) and len(a.sequences) == 300
  assert a.item_titles[0].startswith("topic ") and len(a.item_text) == 200
  dataset.validate(a)
  cfg.seed = 1
  c, _ = synthetic.make_synthetic(cfg)
  assert not all(np.array_equal(x, y) for x, y in zip(a.sequences, c.sequences))


def test_synthetic_popularity_skew_and_topic_coherence():
  cfg = base_config().data.synthetic
  inter, vecs = synthetic.make_synthetic(cfg)
  counts = np.bincount(np.concatenate(inter.sequences), minlength=inter.num_items)
  top = np.sort(counts)[::-1]
  assert top[: len(top) // 10].sum() > 0.3 * counts.sum()   # top 10% items hold > 30% of events
  # consecutive items are much closer in vector space than random pairs
  seq = np.concatenate([np.stack([s[:-1], s[1:]], 1) for s in inter.sequences])
  unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
  consecutive = np.mean(np.sum(unit[seq[:, 0]] * unit[seq[:, 1]], 1))
  rng = np.random.default_rng(0)
  pairs = rng.integers(0, inter.num_items, (5000, 2))
  random = np.mean(np.sum(unit[pairs[:, 0]] * unit[pairs[:, 1]], 1))
  assert consecutive > random + 0.4


def test_synthetic_rejects_bad_config():
  cfg = base_config().data.synthetic
  cfg.min_len = 2
  with pytest.raises(ValueError, match="min_len"):
    synthetic.make_synthetic(cfg)


def test_pipeline_synthetic_default():
  config = base_config()
  inter = pipeline.prepare(config)
  s = splits.leave_one_out(inter.sequences)
  vecs = pipeline.item_vectors(config, inter, s)
  assert vecs.shape == (config.data.synthetic.num_items, config.data.synthetic.dim)


def test_item_prefix_keeps_order_and_drops_short_users():
  got = splits.item_prefix([np.array([0, 5, 1, 2]), np.array([7, 1, 0]), np.array([2, 1, 0])], 3)
  assert [g.tolist() for g in got] == [[0, 1, 2], [2, 1, 0]]
