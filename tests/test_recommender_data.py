"""Recommender input pipeline: prefix examples, SID-token batches, deterministic resumable order."""
import threading

import jax
import numpy as np
import pytest

from r3vae_jax import parallel
from r3vae_jax.data.splits import leave_one_out
from r3vae_jax.io import ArtifactError
from r3vae_jax.recommender import data, tokens

LAYOUT = tokens.TokenLayout((4, 4, 2))
SID = np.array([[0, 0, 0], [0, 0, 1], [1, 2, 0], [3, 3, 0], [2, 1, 0], [1, 1, 1]], np.int32)


def _splits():
  return leave_one_out([np.array([0, 1, 2, 3, 4]), np.array([5, 4, 3]),
                        np.array([2, 0, 1, 5, 3, 4])])


def test_every_prefix_predicts_its_next_item():
  ex = data.train_examples(_splits(), max_history=2)
  # train = [0,1,2], [5], [2,0,1,5]: 2 + 0 + 3 examples, histories capped at 2, left-padded.
  np.testing.assert_array_equal(ex.history, [[-1, 0], [0, 1], [-1, 2], [2, 0], [0, 1]])
  np.testing.assert_array_equal(ex.target, [1, 2, 0, 1, 5])
  valid = data.eval_examples(_splits(), "valid", max_history=2)
  np.testing.assert_array_equal(valid.history, [[1, 2], [-1, 5], [1, 5]])
  np.testing.assert_array_equal(valid.target, [3, 4, 3])
  with pytest.raises(ValueError, match="split"):
    data.eval_examples(_splits(), "train", 2)
  # RecBoard's window: only the last 3 training items of each user, [2,0,1,5] -> [0,1,5].
  window = data.train_examples(_splits(), max_history=2, window=3)
  np.testing.assert_array_equal(window.history, [[-1, 0], [0, 1], [-1, 0], [0, 1]])
  np.testing.assert_array_equal(window.target, [1, 2, 1, 5])
  with pytest.raises(ValueError, match="example_window"):
    data.train_examples(_splits(), 2, window=-1)


def test_batch_holds_sid_tokens_mask_and_targets():
  ex = data.train_examples(_splits(), max_history=2)
  batch = data.make_batch(ex, np.array([0, 3]), np.array([1.0, 0.0]), LAYOUT.item_tokens(SID),
                          SID)
  # Item 0 = SID (0,0,0) -> tokens (2, 6, 10); item 2 = (1,2,0) -> (3, 8, 10); pad -> PAD.
  np.testing.assert_array_equal(batch["enc_tokens"], [[0, 0, 0, 2, 6, 10], [3, 8, 10, 2, 6, 10]])
  np.testing.assert_array_equal(batch["enc_mask"], [[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(batch["targets"], SID[[1, 1]])
  np.testing.assert_array_equal(batch["weight"], [1.0, 0.0])


def test_sid_table_must_cover_every_item():
  ex = data.train_examples(_splits(), max_history=2)
  with pytest.raises(ArtifactError, match="item id 5 has no SID"):
    data.check_items(ex, num_items=5, source="train")


def test_epoch_order_is_deterministic_complete_and_padded():
  plan = data.BatchPlan(num_examples=10, global_batch=4, seed=7)
  assert plan.steps_per_epoch == 3
  for epoch in range(2):
    rows = [plan.rows(epoch * 3 + k) for k in range(3)]
    index = np.concatenate([r[0] for r in rows])
    weight = np.concatenate([r[1] for r in rows])
    assert len(index) == 12 and weight.sum() == 10
    np.testing.assert_array_equal(np.sort(index[weight > 0]), np.arange(10))
    assert (weight[-2:] == 0).all()  # the last batch is filled with weight-0 rows
  np.testing.assert_array_equal(plan.order(0), data.BatchPlan(10, 4, 7).order(0))
  assert not np.array_equal(plan.order(0), plan.order(1))
  np.testing.assert_array_equal(data.BatchPlan(10, 4, None).order(5), np.arange(10))


def test_resumed_iterator_yields_the_same_batches():
  ex = data.train_examples(_splits(), max_history=2)
  source = data.BatchSource(ex, data.BatchPlan(len(ex), 2, seed=1), LAYOUT.item_tokens(SID), SID)
  mesh = parallel.make_mesh(2, 1, jax.devices()[:2])
  full = [(i, jax.device_get(b)) for i, b in data.device_batches(source, mesh, 0, 6)]
  resumed = [(i, jax.device_get(b)) for i, b in data.device_batches(source, mesh, 4, 6)]
  assert [i for i, _ in full] == list(range(6)) and [i for i, _ in resumed] == [4, 5]
  for (_, a), (_, b) in zip(full[4:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  placed = next(iter(data.device_batches(source, mesh, 0, 1)))[1]
  assert placed["enc_tokens"].sharding.spec == jax.sharding.PartitionSpec("data")


def test_prefetcher_propagates_errors_and_stops():
  def produce(i):
    if i == 3:
      raise KeyError("boom")
    return i * i

  got = []
  with pytest.raises(KeyError, match="boom"):
    for i, value in data.Prefetcher(produce, 0, 10, size=2):
      got.append((i, value))
  assert got == [(0, 0), (1, 1), (2, 4)]
  before = threading.active_count()
  prefetcher = data.Prefetcher(lambda i: i, 0, 1000, size=1)
  next(iter(prefetcher))
  prefetcher.close()
  assert threading.active_count() <= before


def test_bucketed_plan_is_deterministic_complete_and_pads_to_the_bucket():
  lengths = np.array([1, 2, 1, 3, 5, 4, 1, 2, 6, 2, 1])
  plan = data.BucketedPlan(lengths, global_batch=3, seed=5, buckets=(2, 4, 6))
  # Buckets hold 7, 2 and 2 examples: 3 + 1 + 1 batches.
  assert plan.steps_per_epoch == 5
  for epoch in range(2):
    steps = range(epoch * 5, epoch * 5 + 5)
    index = np.concatenate([plan.rows(s)[0] for s in steps])
    weight = np.concatenate([plan.rows(s)[1] for s in steps])
    np.testing.assert_array_equal(np.sort(index[weight > 0]), np.arange(11))
    for s in steps:
      rows, w = plan.rows(s)
      items = plan.history_items(s)
      assert lengths[rows].max() <= items  # every row fits its batch's bucket
      assert items == 2 or lengths[rows[w > 0]].min() > {4: 2, 6: 4}[items]
  order = [plan.history_items(s) for s in range(10)]
  assert order[:5] != order[5:] or not np.array_equal(plan.rows(0)[0], plan.rows(5)[0])
  again = data.BucketedPlan(lengths, 3, 5, (2, 4, 6))
  for s in (0, 4, 7):  # a pure function of (seed, step)
    np.testing.assert_array_equal(again.rows(s)[0], plan.rows(s)[0])
    assert again.history_items(s) == plan.history_items(s)
  with pytest.raises(ValueError, match="largest length bucket"):
    data.BucketedPlan(lengths, 3, 5, (2, 4))
  with pytest.raises(ValueError, match="increasing"):
    data.BucketedPlan(lengths, 3, 5, (4, 2, 6))


def test_bucketed_order_is_each_bucket_cut_by_batch_plan_rows():
  """The vectorised epoch equals cutting every shuffled bucket with `BatchPlan.rows`."""
  lengths = np.random.default_rng(0).integers(1, 9, 203)
  for seed, batch in ((3, 16), (None, 7), (1, 64), (2, 300)):
    plan = data.BucketedPlan(lengths, batch, seed, (2, 5, 8))
    for epoch in (0, 1):
      rng = None if seed is None else np.random.default_rng([seed, epoch])
      index, weight, items = [], [], []
      for bucket, members in plan.members:
        order = members if rng is None else rng.permutation(members)
        cut = data.BatchPlan(order.size, batch, None)
        for k in range(cut.steps_per_epoch):
          rows, w = cut.rows(k)
          index.append(order[rows])
          weight.append(w)
          items.append(bucket)
      visit = np.arange(len(items)) if rng is None else rng.permutation(len(items))
      got = plan.order(epoch)
      np.testing.assert_array_equal(got.index, np.stack(index)[visit])
      np.testing.assert_array_equal(got.weight, np.stack(weight)[visit])
      np.testing.assert_array_equal(got.items, np.asarray(items)[visit])
      assert got.index.dtype == np.int64 and got.weight.dtype == np.float32


def test_bucketed_batches_are_the_full_batches_cut_to_the_bucket():
  ex = data.train_examples(_splits(), max_history=3)
  item_tokens = LAYOUT.item_tokens(SID)
  plan = data.make_plan(ex, global_batch=2, seed=3, length_buckets=(1,))
  assert isinstance(plan, data.BucketedPlan) and [b for b, _ in plan.members] == [1, 3]
  for off in ((), (3, 8)):  # buckets >= max_history fall away
    assert isinstance(data.make_plan(ex, 2, 3, off), data.BatchPlan)
  with pytest.raises(ValueError, match="config.train.length_buckets"):
    data.make_plan(ex, 2, 3, (0,))
  source = data.BatchSource(ex, plan, item_tokens, SID)
  for step in range(plan.steps_per_epoch):
    batch = source.host_batch(step)
    index, weight = plan.rows(step)
    full = data.make_batch(ex, index, weight, item_tokens, SID)
    width = plan.history_items(step) * LAYOUT.num_levels
    assert batch["enc_tokens"].shape == (2, width)
    np.testing.assert_array_equal(batch["enc_tokens"], full["enc_tokens"][:, -width:])
    np.testing.assert_array_equal(batch["enc_mask"], full["enc_mask"][:, -width:])
    assert full["enc_mask"][:, :-width].sum() == 0  # only padding was cut
    np.testing.assert_array_equal(batch["targets"], full["targets"])
  with pytest.raises(ValueError, match="history_items=1"):
    data.make_batch(ex, np.arange(len(ex)), np.ones(len(ex)), item_tokens, SID, 1)


def test_precompile_compiles_every_bucket_shape_once_ahead_of_training():
  from jax._src import monitoring  # pylint: disable=g-import-not-at-top
  from r3vae_jax.training import compile as compile_lib  # pylint: disable=g-import-not-at-top
  ex = data.train_examples(_splits(), max_history=3)
  plan = data.make_plan(ex, global_batch=2, seed=3, length_buckets=(1,))
  source = data.BatchSource(ex, plan, LAYOUT.item_tokens(SID), SID)
  mesh = parallel.make_mesh(1, 1, jax.devices()[:1])
  step = jax.jit(lambda state, batch: state + batch["enc_tokens"].sum())
  compiles = []

  def listen(event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)
  monitoring.register_event_duration_secs_listener(listen)
  try:
    abstract = jax.ShapeDtypeStruct((), np.int32)
    compile_lib.precompile(lambda b: step.lower(abstract, b).compile(),
                           data.bucket_batches(source, mesh), "buckets")
    assert len(compiles) == 2  # buckets of 1 and 3 items
    for s in range(plan.steps_per_epoch):
      step(np.int32(0), parallel.to_global(source.host_batch(s), mesh))
    assert len(compiles) == 2  # training compiled nothing again
  finally:
    monitoring.unregister_event_duration_listener(listen)
