"""RPG end to end on one dataset: vectors -> OPQ SIDs -> training -> graph decoding -> JSON.

  python -m r3vae_jax.rpg.train --config=r3vae_jax/configs/rpg.py:beauty --workdir=/tmp/rpg \
      --out=/tmp/rpg.json

Training (`config.train`) on the shared training core (`r3vae_jax/training`): AdamW with linear
warm-up then cosine decay over `epochs`, gradient clipping, data-parallel over the
`config.mesh` (batch split over `data`; parameters and their moments placed like the T5
recommender's, `recommender.sharding`), validation every
`eval_every_epochs` epochs by exact full-catalogue scoring (seen items removed);
`selection.Progress` keeps the best state on `select_metric` and stops after `patience`
validations without improvement or at `epochs`; `preemption.PreemptionWatch` stops the training
on SIGTERM or once `train.stop_at` (Unix time) has passed, and the run goes on to evaluate.
Metrics go to the stage's `metrics.jsonl`. Checkpoints are not written (a run is minutes
long). The best state is then evaluated on valid and test by graph decoding and by exact scoring, each under
both protocols: the user's seen items removed from the ranking (`valid`, `test`) and the raw
ranking (`valid_full_ranking`, `test_full_ranking`).
"""
from __future__ import annotations

import functools
import json
import time
from typing import Any, Callable, NamedTuple

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from flax import nnx
from ml_collections import config_flags
import numpy as np
import optax
from jax.sharding import Mesh

from r3vae_jax import compile_cache, evaluate, io, parallel
from r3vae_jax.data import dataset, pipeline, splits as splits_lib
from r3vae_jax.quantize import sid_metrics
from r3vae_jax.recommender import sharding, state as state_lib
from r3vae_jax.rpg import data, decode, graph, model as model_lib, opq
from r3vae_jax.training import preemption, selection, stage as stage_lib


def model_config(c: Any, num_digits: int) -> model_lib.RPGConfig:
  return model_lib.RPGConfig(
      num_digits=num_digits, codebook_size=c.codebook_size, d_model=c.d_model,
      num_layers=c.num_layers, num_heads=c.num_heads, d_ff=c.d_ff, max_len=c.max_len,
      temperature=c.temperature, embed_dropout=c.embed_dropout, attn_dropout=c.attn_dropout)


def tokenize(vectors: np.ndarray, train_seqs, c: Any, seed: int) -> tuple[np.ndarray, dict]:
  """OPQ SIDs int32[N, m] of every item, fitted on the items of the training sequences, and
  their SID metrics (usage and perplexity per codebook, collisions)."""
  mask = np.zeros(vectors.shape[0], bool)
  mask[np.concatenate(train_seqs)] = True
  quantizer = opq.train(vectors, c.num_digits, c.codebook_size, c.pca_dim, seed=seed,
                        train_mask=mask, outer_iters=c.opq_outer_iters,
                        inner_iters=c.opq_inner_iters, final_iters=c.opq_final_iters)
  sids = opq.encode(quantizer, vectors)
  codes = jnp.asarray(sids)
  report = {
      "usage_per_codebook": [float(u) for u in sid_metrics.usage_per_level(
          codes, c.codebook_size)],
      "perplexity_per_codebook": [float(p) for p in sid_metrics.perplexity_per_level(
          codes, c.codebook_size)],
      "collision_rate": float(sid_metrics.collision_rate(codes)),
      "distortion": opq.distortion(quantizer, vectors),
      "fit_items": int(mask.sum()),
  }
  return sids, report


class Training(NamedTuple):
  """What the training loop holds: `bind(params)` -> model; params (pure dict) and optimizer
  state placed in their shardings; `step(params, opt_state, batch, key)` -> (params,
  opt_state, loss) under one `jax.jit` (the batch split over `data`)."""
  bind: Callable[[dict], model_lib.RPG]
  params: dict
  opt_state: Any
  step: Callable


def init_training(cfg: model_lib.RPGConfig, seed: int, tx: optax.GradientTransformation,
                  mesh: Mesh, fsdp_min_size: int = 2**18) -> Training:
  """A freshly initialised model on `mesh`: parameters placed like the T5 recommender's
  (`recommender.sharding`: heads and MLP over `model`, large tables also over `data`), their
  optimizer moments alike."""
  graphdef, template = nnx.split(model_lib.RPG(cfg, nnx.Rngs(params=seed)), nnx.Param)
  bind = functools.partial(state_lib.bind_pure, graphdef, template)
  param_sh = sharding.param_shardings(template, mesh, fsdp_min_size)
  params = jax.device_put(nnx.to_pure_dict(template), param_sh)
  opt_sh = sharding.optimizer_shardings(tx, jax.eval_shape(tx.init, params), param_sh, mesh)
  rep = parallel.replicated(mesh)

  def step(params, opt_state, batch, key):
    def loss_fn(p):
      return model_lib.loss(bind(p), batch["sids"], batch["mask"], batch["labels"], key)
    value, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  jitted = jax.jit(step, in_shardings=(param_sh, opt_sh, state_lib.batch_shardings(mesh), rep),
                   out_shardings=(param_sh, opt_sh, rep))
  return Training(bind, params, jax.jit(tx.init, out_shardings=opt_sh)(params), jitted)


def make_batch(windows: data.Windows, rows: np.ndarray, length: int, batch_size: int,
               sids: np.ndarray, host_rows: slice = slice(None)) -> dict[str, np.ndarray]:
  """Rows of `windows` padded to `length` positions and `batch_size` rows (filler rows carry
  no labels), of which this process builds `host_rows` (`parallel.host_batch_slice`):
  {"sids": int32[b, T, m], "mask": bool[b, T], "labels": int32[b, T, m]}."""
  take = np.full(batch_size, -1, np.int64)
  take[:rows.size] = rows
  take = take[host_rows]
  inputs = np.where(take[:, None] >= 0, windows.inputs[np.maximum(take, 0), :length], -1)
  labels = np.where(take[:, None] >= 0, windows.labels[np.maximum(take, 0), :length], -1)
  return {"sids": sids[np.maximum(inputs, 0)], "mask": inputs >= 0,
          "labels": np.where(labels[..., None] >= 0, sids[np.maximum(labels, 0)], -1)}


def rank_fns(bind, sids: jax.Array, adjacency: jax.Array | None, c: Any, k: int):
  """Rankers over an eval batch {"history", "exclude"?} -> int32[b, k] item ids: `exact(params,
  batch)` and `graph_rank(params, batch, key)` (jitted; the tables are arguments, not constants).
  """

  def log_probs(params, table, history):
    items = jnp.take(table, jnp.maximum(history, 0), axis=0)
    return model_lib.digit_log_probs(bind(params), items, history >= 0)

  @jax.jit
  def exact_fn(params, table, batch):
    return decode.exact_top_k(log_probs(params, table, batch["history"]), table, k,
                              batch.get("exclude"))[0]

  @jax.jit
  def graph_fn(params, table, adj, batch, key):
    return decode.graph_top_k(log_probs(params, table, batch["history"]), table, adj, key, k,
                              c.num_beams, c.propagation_steps, batch.get("exclude"))[0]

  return (lambda params, batch: exact_fn(params, sids, batch),
          lambda params, batch, key: graph_fn(params, sids, adjacency, batch, key))


def eval_inputs(spl: splits_lib.Splits, split: str, max_len: int, exclude_seen: bool
                ) -> dict[str, np.ndarray]:
  """{"history": int32[U, max_len]} and, when `exclude_seen`, {"exclude": int32[U, W]}: the
  user's whole history, padded with -1 to W = the longest test history (the longest of every
  split), so valid and test share one compiled ranker."""
  histories = getattr(spl, f"{split}_history")
  out = {"history": data.eval_histories(histories, max_len)}
  if exclude_seen:
    longest = max(len(h) for h in spl.test_history)
    out["exclude"] = splits_lib.pad_histories(histories, longest)
  return out


def run(config: Any, workdir: str, out_path: str | None = None) -> dict:
  """The whole run; the training stage's metrics go to `workdir/rpg/metrics.jsonl`, the
  results JSON to `out_path` (if given). Returns the results."""
  c = config.rpg
  t0 = time.time()
  inter = pipeline.prepare(config)
  spl = splits_lib.leave_one_out(inter.sequences)
  vectors = pipeline.item_vectors(config, inter, spl)
  t_vec = time.time()
  sids_np, sid_report = tokenize(vectors, spl.train, c, config.seed)
  t_tok = time.time()
  t = config.train
  mesh = parallel.config_mesh(config)
  parallel.check_batch_size(t.batch_size, mesh)
  host_rows = parallel.host_batch_slice(t.batch_size, mesh)

  cfg = model_config(c, sids_np.shape[1])
  windows = data.train_windows(spl.train, c.max_len)
  steps_per_epoch = len(data.epoch_batches(windows, t.length_buckets, t.batch_size,
                                           np.random.default_rng(0)))
  total = max(t.epochs * steps_per_epoch, t.warmup_steps + 1)
  schedule = optax.warmup_cosine_decay_schedule(0.0, t.lr, t.warmup_steps, total)
  tx = optax.chain(optax.clip_by_global_norm(t.clip_norm),
                   optax.adamw(schedule, weight_decay=t.weight_decay))
  bind, params, opt_state, step = init_training(cfg, config.seed, tx, mesh, t.fsdp_min_size)
  sids = jnp.asarray(sids_np)
  ks = tuple(config.eval.ks)
  width = max(ks)
  exact, _ = rank_fns(bind, sids, None, c, width)
  valid_seen = eval_inputs(spl, "valid", c.max_len, True)

  def valid_scores(p):
    ranked = evaluate.rank_in_batches(lambda b: exact(p, b), valid_seen, c.eval_batch_size, mesh)
    return evaluate.ranking_metrics(ranked, spl.valid_target, ks)

  rng = np.random.default_rng(config.seed)
  key = jax.random.PRNGKey(config.seed)
  stage = stage_lib.begin(workdir, "rpg", {"config": io.fingerprint_json(config.to_dict())})
  progress, best_params, step_count, epoch, stopped = selection.Progress(), params, 0, 0, ""
  t_train = time.time()
  with preemption.PreemptionWatch(t.stop_at) as watch:
    while not progress.finished and not stopped:
      epoch += 1
      losses = []
      for rows, length in data.epoch_batches(windows, t.length_buckets, t.batch_size, rng):
        key, sub = jax.random.split(key)
        batch = parallel.to_global(
            make_batch(windows, rows, length, t.batch_size, sids_np, host_rows), mesh)
        params, opt_state, value = step(params, opt_state, batch, sub)
        losses.append(value)
        step_count += 1
        if watch.requested(step_count):
          stopped = "preempted"
          break
      loss_value = float(np.mean(jax.device_get(losses)))
      stage.metrics.write({"kind": "train", "epoch": epoch, "step": step_count,
                           "loss": loss_value, "seconds": time.time() - t_train})
      if epoch % t.eval_every_epochs == 0 or epoch == t.epochs or stopped:
        scores = valid_scores(params)
        stage.metrics.write({"kind": "valid", "epoch": epoch, "step": step_count, **scores})
        logging.info("rpg epoch %d: loss %.4f, valid %s", epoch, loss_value, scores)
        if progress.record_validation(scores, t.select_metric, epoch, step_count, t.patience):
          best_params = params
      progress.end_epoch(epoch, t.epochs)
  stage.close()
  train_s = time.time() - t_train

  t_graph = time.time()
  table = best_params["tokens"].reshape(cfg.num_digits, cfg.codebook_size, -1)
  adjacency = jax.block_until_ready(graph.build_graph(table, sids, c.num_edges, c.graph_block))
  graph_s = time.time() - t_graph
  exact, graph_rank = rank_fns(bind, sids, adjacency, c, width)
  metrics, decode_s = {}, {}
  for split in ("valid", "test"):
    targets = getattr(spl, f"{split}_target")
    for seen_removed in (True, False):
      inputs = eval_inputs(spl, split, c.max_len, seen_removed)
      name = split if seen_removed else f"{split}_full_ranking"
      for method, fn in (("graph", lambda b: graph_rank(best_params, b, jax.random.PRNGKey(0))),
                         ("exact", lambda b: exact(best_params, b))):
        start = time.time()
        ranked = evaluate.rank_in_batches(fn, inputs, c.eval_batch_size, mesh)
        decode_s[f"{name}_{method}"] = time.time() - start
        scores = evaluate.ranking_metrics(ranked, targets, ks)
        scores["users"] = int(ranked.shape[0])
        metrics[name if method == "graph" else f"{name}_exact"] = scores

  result = {
      "kind": "experiment", "dataset": inter.name, "tokenizer": "rpg", "variant": "",
      "vectors": pipeline.vectors_label(config), "seed": config.seed,
      "device": jax.devices()[0].device_kind, "commit": io.source_commit(),
      "data_stats": dataset.stats(inter), "config": config.to_dict(),
      "metrics": metrics, "sid_metrics": sid_report,
      "train": {"best_epoch": progress.best_epoch, "best_valid": progress.best_metrics,
                "epochs_run": epoch, "steps": step_count, "steps_per_epoch": steps_per_epoch,
                "finished": stopped or progress.finished},
      "wall_time_s": {"vectors": t_vec - t0, "tokenize": t_tok - t_vec, "train": train_s,
                      "graph": graph_s, "evaluate": time.time() - t_graph - graph_s},
      "decode_with_compile_s": decode_s,
  }
  if out_path:
    io.write_json(out_path, result)
  return result


def cli() -> None:
  """Command line: --config=r3vae_jax/configs/rpg.py:<dataset> [--config.x=...] --out=FILE."""
  config = config_flags.DEFINE_config_file("config", None, "configs/rpg.py:<dataset>")
  workdir = flags.DEFINE_string("workdir", None, "run folder (training metrics)")
  out = flags.DEFINE_string("out", None, "where the results JSON goes")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    del argv
    compile_cache.enable()  # another seed or a relaunch reuses the compiled programs
    result = run(config.value, workdir.value, out.value)
    print(json.dumps({k: result["metrics"][k] for k in ("test", "test_full_ranking",
                                                        "test_exact")}))

  app.run(main)


if __name__ == "__main__":
  cli()
