"""Recall@K / NDCG@K of a trained recommender: the constrained beam search over every user.

  evaluate_recommender(config, workdir, sid_table, splits, split="test") -> dict

The protocol: each user's history (the last `data.max_history` items) is encoded, the beam
search over the SID trie returns `eval.beam_size` items, the user's own history is dropped when
`eval.exclude_seen`, and Recall/NDCG at each K of `eval.ks` are averaged over users.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from r3vae_jax import evaluate, io, parallel
from r3vae_jax.data.splits import Splits
from r3vae_jax.decode import build_trie
from r3vae_jax.recommender import artifacts, data, fusion, ranking
from r3vae_jax.recommender.tokens import check_sid_table, layout_from_config


def eval_seen(config: ml_collections.ConfigDict, examples: data.Examples) -> np.ndarray | None:
  """The items removed from each ranking: `examples.seen` when `config.eval.exclude_seen`."""
  if not isinstance(config.eval.exclude_seen, bool):
    raise ValueError(f"config.eval.exclude_seen must be a bool, got "
                     f"{config.eval.exclude_seen!r}")
  return examples.seen if config.eval.exclude_seen else None


def ranking_inputs(examples: data.Examples, item_tokens: np.ndarray, sid_table: np.ndarray
                   ) -> dict[str, np.ndarray]:
  """{"enc_tokens": int32[U, S], "enc_mask": bool[U, S]} of every user of `examples`."""
  batch = data.make_batch(examples, np.arange(len(examples)), np.ones(len(examples)),
                          item_tokens, sid_table)
  return {"enc_tokens": batch["enc_tokens"], "enc_mask": batch["enc_mask"]}


def eval_batch_size(config: ml_collections.ConfigDict, num_users: int, mesh: Mesh) -> int:
  """`eval.batch_size` (at most the users), rounded up to split over `data` and the hosts."""
  multiple = np.lcm(mesh.shape[parallel.DATA], jax.process_count())
  size = min(config.eval.batch_size, num_users)
  return int(-(-size // multiple) * multiple)


def evaluate_recommender(config: ml_collections.ConfigDict, workdir: str,
                         sid_table: np.ndarray, splits: Splits, split: str = "test"
                         ) -> dict[str, float]:
  """Recall@K / NDCG@K of the best checkpoint on `split` ("valid" | "test").

  Writes `workdir/recommender/{split}_metrics.json` and `{split}_ranking.npz` (the ranking
  shown to each user, with its beam scores, `fusion.save_ranking`: the input of late fusion,
  `python -m r3vae_jax.fuse`).

  Returns:
    {"recall@K", "ndcg@K" for K in config.eval.ks, "users", "step", "full_ranking": the same
    metrics of the ranking with the user's seen items kept (equal to the rest without
    `eval.exclude_seen`)}.
  """
  mesh = parallel.config_mesh(config)
  table = check_sid_table(sid_table, layout_from_config(config), "recommender: sid_table")
  prog, params, ckpt_step = artifacts.restore_params(config, workdir, table, mesh)
  root = artifacts.paths(workdir).root
  metrics = score_split(config, table, splits, split,
                        lambda batch, trie: prog.generate_scored(params, batch, trie), mesh,
                        ranking_path=os.path.join(root, f"{split}_ranking.npz"))
  metrics["step"] = ckpt_step
  if jax.process_index() == 0:
    io.write_json(os.path.join(root, f"{split}_metrics.json"), metrics)
  return metrics


def score_split(config: ml_collections.ConfigDict, table: np.ndarray, splits: Splits,
                split: str, generate_scored: Callable, mesh: Mesh,
                ranking_path: str | None = None) -> dict[str, Any]:
  """Ranks every user of `split` with `generate_scored(batch, trie) -> (ids, scores)` and
  returns the metrics of `evaluate_recommender` (without "step"); with `ranking_path`, also
  writes the scored rankings there (`fusion.save_ranking`)."""
  layout = layout_from_config(config)
  examples = data.eval_examples(splits, split, config.data.max_history,
                                config.eval.max_users)
  data.check_items(examples, table.shape[0], f"recommender: {split} data")
  trie = build_trie(table, list(layout.level_sizes))
  inputs = ranking_inputs(examples, layout.item_tokens(table), table)
  ids, scores = evaluate.rank_in_batches(
      lambda batch: generate_scored(batch, trie), inputs,
      eval_batch_size(config, len(examples), mesh), mesh)
  seen, ks = eval_seen(config, examples), tuple(config.eval.ks)
  shown, shown_scores = (ids, scores) if seen is None else ranking.drop_seen(ids, seen, scores)
  metrics = ranking.metrics_of(shown, examples.target, None, ks)
  # The other protocol beside it: the beam's ranking untouched, the user's own items kept.
  metrics["full_ranking"] = ranking.metrics_of(ids, examples.target, None, ks)
  if ranking_path is not None and jax.process_index() == 0:
    fusion.save_ranking(ranking_path, shown, shown_scores, examples.target)
  return metrics
