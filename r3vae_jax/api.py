"""Recommendations from a trained workdir: load once, answer many queries.

  from r3vae_jax.api import Recommender
  rec = Recommender.load("/tmp/r3vae")            # config, SID table, best checkpoint, trie
  history = rec.user_history(0)                   # item ids, oldest first
  for item, score in rec.recommend(history, k=10):
    print(item, round(score, 3), rec.title(item))

`Recommender.load` restores the best recommender checkpoint (by validation
`config.train.select_metric`) with `recommender.artifacts.restore_params`, builds the device trie of
the SID table once and compiles the constrained beam search once per padded batch size (powers of
two), so later queries cost one device call each. A history is encoded exactly as the evaluation
path encodes it (`recommender.data.make_batch`: the last `config.data.max_history` items, SID
tokens, left padding), so `recommend(splits.test_history[u])` is the ranking that
`--mode=evaluate` scores for user u. The score of an item is the log-probability of its SID under
the model, restricted to valid SIDs (the beam search's summed masked log-softmax). One process
(any number of local devices); queries are not split across hosts.

`FusedRecommender.load([workdir_a, workdir_b])` answers the same queries with several runs of one
dataset (other seeds or tokenizers) by late fusion, the mixture of their beams
(`recommender/fusion.py`); `--mode=recommend --fuse=DIR,...` prints its lists.
"""
from __future__ import annotations

import abc
import os
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from r3vae_jax import io, parallel
from r3vae_jax.data import dataset
from r3vae_jax.data.dataset import Interactions
from r3vae_jax.data.splits import pad_histories
from r3vae_jax.decode import build_trie
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.recommender import fusion, ranking
from r3vae_jax.recommender import artifacts as rec_artifacts
from r3vae_jax.recommender.tokens import check_sid_table, layout_from_config
from r3vae_jax.tokenizer import sid_table as sid_table_lib

CONFIG_FILES = ("config.json", "results.json")  # where a run leaves its config, in that order
HISTORY_SPLITS = ("all", "valid", "test")


def saved_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config a run in `workdir` was made with (`config.json`, else `results.json`), or None."""
  for name in CONFIG_FILES:
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      content = io.read_json(path)
      config = content.get("config") if name == "results.json" else content
      if not isinstance(config, dict) or "recommender" not in config:
        raise io.ArtifactError(f"{path}: expected a config dict with a 'recommender' section")
      return ml_collections.ConfigDict(config)
  return None


def bucket_size(num_rows: int, data_shards: int, max_rows: int) -> int:
  """Rows of the padded batch for `num_rows` queries: a power of two times the `data` size.

  Few distinct sizes means few compilations; at most `max_rows` rounded up to the data axis.
  """
  size = data_shards
  while size < num_rows and size < max_rows:
    size *= 2
  return -(-min(size, max(max_rows, data_shards)) // data_shards) * data_shards


class _TopK(abc.ABC):
  """`recommend` / `recommend_batch` over a subclass's `shown(histories)` and `beam_size`."""

  beam_size: int

  @abc.abstractmethod
  def shown(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(int32[U, beam_size] item ids shown best first, -1 = empty; float32[U, beam_size]
    their log-probabilities)."""

  def recommend(self, history: Sequence[int], k: int = 10) -> list[tuple[int, float]]:
    """The top-`k` items after `history` (item ids, oldest first), best first.

    With `config.eval.exclude_seen` (the paper protocol) items already in `history` are left
    out, as in evaluation.

    Returns:
      [(item_id, score)] of length <= k (shorter only when fewer than k unseen items are in the
      beam), distinct items, scores (log-probabilities) non-increasing.
    """
    return self.recommend_batch([history], k)[0]

  def recommend_batch(self, histories: Sequence[Sequence[int]], k: int = 10
                      ) -> list[list[tuple[int, float]]]:
    """`recommend` for many histories at once (one device call per padded batch)."""
    if not 1 <= k <= self.beam_size:
      raise ValueError(f"recommend: k={k} must be in [1, beam_size={self.beam_size}]; load with "
                       "a larger beam_size for longer lists")
    if not histories:
      return []
    ids, scores = self.shown(histories)
    return [[(int(i), float(s)) for i, s in zip(row_ids[:k], row_scores[:k]) if i >= 0]
            for row_ids, row_scores in zip(ids, scores)]


def seen_items(histories: Sequence[Sequence[int]]) -> np.ndarray:
  """int64[U, max length]: the histories right-padded with -1 (`ranking.drop_seen`'s `seen`)."""
  width = max(len(h) for h in histories)
  seen = np.full((len(histories), width), -1, np.int64)
  for u, history in enumerate(histories):
    seen[u, :len(history)] = np.asarray(history, np.int64).reshape(-1)
  return seen


class Recommender(_TopK):
  """A trained recommender in memory; see the module docstring. Build it with `load`."""

  def __init__(self, config: ml_collections.ConfigDict, inter: Interactions,
               sid_table: np.ndarray, params: dict, generate_scored: Callable,
               mesh: Mesh, beam_size: int, checkpoint_step: int):
    """`generate_scored`: `ModelPrograms.generate_scored` of `config` (beam `beam_size`)."""
    self.config = config
    self.interactions = inter
    self.sid_table = sid_table
    self.beam_size = beam_size
    self.checkpoint_step = checkpoint_step
    self._params = params
    self._mesh = mesh
    layout = layout_from_config(config)
    self._item_tokens = layout.item_tokens(sid_table)
    self._trie = jax.device_put(build_trie(sid_table, list(layout.level_sizes)),
                                parallel.replicated(mesh))
    self._generate = generate_scored

  @classmethod
  def load(cls, workdir: str, config: ml_collections.ConfigDict | None = None, *,
           beam_size: int | None = None, which: str = "best") -> "Recommender":
    """Loads everything a query needs from a trained `workdir`.

    Args:
      workdir: a run folder after `--mode=train` (data/, tokenizer/sid_table.npy,
        recommender/checkpoints/).
      config: used only when the workdir holds no saved config (`CONFIG_FILES`); it must be the
        config the run was trained with (the checkpoint's fingerprints are checked).
      beam_size: beams per query (default `config.eval.beam_size`); bounds `k`.
      which: "best" (by validation metric) or "latest" checkpoint.

    Raises:
      ArtifactError: missing or mismatched files (the message names the file).
      ValueError: no config anywhere, or a bad beam_size.
    """
    config = saved_config(workdir) or config
    if config is None:
      raise ValueError(f"Recommender.load: {workdir} holds none of {CONFIG_FILES}; pass the "
                       "config the run was trained with")
    beam = config.eval.beam_size if beam_size is None else beam_size
    if not isinstance(beam, int) or beam < 1:
      raise ValueError(f"Recommender.load: beam_size must be a positive int, got {beam!r}")
    inter = dataset.load_prepared(workdir)
    table, _ = sid_table_lib.load_sid_table(workdir)
    table = check_sid_table(table, layout_from_config(config),
                            os.path.join(workdir, sid_table_lib.SID_DIR, sid_table_lib.TABLE_FILE))
    if table.shape[0] != inter.num_items:
      raise io.ArtifactError(f"{workdir}: the SID table has {table.shape[0]} rows but data/ has "
                             f"{inter.num_items} items; they come from different runs")
    config = config.copy_and_resolve_references()
    config.eval.beam_size = beam  # model_programs builds (and caches) the decoder of this beam
    mesh = parallel.config_mesh(config)
    prog, params, step = rec_artifacts.restore_params(config, workdir, table, mesh, which)
    return cls(config, inter, table, params, prog.generate_scored, mesh, beam, step)

  # ---- catalogue -------------------------------------------------------------------------

  @property
  def num_items(self) -> int:
    return self.interactions.num_items

  @property
  def num_users(self) -> int:
    return len(self.interactions.sequences)

  def title(self, item: int) -> str:
    """The item's display title (`"item <id>"` when the dataset has no titles)."""
    self._check_item(item, "title")
    titles = self.interactions.item_titles
    return titles[item] if titles is not None else f"item {item}"

  def user_history(self, user: int, split: str = "all") -> list[int]:
    """A user's item ids, oldest first.

    Args:
      user: index of the user in the prepared dataset (0 .. num_users-1).
      split: "all" (every interaction: what to recommend next), "test" (all but the last item:
        the history the test metrics score) or "valid" (all but the last two).
    """
    if not 0 <= user < self.num_users:
      raise ValueError(f"user_history: user {user} outside [0, {self.num_users})")
    if split not in HISTORY_SPLITS:
      raise ValueError(f"user_history: split must be one of {HISTORY_SPLITS}, got {split!r}")
    seq = self.interactions.sequences[user]
    cut = {"all": len(seq), "test": len(seq) - 1, "valid": len(seq) - 2}[split]
    return [int(i) for i in seq[:cut]]

  def _check_item(self, item: int, where: str) -> None:
    if not isinstance(item, (int, np.integer)) or not 0 <= item < self.num_items:
      raise ValueError(f"{where}: item id {item!r} outside [0, {self.num_items})")

  # ---- queries ---------------------------------------------------------------------------

  def shown(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """`rank` with each history's own items dropped when `config.eval.exclude_seen` (the
    protocol; as evaluation drops them): (int32[U, beam_size] ids best first, -1 after the
    kept ones; float32[U, beam_size] their log-probabilities, -inf at empty slots)."""
    ids, scores = self.rank(histories)
    if not self.config.eval.exclude_seen:
      return ids, scores
    return ranking.drop_seen(ids, seen_items(histories), scores)

  def rank(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The raw beam output: all `beam_size` items of every history, best first.

    Returns:
      (item_ids int32[U, beam_size], -1 = empty slot; scores float32[U, beam_size]).

    Raises:
      ValueError: an empty history, or an item id outside [0, num_items) (names the history).
    """
    padded = self._padded(histories)
    examples = rec_data.Examples(padded, np.zeros(len(histories), np.int32))
    shards = self._mesh.shape[parallel.DATA]
    size = bucket_size(len(histories), shards, self.config.eval.batch_size)
    ids, scores = [], []
    for start in range(0, len(histories), size):
      stop = min(start + size, len(histories))
      take = np.minimum(np.arange(start, start + size), stop - 1)  # pad with the last query
      batch = rec_data.make_batch(examples, take, np.ones(size), self._item_tokens,
                                  self.sid_table)
      inputs = {"enc_tokens": batch["enc_tokens"], "enc_mask": batch["enc_mask"]}
      out_ids, out_scores = self._generate(self._params, parallel.to_global(inputs, self._mesh),
                                           self._trie)
      ids.append(np.asarray(out_ids)[:stop - start])
      scores.append(np.asarray(out_scores)[:stop - start])
    return np.concatenate(ids).astype(np.int32), np.concatenate(scores).astype(np.float32)

  def _padded(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
    """Validated histories -> int32[U, max_history] (last items, left-padded with -1)."""
    arrays = [np.asarray(h).reshape(-1) for h in histories]
    for u, a in enumerate(arrays):
      if a.size == 0:
        raise ValueError(f"recommend: history {u} is empty; at least one item id is needed")
      if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"recommend: history {u} must hold integer item ids, got {a.dtype}")
    flat = np.concatenate(arrays)
    bad = (flat < 0) | (flat >= self.num_items)
    if bad.any():
      pos = int(np.argmax(bad))
      u = int(np.searchsorted(np.cumsum([a.size for a in arrays]), pos, side="right"))
      raise ValueError(f"recommend: history {u} has item id {flat[pos]} outside "
                       f"[0, {self.num_items})")
    return pad_histories([a.astype(np.int32) for a in arrays], self.config.data.max_history)


class FusedRecommender(_TopK):
  """Late fusion at query time: several trained workdirs of one dataset answer together.

  Each member ranks the histories (`Recommender.shown`: beam, seen items dropped per its
  protocol) and their lists are mixed, p(item) = sum_m w_m p_m(item) (`fusion.mix`), so
  `shown(test histories)` is the ranking `python -m r3vae_jax.fuse` scores from the members'
  saved test rankings. Members may differ in tokenizer, seed and SID table; they must share the
  prepared dataset (same users, items and sequences). A query costs one beam search per member.
  """

  def __init__(self, members: Sequence[Recommender], weights: Sequence[float] | None = None):
    """`members`: loaded recommenders of one dataset; `weights`: one per member (default
    uniform; normalised)."""
    if not members:
      raise ValueError("FusedRecommender: needs at least one member")
    first = members[0].interactions
    for m, member in enumerate(members[1:], 1):
      other = member.interactions
      if (other.num_items != first.num_items or len(other.sequences) != len(first.sequences)
          or any(not np.array_equal(a, b) for a, b in zip(other.sequences, first.sequences))):
        raise io.ArtifactError(f"FusedRecommender: member {m} was trained on other data "
                               f"({other.name}: {len(other.sequences)} users, {other.num_items} "
                               f"items) than member 0 ({first.name}: {len(first.sequences)} "
                               f"users, {first.num_items} items); fuse runs of one dataset")
    protocols = [bool(member.config.eval.exclude_seen) for member in members]
    if len(set(protocols)) > 1:
      raise ValueError(f"FusedRecommender: the members' config.eval.exclude_seen differ "
                       f"({protocols}); seen items must be dropped by all or none")
    self.members = list(members)
    self.weights = fusion.normalized_weights(weights, len(members))
    self.beam_size = max(member.beam_size for member in members)

  @classmethod
  def load(cls, workdirs: Sequence[str], weights: Sequence[float] | None = None, **kwargs
           ) -> "FusedRecommender":
    """`Recommender.load` of every workdir (keyword arguments go to each), then fused."""
    return cls([Recommender.load(w, **kwargs) for w in workdirs], weights)

  @property
  def interactions(self) -> Interactions:
    return self.members[0].interactions

  @property
  def num_items(self) -> int:
    return self.members[0].num_items

  @property
  def num_users(self) -> int:
    return self.members[0].num_users

  def title(self, item: int) -> str:
    return self.members[0].title(item)

  def user_history(self, user: int, split: str = "all") -> list[int]:
    return self.members[0].user_history(user, split)

  def shown(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The mixture of the members' `shown` lists: (int32[U, beam_size] ids best first, -1
    after a user's distinct items; float32[U, beam_size] log p(item) under the mixture)."""
    lists = [member.shown(histories) for member in self.members]
    return fusion.mix([ids for ids, _ in lists], [scores for _, scores in lists], self.weights,
                      self.beam_size)
