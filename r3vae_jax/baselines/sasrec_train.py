"""Training and full-ranking evaluation of SASRec (`sasrec.py`).

One example per user and epoch, as in the paper: the last `max_len + 1` items of its training
sequence, each position predicting the next item. Adam (b2 0.98); every `eval_every` epochs the
validation split is ranked over all items and the epoch with the best validation
`config.train.select_metric` (under the `eval.exclude_seen` protocol) is kept; training stops
after `patience` evaluations without improvement. An epoch is one jitted `lax.scan` over its
batches, with the batch orders of all epochs drawn up front from `config.seed`.
"""
from __future__ import annotations

import functools
import time
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from r3vae_jax import evaluate
from r3vae_jax.baselines import sasrec
from r3vae_jax.data.splits import Splits, pad_histories


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


def evaluate_split(model: sasrec.SASRec, splits: Splits, split: str, ks: Sequence[int],
                   batch_size: int) -> dict[str, dict[str, float | int]]:
  """{"exclude_seen": metrics, "full_ranking": metrics} of `split` ("valid" | "test")."""
  history, seen = _eval_inputs(splits, split, model.positions.shape[0])
  targets = np.asarray(getattr(splits, f"{split}_target"))
  graphdef, params = nnx.split(model)
  ranked = _ranker(graphdef, max(ks))
  full, excl = [], []
  num_users = len(targets)
  for start in range(0, num_users, batch_size):
    take = np.minimum(np.arange(start, start + batch_size), num_users - 1)
    a, b = ranked(params, history[take], seen[take])
    n = min(batch_size, num_users - start)
    full.append(np.asarray(a)[:n])
    excl.append(np.asarray(b)[:n])
  out = {}
  for name, parts in (("exclude_seen", excl), ("full_ranking", full)):
    out[name] = {**evaluate.ranking_metrics(np.concatenate(parts), targets, ks),
                 "users": num_users}
  return out


@functools.lru_cache(maxsize=8)
def _ranker(graphdef, depth: int):
  @jax.jit
  def ranked(params, history, seen):
    return rank_both(nnx.merge(graphdef, params)(history), seen, depth)
  return ranked


def _epoch_fn(graphdef, tx: optax.GradientTransformation, capacity: int):
  """Jitted (params, opt_state, inputs, targets, order [batches, b], key) -> (params,
  opt_state, mean loss)."""

  @jax.jit
  def run_epoch(params, opt_state, inputs, targets, order, key):
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
  return run_epoch


def train_sasrec(config: ml_collections.ConfigDict, splits: Splits, num_items: int
                 ) -> tuple[sasrec.SASRec, dict]:
  """Trains on `splits.train`, keeps the best validation epoch.

  Returns:
    (the model with the best epoch's parameters, summary: best_epoch, best_valid, epochs_run,
    history [{epoch, loss, valid}], capacity, train_time_s).
  """
  c = config.sasrec
  for field in ("batch_size", "epochs", "eval_every", "patience", "eval_batch_size"):
    if not isinstance(c[field], int) or c[field] < 1:
      raise ValueError(f"config.sasrec.{field} must be a positive int, got {c[field]!r}")
  start = time.perf_counter()
  main = "exclude_seen" if config.eval.exclude_seen else "full_ranking"
  metric, ks = config.train.select_metric, tuple(config.eval.ks)
  model = sasrec.from_config(num_items, c, config.seed)
  inputs, targets = training_arrays(splits.train, c.max_len)
  pad_row = np.full((1, c.max_len), -1, np.int32)
  inputs_d = jnp.asarray(np.concatenate([inputs, pad_row]))
  targets_d = jnp.asarray(np.concatenate([targets, pad_row]))
  orders = epoch_orders(len(splits.train), c.batch_size, c.epochs, config.seed)
  capacity = batch_capacity(targets, orders)
  tx = optax.adam(c.lr, b1=0.9, b2=0.98)
  graphdef, params = nnx.split(model)
  opt_state = tx.init(params)
  run_epoch = _epoch_fn(graphdef, tx, capacity)
  key = jax.random.key(config.seed)
  best, best_params, best_epoch, stale, history = -1.0, params, 0, 0, []
  epoch = 0
  for epoch in range(1, c.epochs + 1):
    params, opt_state, mean_loss = run_epoch(params, opt_state, inputs_d, targets_d,
                                             jnp.asarray(orders[epoch - 1]),
                                             jax.random.fold_in(key, epoch))
    if epoch % c.eval_every and epoch != c.epochs:
      continue
    mean_loss = float(mean_loss)
    if not np.isfinite(mean_loss):
      raise FloatingPointError(f"sasrec: training loss {mean_loss} at epoch {epoch}")
    valid = evaluate_split(nnx.merge(graphdef, params), splits, "valid", ks, c.eval_batch_size)
    history.append({"epoch": epoch, "loss": mean_loss, "valid": valid[main]})
    logging.info("sasrec epoch %d loss %.4f valid %s=%.4f", epoch, mean_loss, metric,
                 valid[main][metric])
    if valid[main][metric] > best:
      best, best_params, best_epoch, stale = valid[main][metric], params, epoch, 0
    else:
      stale += 1
      if stale >= c.patience:
        break
  model = nnx.merge(graphdef, best_params)
  summary = {"best_epoch": best_epoch, "best_valid": history[[h["epoch"] for h in history]
                                                             .index(best_epoch)]["valid"],
             "epochs_run": epoch, "history": history, "capacity": capacity,
             "train_time_s": round(time.perf_counter() - start, 2)}
  return model, summary
