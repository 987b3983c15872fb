"""Recommender input pipeline: examples -> SID-token batches -> devices, deterministic, resumable.

Training examples are every prefix of each training sequence -> its next item (histories capped
at `config.data.max_history`, left-padded). Epoch `e` visits the examples in the permutation
drawn from `(seed, e)`; global step `s` is batch `s % steps_per_epoch` of epoch
`s // steps_per_epoch`, so any step can be rebuilt from its number alone (resume = start the
iterator at the restored step). The last batch of an epoch is filled up with weight-0 rows, so
every batch has the same global size (a multiple of the mesh's `data` axis); the loss ignores
weight-0 rows. Each host builds only its rows of the global batch (`parallel.host_batch_slice`)
and a background thread prepares and transfers the next batches while the step runs.

Length bucketing (`BucketedPlan`, `config.train.length_buckets`): most histories are far shorter
than `max_history` (Beauty: 5.0 items on average, capped at 20), so each batch is drawn from
examples of one length bucket and padded only to the bucket's length (a few static shapes, one
compiled step each). Epoch `e` shuffles each bucket with `(seed, e)`, cuts it into batches
(the last one of each bucket filled with weight-0 rows) and shuffles the batches, so a global
step's batch is still a pure function of `(seed, step)`. Every example is visited once per
epoch as before; only which examples share a batch changes. Padding to the bucket leaves the
model's outputs unchanged (whole items are padded on the left and masked; position bias is
relative).
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from r3vae_jax import parallel
from r3vae_jax.data.splits import Splits, pad_histories, training_examples
from r3vae_jax.io import ArtifactError


@dataclasses.dataclass(frozen=True)
class Examples:
  """History -> next item pairs.

  Attributes:
    history: int32[E, H] item ids, left-padded with -1.
    target: int32[E] item ids.
    seen: evaluation examples only: int32[E, S] the whole history (not capped at H),
      left-padded with -1, the items `config.eval.exclude_seen` removes from the ranking.
  """
  history: np.ndarray
  target: np.ndarray
  seen: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.target.shape[0])


def train_examples(splits: Splits, max_history: int, window: int = 0) -> Examples:
  """Every prefix of every training sequence -> its next item (user order, then position).

  Args:
    splits: the leave-one-out splits.
    max_history: history cap (the last items of each prefix).
    window: > 0 keeps only the last `window` items of each training sequence first (RecBoard:
      20, so its training histories hold at most 19 items); 0 uses whole sequences.
  """
  if not isinstance(window, int) or window < 0:
    raise ValueError(f"config.train.example_window must be an int >= 0, got {window!r}")
  train = [s[-window:] for s in splits.train] if window else splits.train
  history, target = training_examples(train, max_history)
  if target.size == 0:
    raise ArtifactError("recommender data: no training examples (every training sequence has "
                        "fewer than 2 items)")
  return Examples(history, target)


def eval_examples(splits: Splits, split: str, max_history: int, max_users: int = 0
                  ) -> Examples:
  """The last `max_history` items of each user's `split` ("valid" | "test") history -> target.

  The validation history is the training sequence, the test history adds the validation item;
  `seen` keeps the whole history (the reference protocol's seen items).

  Args:
    splits: the leave-one-out splits.
    split: "valid" | "test".
    max_history: history cap.
    max_users: > 0 evaluates only this many users, evenly spaced over the user ids
      (`eval_users`; `config.eval.max_users`, for catalogues of millions of users); 0 = all.
  """
  if split not in ("valid", "test"):
    raise ValueError(f"recommender data: split must be 'valid' or 'test', got {split!r}")
  histories: Sequence[np.ndarray] = getattr(splits, f"{split}_history")
  targets = np.asarray(getattr(splits, f"{split}_target"), np.int32)
  users = eval_users(len(histories), max_users)
  if users is not None:
    histories, targets = [histories[u] for u in users], targets[users]
  longest = max((len(h) for h in histories), default=0)
  return Examples(pad_histories(histories, max_history), targets,
                  pad_histories(histories, max(longest, 1)))


def eval_users(num_users: int, max_users: int) -> np.ndarray | None:
  """int64[max_users] user ids `floor(j * num_users / max_users)`, evenly spaced and increasing;
  None (every user) when `max_users` is 0 or at least `num_users`."""
  if not isinstance(max_users, int) or max_users < 0:
    raise ValueError(f"config.eval.max_users must be an int >= 0, got {max_users!r}")
  if max_users == 0 or max_users >= num_users:
    return None
  return np.arange(max_users, dtype=np.int64) * num_users // max_users


def check_items(examples: Examples, num_items: int, source: str) -> None:
  """Raises ArtifactError when an item id has no row in the SID table."""
  top = max(int(examples.history.max()), int(examples.target.max()))
  if top >= num_items:
    raise ArtifactError(f"{source}: item id {top} has no SID (the SID table has {num_items} "
                        "rows); the SID table and the data splits come from different datasets")


def make_batch(examples: Examples, index: np.ndarray, weight: np.ndarray,
               item_tokens: np.ndarray, sid_table: np.ndarray,
               history_items: int | None = None) -> dict[str, np.ndarray]:
  """Assembles the rows `index` of `examples` as model inputs.

  Args:
    examples: the example set.
    index: int[b] example rows.
    weight: float[b] loss weight per row (0 for filler rows).
    item_tokens: int32[N+1, L+1] from `TokenLayout.item_tokens` (last row PAD).
    sid_table: int32[N, L+1].
    history_items: keep only the last this many history slots (H' below; a length bucket, no
      row may hold more items); None = all H.

  Returns:
    {"enc_tokens": int32[b, H'*(L+1)], "enc_mask": bool[b, H'*(L+1)], "targets": int32[b, L+1],
     "target_items": int32[b], "weight": float32[b]}.
  """
  history = bucket_history(examples.history[index], history_items)
  target = examples.target[index]
  enc_tokens = item_tokens[history].reshape(len(index), -1)
  enc_mask = np.repeat(history >= 0, item_tokens.shape[1], axis=1)
  return {"enc_tokens": enc_tokens.astype(np.int32), "enc_mask": enc_mask,
          "targets": sid_table[target].astype(np.int32), "target_items": target.astype(np.int32),
          "weight": np.asarray(weight, np.float32)}


def bucket_history(history: np.ndarray, history_items: int | None) -> np.ndarray:
  """The last `history_items` slots of left-padded histories int[b, H] (None: all H).

  Raises:
    ValueError: a row holds more items than `history_items`.
  """
  if history_items is None:
    return history
  if np.any(history[:, :-history_items] >= 0):
    raise ValueError(f"recommender data: a history holds more than history_items={history_items} "
                     "items")
  return history[:, -history_items:]


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """Which examples form global batch `step` (module docstring).

  Attributes:
    num_examples: E.
    global_batch: rows per step, all hosts together.
    seed: shuffling seed; None = no shuffling (evaluation order).
  """
  num_examples: int
  global_batch: int
  seed: int | None

  @property
  def steps_per_epoch(self) -> int:
    return -(-self.num_examples // self.global_batch)

  def order(self, epoch: int) -> np.ndarray:
    """int64[E] the visiting order of epoch `epoch`."""
    if self.seed is None:
      return np.arange(self.num_examples)
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def rows(self, step: int, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(index int64[global_batch], weight float32[global_batch]) of global step `step`."""
    epoch, k = divmod(step, self.steps_per_epoch)
    order = self.order(epoch) if order is None else order
    index = order[k * self.global_batch:(k + 1) * self.global_batch]
    weight = np.ones(self.global_batch, np.float32)
    short = self.global_batch - index.size
    if short:
      weight[index.size:] = 0.0
      index = np.concatenate([index, np.resize(order, short)])
    return index, weight

  def history_items(self, step: int, order: np.ndarray | None = None) -> None:
    """Every batch is padded to the full history (None); see `BucketedPlan`."""
    del step, order


@dataclasses.dataclass(frozen=True)
class EpochBatches:
  """One epoch of a `BucketedPlan`: batch k holds rows `index[k]` padded to `items[k]`.

  Attributes:
    index: int64[steps_per_epoch, global_batch] example rows.
    weight: float32[steps_per_epoch, global_batch] (0 for filler rows).
    items: int64[steps_per_epoch] history length (items) the batch is padded to.
  """
  index: np.ndarray
  weight: np.ndarray
  items: np.ndarray


class BucketedPlan:
  """Which examples form global batch `step`, each batch from one history-length bucket.

  Same interface as `BatchPlan` (`steps_per_epoch`, `order`, `rows`) plus `history_items`;
  `order(epoch)` returns that epoch's `EpochBatches` (module docstring).
  """

  def __init__(self, lengths: np.ndarray, global_batch: int, seed: int | None,
               buckets: tuple[int, ...]):
    """Args:
      lengths: int[E] history items of each example.
      global_batch: rows per step, all hosts together.
      seed: shuffling seed; None = no shuffling (buckets in order, examples in order).
      buckets: increasing history lengths (items); an example goes to the first bucket that
        holds it; the last bucket must hold the longest history.
    """
    lengths = np.asarray(lengths)
    if (not buckets or any(not isinstance(b, int) or b < 1 for b in buckets)
        or list(buckets) != sorted(set(buckets))):
      raise ValueError("recommender data: length buckets must be increasing positive ints, "
                       f"got {buckets!r}")
    if lengths.size and lengths.max() > buckets[-1]:
      raise ValueError(f"recommender data: a history of {lengths.max()} items exceeds the "
                       f"largest length bucket {buckets[-1]}")
    which = np.searchsorted(np.asarray(buckets), lengths)
    members = [(b, np.flatnonzero(which == i)) for i, b in enumerate(buckets)]
    self.members = tuple((b, m) for b, m in members if m.size)
    self.num_examples, self.global_batch, self.seed = int(lengths.size), global_batch, seed
    self.steps_per_epoch = sum(-(-m.size // global_batch) for _, m in self.members)

  def order(self, epoch: int) -> EpochBatches:
    """The batches of epoch `epoch`, in visiting order."""
    rng = None if self.seed is None else np.random.default_rng([self.seed, epoch])
    index, weight, items = [], [], []
    for bucket, members in self.members:
      order = members if rng is None else rng.permutation(members)
      rows, w = _bucket_rows(order.size, self.global_batch)
      index.append(order[rows])
      weight.append(w)
      items.append(np.full(rows.shape[0], bucket, np.int64))
    index, weight, items = (np.concatenate(x) for x in (index, weight, items))
    visit = np.arange(items.size) if rng is None else rng.permutation(items.size)
    return EpochBatches(index[visit], weight[visit], items[visit])

  def rows(self, step: int, order: EpochBatches | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """(index int64[global_batch], weight float32[global_batch]) of global step `step`."""
    epoch, k = divmod(step, self.steps_per_epoch)
    batches = self.order(epoch) if order is None else order
    return batches.index[k], batches.weight[k]

  def history_items(self, step: int, order: EpochBatches | None = None) -> int:
    """History length (items) global step `step` is padded to."""
    epoch, k = divmod(step, self.steps_per_epoch)
    batches = self.order(epoch) if order is None else order
    return int(batches.items[k])


def _bucket_rows(size: int, global_batch: int) -> tuple[np.ndarray, np.ndarray]:
  """The batches of one shuffled bucket of `size` examples, as `BatchPlan(size, global_batch,
  None).rows(k)` for every k at once: positions into the bucket's order.

  Returns:
    (int64[steps, global_batch] positions; the last batch is filled up with positions 0, 1, ...
    (wrapping), float32[steps, global_batch] weights, 0 for those filler rows).
  """
  steps = -(-size // global_batch)
  slot = np.arange(steps * global_batch, dtype=np.int64)
  real = slot < size
  rows = np.where(real, slot, (slot - size) % size)
  return (rows.reshape(steps, global_batch),
          real.astype(np.float32).reshape(steps, global_batch))


def make_plan(examples: Examples, global_batch: int, seed: int | None,
              length_buckets: tuple[int, ...] = ()) -> BatchPlan | BucketedPlan:
  """The training batch plan: `BatchPlan`, or `BucketedPlan` when `length_buckets` is set.

  Args:
    examples: the training examples (histories [E, H]).
    global_batch, seed: as `BatchPlan`.
    length_buckets: `config.train.length_buckets`, history lengths (items); H is always the
      last bucket and buckets >= H are dropped; none left (e.g. ()) = no bucketing (every
      batch padded to H).
  """
  if any(not isinstance(b, int) or b < 1 for b in length_buckets):
    raise ValueError(f"config.train.length_buckets must be positive ints, got {length_buckets!r}")
  width = examples.history.shape[1]
  buckets = tuple(sorted({b for b in length_buckets if b < width}))
  if not buckets:
    return BatchPlan(len(examples), global_batch, seed)
  lengths = (examples.history >= 0).sum(axis=1)
  return BucketedPlan(lengths, global_batch, seed, buckets + (width,))


def steps_by_width(plan: BatchPlan | BucketedPlan, epoch: int = 0) -> dict[int | None, list[int]]:
  """The global steps of epoch `epoch` grouped by the history length (items) their batch is
  padded to, in step order; one group, None (the full history), for a `BatchPlan`."""
  order, first = plan.order(epoch), epoch * plan.steps_per_epoch
  groups: dict[int | None, list[int]] = {}
  for step in range(first, first + plan.steps_per_epoch):
    groups.setdefault(plan.history_items(step, order), []).append(step)
  return groups


def bucket_batches(source: Any, mesh: Mesh) -> list[dict[str, jax.Array]]:
  """One global batch per history-length bucket of epoch 0, placed on `mesh`: each is its own
  compiled shape (`training.compile.precompile`); none for a `BatchPlan` (one shape).

  Args:
    source: has `plan` and `host_batch(step)` (`BatchSource`, DIGER's item batches).
    mesh: the run's.
  """
  if not isinstance(source.plan, BucketedPlan):
    return []
  first = {items: steps[0] for items, steps in steps_by_width(source.plan).items()}
  return [parallel.to_global(source.host_batch(s), mesh) for s in first.values()]


class PlanRows:
  """The rows of any global batch of a plan, with the epoch's order cached (a `BucketedPlan`'s
  order shuffles every bucket; steps of one epoch share it)."""

  def __init__(self, plan: BatchPlan | BucketedPlan):
    self.plan = plan
    self._cached_epoch, self._cached_order = -1, None

  def __call__(self, step: int) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(index int64[global_batch], weight float32[global_batch], the history length in items
    the batch is padded to or None for the full history) of global step `step`."""
    epoch = step // self.plan.steps_per_epoch
    if epoch != self._cached_epoch:
      self._cached_epoch, self._cached_order = epoch, self.plan.order(epoch)
    index, weight = self.plan.rows(step, self._cached_order)
    return index, weight, self.plan.history_items(step, self._cached_order)


class BatchSource:
  """Builds this host's rows of any global batch of an example set (`mesh`: the mesh the batches
  go to, which decides the rows; `parallel.host_batch_slice`)."""

  def __init__(self, examples: Examples, plan: BatchPlan | BucketedPlan,
               item_tokens: np.ndarray, sid_table: np.ndarray, mesh=None):
    self.examples, self.plan, self.mesh = examples, plan, mesh
    self.item_tokens, self.sid_table = item_tokens, sid_table
    self.plan_rows = PlanRows(plan)

  def host_batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's slice of global batch `step` (numpy)."""
    index, weight, items = self.plan_rows(step)
    rows = parallel.host_batch_slice(self.plan.global_batch, self.mesh)
    return make_batch(self.examples, index[rows], weight[rows], self.item_tokens,
                      self.sid_table, items)


class Prefetcher:
  """Runs `produce(i)` for i in [start, stop) on a background thread, `size` items ahead.

  Iterating yields `(i, produce(i))` in order; an exception in the thread is re-raised in the
  consumer. `close()` stops the thread (also called when iteration ends).
  """

  def __init__(self, produce: Callable[[int], Any], start: int, stop: int, size: int = 2):
    self._produce, self._start, self._stop_at = produce, start, stop
    self._queue: queue.Queue = queue.Queue(maxsize=max(size, 1))
    self._stopped = threading.Event()
    self._thread = threading.Thread(target=self._run, name="recommender-prefetch", daemon=True)
    self._thread.start()

  def _put(self, item: Any) -> bool:
    while not self._stopped.is_set():
      try:
        self._queue.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def _run(self) -> None:
    try:
      for i in range(self._start, self._stop_at):
        if not self._put((i, self._produce(i), None)):
          return
    except BaseException as e:  # pylint: disable=broad-except  # re-raised in the consumer.
      self._put((None, None, e))
      return
    self._put((None, None, None))

  def __iter__(self) -> Iterator[tuple[int, Any]]:
    try:
      while True:
        i, item, error = self._queue.get()
        if error is not None:
          raise error
        if i is None:
          return
        yield i, item
    finally:
      self.close()

  def close(self) -> None:
    self._stopped.set()
    self._thread.join(timeout=10)


def device_batches(source: BatchSource, mesh: Mesh, start: int, stop: int,
                   prefetch: int = 2) -> Prefetcher:
  """Global batches `start .. stop-1` placed on `mesh` (batch over `data`), prefetched."""
  return Prefetcher(lambda step: parallel.to_global(source.host_batch(step), mesh), start, stop,
                    prefetch)
