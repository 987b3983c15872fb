"""Training and full-ranking evaluation of SASRec (`sasrec.py`) on the training core.

One example per user and epoch, as in the paper: the last `max_len + 1` items of its training
sequence, each position predicting the next item. Adam (b2 0.98); every `eval_every` epochs the
validation split is ranked over all items and the epoch with the best validation
`config.train.select_metric` (under the `eval.exclude_seen` protocol) is kept
(`training.selection.Progress`, one per seed); training stops after `patience` validations
without improvement. An epoch is one jitted `lax.scan` over its batches, with the batch orders
of all epochs drawn up front from the seed. Records go to `workdir/sasrec/metrics.jsonl`
(`training.stage`); SIGTERM or `config.train.stop_at` ends training at the next epoch, and the
best epoch so far is evaluated (`training.preemption`). A row trains in about a minute on one
GPU, so there are no checkpoints: a stopped row is not resumed.
"""
from __future__ import annotations

import functools
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from r3vae_jax import evaluate, io
from r3vae_jax.baselines import sasrec
from r3vae_jax.data.splits import Splits, pad_histories
from r3vae_jax.training import preemption, selection
from r3vae_jax.training import stage as stage_lib


def training_arrays(train: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Per user: inputs int32[U, max_len] (the last items before each target, -1 padded left) and
  targets int32[U, max_len] (the item after each input, -1 where the input is padding)."""
  seqs = pad_histories(train, max_len + 1)
  inputs = seqs[:, :-1]
  return inputs, np.where(inputs >= 0, seqs[:, 1:], -1).astype(np.int32)


def epoch_orders(num_users: int, batch_size: int, epochs: int, seed: int) -> np.ndarray:
  """int32[epochs, batches, batch_size]: a fresh permutation of the users per epoch; the last
  batch is filled with `num_users` (an all-padding row appended to the arrays)."""
  batches = -(-num_users // batch_size)
  rng = np.random.default_rng(seed)
  out = np.full((epochs, batches * batch_size), num_users, np.int32)
  for e in range(epochs):
    out[e, :num_users] = rng.permutation(num_users)
  return out.reshape(epochs, batches, batch_size)


def batch_capacity(targets: np.ndarray, orders: np.ndarray, multiple: int = 128) -> int:
  """The most targets any batch of `orders` holds, rounded up to `multiple` (`sasrec.loss`)."""
  per_user = np.append((targets >= 0).sum(1), 0)
  most = int(per_user[orders].sum(-1).max())
  return max(multiple, -(-most // multiple) * multiple)


def _eval_inputs(splits: Splits, split: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  histories = getattr(splits, f"{split}_history")
  longest = max(len(h) for h in histories)
  return pad_histories(histories, max_len), pad_histories(histories, max(longest, 1))


def rank_both(scores: jax.Array, seen: jax.Array, depth: int) -> tuple[jax.Array, jax.Array]:
  """float[b, N] scores, int[b, S] seen items (-1 = pad) -> (untouched, seen removed) top
  `depth` item ids, int32[b, depth] each."""
  rows = jnp.arange(scores.shape[0])[:, None]
  masked = scores.at[rows, jnp.where(seen >= 0, seen, scores.shape[1])].set(-jnp.inf,
                                                                          mode="drop")
  return jax.lax.top_k(scores, depth)[1], jax.lax.top_k(masked, depth)[1]


def evaluate_split(graphdef, params, splits: Splits, split: str, ks: Sequence[int],
                   max_len: int, batch_size: int) -> list[dict[str, dict[str, float | int]]]:
  """Per seed of the stacked `params` (leading seed axis): {"exclude_seen": metrics,
  "full_ranking": metrics} of `split` ("valid" | "test"), histories cut to `max_len`."""
  history, seen = _eval_inputs(splits, split, max_len)
  targets = np.asarray(getattr(splits, f"{split}_target"))
  ranked = _ranker(graphdef, max(ks))
  full, excl = [], []
  num_users = len(targets)
  for start in range(0, num_users, batch_size):
    take = np.minimum(np.arange(start, start + batch_size), num_users - 1)
    a, b = ranked(params, history[take], seen[take])
    n = min(batch_size, num_users - start)
    full.append(np.asarray(a)[:, :n])
    excl.append(np.asarray(b)[:, :n])
  full, excl = np.concatenate(full, 1), np.concatenate(excl, 1)
  return [{name: {**evaluate.ranking_metrics(r[s], targets, ks), "users": num_users}
           for name, r in (("exclude_seen", excl), ("full_ranking", full))}
          for s in range(full.shape[0])]


@functools.lru_cache(maxsize=8)
def _ranker(graphdef, depth: int):
  def ranked(params, history, seen):
    return rank_both(nnx.merge(graphdef, params)(history), seen, depth)
  return jax.jit(jax.vmap(ranked, in_axes=(0, None, None)))


def _optimizer(lr: float) -> optax.GradientTransformation:
  return optax.adam(lr, b1=0.9, b2=0.98)


@functools.lru_cache(maxsize=8)
def _epoch_fn(graphdef, lr: float, capacity: int):
  """Jitted epoch of every seed side by side: (params, opt_state, inputs, targets, order,
  key) -> (params, opt_state, mean loss [S]); params, opt_state, order [S, batches, b] and
  key [S] carry a leading seed axis, the data is shared. Cached: runs of one shape reuse it."""
  tx = _optimizer(lr)

  def one_seed(params, opt_state, inputs, targets, order, key):
    def step(carry, xs):
      params, opt_state = carry
      idx, k = xs

      def f(p):
        return sasrec.loss(nnx.merge(graphdef, p), inputs[idx], targets[idx], k, capacity)
      value, grads = jax.value_and_grad(f)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), value
    keys = jax.random.split(key, order.shape[0])
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), (order, keys))
    return params, opt_state, jnp.mean(losses)
  return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, None, None, 0, 0)))


def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def train_sasrec(config: ml_collections.ConfigDict, workdir: str, splits: Splits,
                 num_items: int) -> tuple[nnx.GraphDef, nnx.State, list[dict]]:
  """Trains `config.sasrec.num_seeds` models (seeds `config.seed`, `config.seed + 1`, ...)
  side by side on `splits.train` (one vmapped program); each keeps its own best validation
  epoch. Training stops once every seed has gone `patience` validations without improvement,
  after `epochs`, or when asked to (module docstring).

  Returns:
    (the model's graph, the best epoch's parameters of every seed stacked on a leading axis,
    per seed a summary: seed, best_epoch, best_valid, epochs_run, finished, history [{epoch,
    loss, valid}], capacity, seeds_trained_together, train_time_s).
  """
  c = config.sasrec
  for field in ("batch_size", "epochs", "eval_every", "patience", "eval_batch_size",
                "num_seeds"):
    if not isinstance(c[field], int) or c[field] < 1:
      raise ValueError(f"config.sasrec.{field} must be a positive int, got {c[field]!r}")
  stage = stage_lib.begin(workdir, "sasrec", {"config": io.fingerprint_json(c.to_dict())})
  main = "exclude_seen" if config.eval.exclude_seen else "full_ranking"
  metric, ks = config.train.select_metric, tuple(config.eval.ks)
  seeds = [config.seed + s for s in range(c.num_seeds)]
  graphdef, _ = nnx.split(sasrec.from_config(num_items, c, seeds[0]))
  params = _stack([nnx.split(sasrec.from_config(num_items, c, s))[1] for s in seeds])
  inputs, targets = training_arrays(splits.train, c.max_len)
  pad_row = np.full((1, c.max_len), -1, np.int32)
  inputs_d = jnp.asarray(np.concatenate([inputs, pad_row]))
  targets_d = jnp.asarray(np.concatenate([targets, pad_row]))
  orders = np.stack([epoch_orders(len(splits.train), c.batch_size, c.epochs, s) for s in seeds])
  capacity = batch_capacity(targets, orders)
  opt_state = jax.vmap(_optimizer(c.lr).init)(params)
  run_epoch = _epoch_fn(graphdef, float(c.lr), capacity)
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  progress = [selection.Progress() for _ in seeds]
  best_params, history = params, [[] for _ in seeds]
  epoch, stopped = 0, False
  with preemption.PreemptionWatch(config.train.stop_at) as watch:
    for epoch in range(1, c.epochs + 1):
      params, opt_state, losses = run_epoch(
          params, opt_state, inputs_d, targets_d, jnp.asarray(orders[:, epoch - 1]),
          jax.vmap(jax.random.fold_in, (0, None))(keys, epoch))
      stopped = watch.requested(epoch)
      if epoch % c.eval_every and epoch != c.epochs and not stopped:
        continue
      losses = np.asarray(losses)
      if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"sasrec: training loss {losses.tolist()} at epoch {epoch}")
      valid = evaluate_split(graphdef, params, splits, "valid", ks, c.max_len,
                             c.eval_batch_size)
      improved = np.zeros(len(seeds), bool)
      for s, (seed, v) in enumerate(zip(seeds, valid)):
        history[s].append({"epoch": epoch, "loss": float(losses[s]), "valid": v[main]})
        stage.metrics.write({"kind": "valid", "seed": seed, "epoch": epoch,
                             "loss": float(losses[s]), **v[main]})
        logging.info("sasrec seed %d epoch %d loss %.4f valid %s=%.4f", seed, epoch, losses[s],
                     metric, v[main][metric])
        improved[s] = progress[s].record_validation(v[main], metric, epoch, epoch, c.patience)
        progress[s].end_epoch(epoch, c.epochs)
      best_params = jax.tree.map(
          lambda b, p: jnp.where(improved.reshape((-1,) + (1,) * (p.ndim - 1)), p, b),
          best_params, params)
      if stopped or all(p.finished for p in progress):
        break
  stage.close()
  summaries = [{"seed": seed, "best_epoch": p.best_epoch, "best_valid": p.best_metrics,
                "epochs_run": epoch, "finished": "stopped" if stopped else p.finished,
                "history": history[s], "capacity": capacity,
                "seeds_trained_together": len(seeds), "train_time_s": round(stage.elapsed(), 2)}
               for s, (seed, p) in enumerate(zip(seeds, progress))]
  return graphdef, best_params, summaries
