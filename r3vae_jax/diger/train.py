"""DIGER trainer: the RQ-VAE tokenizer and the T5 recommender trained jointly, end to end.

  python -m r3vae_jax.main --config=r3vae_jax/configs/default.py:diger --workdir=DIR --mode=all

Sections, top to bottom: config checks, pretrained tokenizer, input pipeline, model & optimizer,
shard & transfer, update step, SID table & evaluation, checkpoint/resume, train loop, save.

* Starts from the RQ-VAE of `config.diger.pretrain` (its best parameters in
  `workdir/tokenizer/<pretrain>_ckpt`; fitted first when absent).
* One jitted, sharded step (batch over `data`; recommender parameters by
  `recommender.sharding`, tokenizer, sigma and the usage EMA replicated) computes
  `joint.joint_loss` and applies one `optax.multi_transform` with three groups: tokenizer
  (`diger.tokenizer_lr`), recommender (`train.lr`, warmup + schedule) and sigma
  (`diger.sigma_lr`), after a global-norm clip.
* After every epoch the SID table is recomputed (greedy codes + collision tokens), its code usage
  per level, collision rate and sigma are logged, and validation NDCG@10 is measured by the
  constrained beam search over that table. Early stopping on `train.select_metric` with
  `train.patience`; the best epoch's tokenizer, recommender, sigma and SID table are saved
  together in `workdir/diger/` and the table also via `tokenizer.sid_table.save_sid_table`.
* Every epoch is checkpointed (orbax, `workdir/diger/ckpt`); a rerun resumes from the latest one.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from r3vae_jax import checkpoint
from r3vae_jax import evaluate
from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax import quantize
from r3vae_jax.data.splits import Splits
from r3vae_jax.decode import beam_search
from r3vae_jax.decode import build_trie
from r3vae_jax.diger import joint
from r3vae_jax.diger import noise
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.recommender import model as rec_model
from r3vae_jax.recommender import sharding as rec_sharding
from r3vae_jax.tokenizer import api as tok_api
from r3vae_jax.tokenizer import sid_table as sid_lib
from r3vae_jax.tokenizer import train as tok_train

DIGER_DIR = "diger"
GROUPS = ("tokenizer", "recommender", "sigma")


# ---- config checks -----------------------------------------------------------------------

def joint_config(config: ml_collections.ConfigDict) -> joint.JointConfig:
  """The static hyperparameters of the joint loss, checked."""
  d = config.diger
  noise.check_decay(d.decay)
  if d.pretrain != "rqvae":
    raise ValueError(f"config.diger.pretrain: DIGER starts from an RQ-VAE; got {d.pretrain!r}")
  if d.tau <= 0 or d.noise_scale < 0 or d.sigma_lambda <= 0:
    raise ValueError(f"config.diger: tau and sigma_lambda must be > 0 and noise_scale >= 0; "
                     f"got tau={d.tau}, sigma_lambda={d.sigma_lambda}, "
                     f"noise_scale={d.noise_scale}")
  return joint.JointConfig(decay=d.decay, tau=float(d.tau), noise_scale=float(d.noise_scale),
                           hot_factor=float(d.hot_factor), sigma_lambda=float(d.sigma_lambda),
                           beta=float(config[d.pretrain].beta),
                           recon_weight=float(d.recon_weight), vq_weight=float(d.vq_weight),
                           detach=bool(d.detach_codes))


def _pretrain_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c = config.copy_and_resolve_references()
  c.tokenizer = config.diger.pretrain
  return c


# ---- pretrained tokenizer ----------------------------------------------------------------

def load_pretrained_tokenizer(config: ml_collections.ConfigDict, vectors: np.ndarray,
                              workdir: str) -> nnx.Module:
  """The RQ-VAE with the best parameters of its pretraining; fits it first when absent.

  Reads the checkpoint `tokenizer/train.py` writes (`workdir/tokenizer/<name>_ckpt`, tree
  {"state": {"params", "opt"}, "best_params"}).
  """
  pre = _pretrain_config(config)
  name = pre.tokenizer
  ckpt_dir = os.path.join(workdir, "tokenizer", f"{name}_ckpt")
  if not _has_checkpoint(ckpt_dir):
    logging.info("diger: no pretrained %s in %s; fitting it first", name, ckpt_dir)
    tok_api.fit_tokenizer(pre, vectors, workdir)
  model = tok_train.build_model(pre, vectors.shape[1], pre.seed)
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  c = pre[name]
  tx = tok_train._optimizer(c.lr, c.weight_decay)  # pylint: disable=protected-access  # layout.
  tree = {"state": {"params": params, "opt": tx.init(params)}, "best_params": params}
  manager = checkpoint.make_manager(ckpt_dir, keep=c.checkpoint_keep, async_save=False)
  restored = checkpoint.restore(manager, checkpoint.abstract_like(tree))
  if restored is None:
    raise io.ArtifactError(f"{ckpt_dir}: no readable {name} checkpoint to start DIGER from")
  _, tree, _ = restored
  return nnx.merge(graphdef, tree["best_params"])


def _has_checkpoint(directory: str) -> bool:
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


# ---- model & optimizer -------------------------------------------------------------------

def _recommender_schedule(t: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup to `train.lr`, then cosine decay to 0 ("cosine") or constant."""
  warmup = min(t.warmup_steps, max(total_steps - 1, 0))
  if t.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, t.lr, warmup, max(total_steps, warmup + 1))
  if t.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, t.lr, max(warmup, 1)),
                                 optax.constant_schedule(t.lr)], [max(warmup, 1)])
  raise ValueError(f"config.train.schedule must be 'cosine' or 'constant', got {t.schedule!r}")


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int
                   ) -> optax.GradientTransformation:
  """Global-norm clip, then one AdamW per group (tokenizer lr << recommender lr)."""
  d, t = config.diger, config.train
  transforms = {
      "tokenizer": optax.adamw(d.tokenizer_lr, weight_decay=config[d.pretrain].weight_decay),
      "recommender": optax.adamw(_recommender_schedule(t, total_steps),
                                 weight_decay=t.weight_decay),
      "sigma": optax.adam(d.sigma_lr),
  }
  labels = lambda params: {g: jax.tree.map(lambda _, g=g: g, params[g]) for g in GROUPS}
  return optax.chain(optax.clip_by_global_norm(t.clip_norm),
                     optax.multi_transform(transforms, labels))


# ---- shard & transfer --------------------------------------------------------------------

def param_shardings(recommender: rec_model.T5Recommender, params: dict[str, Any],
                    mesh: jax.sharding.Mesh, fsdp_min_size: int) -> dict[str, Any]:
  """Recommender parameters by its logical axes (TP/FSDP); the rest replicated."""
  rep = parallel.replicated(mesh)
  return {
      "tokenizer": jax.tree.map(lambda _: rep, params["tokenizer"]),
      "recommender": rec_sharding.param_shardings(nnx.state(recommender, nnx.Param), mesh,
                                                  fsdp_min_size),
      "sigma": rep,
  }


# ---- update step -------------------------------------------------------------------------

def make_train_step(tok_graph: Any, rec_graph: Any, tx: optax.GradientTransformation,
                    cfg: joint.JointConfig, momentum: float, seed: int, rng_impl: str):
  """Returns the jitted `step(state, batch, vectors, table) -> (state, metrics)`.

  `state` = {"params": {tokenizer, recommender, sigma}, "opt", "usage": float[L, K],
  "step": int32}; `batch` = {"history": int32[B, H], "target": int32[B], "weight": float[B]}
  sharded over `data`. The state is donated; per-step randomness (Gumbel noise, dropout) is
  `fold_in(key(seed, impl=rng_impl), step)`.
  """
  base_key = jax.random.key(seed, impl=rng_impl)

  def loss_fn(params, state, batch, vectors, table, key):
    tokenizer = nnx.merge(tok_graph, params["tokenizer"])
    recommender = nnx.merge(rec_graph, params["recommender"])
    return joint.joint_loss(tokenizer, recommender, params["sigma"], batch["history"],
                            batch["target"], batch["weight"], vectors, table, state["usage"],
                            key, cfg)

  def step(state, batch, vectors, table):
    key = jax.random.fold_in(base_key, state["step"])
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state, batch, vectors, table, key)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    new_state = {
        "params": optax.apply_updates(state["params"], updates), "opt": opt,
        "usage": noise.update_usage(state["usage"], aux.pop("target_greedy"), momentum),
        "step": state["step"] + 1,
    }
    aux["grad_norm"] = optax.global_norm(grads)
    aux["codebook_grad_norm"] = jnp.linalg.norm(grads["tokenizer"]["codebooks"])
    return new_state, aux

  return jax.jit(step, donate_argnums=0)


# ---- SID table & evaluation --------------------------------------------------------------

def build_table(tok_graph: Any, tok_params: Any, vectors: np.ndarray, mesh: jax.sharding.Mesh,
                config: ml_collections.ConfigDict) -> tuple[np.ndarray | None, dict[str, Any]]:
  """Greedy codes of every item + collision tokens, and the codes' usage/collision stats.

  Returns:
    (SID table int32[N, L+1], or None when more than `sid.max_collisions` items share one code
    tuple (collapsed codes: no valid table); stats: usage_per_level, perplexity_per_level,
    collision_rate, max_group_size, reconstruction_mse).
  """
  k = config.sid.codebook_size
  codes, recon = tok_train.encode(tok_graph, tok_params, vectors, mesh)
  max_group = int(np.asarray(quantize.collision_tokens(codes)).max()) + 1
  table = (sid_lib.make_sid_table(codes, config.sid.max_collisions)
           if max_group <= config.sid.max_collisions else None)
  stats = {
      "usage_per_level": [float(u) for u in quantize.usage_per_level(codes, k)],
      "perplexity_per_level": [float(p) for p in quantize.perplexity_per_level(codes, k)],
      "collision_rate": float(quantize.collision_rate(codes)),
      "max_group_size": max_group,
      "reconstruction_mse": recon,
  }
  return table, stats


def make_ranker(rec_graph: Any, beam_size: int):
  """Returns jitted `rank(rec_params, trie, batch) -> int32[B, beam]` (constrained beam search)."""

  @jax.jit
  def rank(rec_params, trie, batch):
    model = nnx.merge(rec_graph, rec_params)
    enc_out = model.encode(batch["enc_tokens"], batch["enc_mask"])
    step_fn, cache = rec_model.make_step_fn(model, enc_out, batch["enc_mask"], beam_size)
    return beam_search(step_fn, cache, trie, enc_out.shape[0], beam_size).item_ids

  return rank


def validate(rank: Any, rec_params: Any, table: np.ndarray, layout: Any,
             examples: rec_data.Examples, config: ml_collections.ConfigDict,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Recall/NDCG@K of the recommender over `examples` with the SIDs of `table`."""
  trie = build_trie(table, list(layout.level_sizes))
  tokens = layout.item_tokens(table)
  inputs = {"enc_tokens": tokens[examples.history].reshape(len(examples), -1),
            "enc_mask": np.repeat(examples.history >= 0, layout.num_levels, axis=1)}
  batch = parallel.pad_to_multiple(min(config.eval.batch_size, len(examples)), mesh)
  return evaluate.evaluate_ranked(lambda b: rank(rec_params, trie, b), inputs, examples.target,
                                  batch, mesh, tuple(config.eval.ks))


# ---- checkpoint / resume -----------------------------------------------------------------

def _fingerprint(config: ml_collections.ConfigDict, vectors: np.ndarray) -> str:
  sections = {k: config[k].to_dict() for k in ("diger", "recommender", "sid", "train", "data")}
  return io.fingerprint_json({**sections, "seed": config.seed,
                              "pretrain": config[config.diger.pretrain].to_dict(),
                              "vectors": io.fingerprint_array(vectors)})


def _copy(tree: Any) -> Any:
  return jax.tree.map(jnp.copy, tree)


# ---- train loop --------------------------------------------------------------------------

def train_diger(config: ml_collections.ConfigDict, workdir: str, vectors: np.ndarray,
                splits: Splits) -> dict[str, Any]:
  """Joint DIGER training (module docstring); returns the summary written to diger/summary.json.

  Args:
    config: full config (diger, the pretrain tokenizer's section, sid, recommender, train, eval,
      data.max_history, mesh, seed).
    workdir: run folder (reads tokenizer/, writes diger/ and tokenizer/sid_table.npy).
    vectors: float32[N, D] item vectors.
    splits: leave-one-out splits over the same N items.

  Returns:
    {"best_epoch", "valid" (metrics of the best epoch), "history" (one dict per epoch: losses,
    usage_per_level, collision_rate, sigma, noisy_fraction, validation metrics, seconds),
    "sid_metrics", "decay"}.
  """
  cfg = joint_config(config)
  vectors = np.asarray(vectors, np.float32)
  t, sid = config.train, config.sid
  if vectors.ndim != 2:
    raise ValueError(f"diger: vectors must be [N, D], got shape {vectors.shape}")
  mesh = parallel.make_mesh(config.mesh.data, config.mesh.model)
  out_dir = os.path.join(workdir, DIGER_DIR)

  # Pretrained tokenizer and a fresh recommender.
  tokenizer = load_pretrained_tokenizer(config, vectors, workdir)
  recommender = rec_model.T5Recommender.from_config(config, config.seed)
  layout = recommender.layout
  tok_graph, tok_params = nnx.split(tokenizer)
  rec_graph, rec_params = nnx.split(recommender)
  params = {"tokenizer": nnx.to_pure_dict(tok_params),
            "recommender": nnx.to_pure_dict(rec_params),
            "sigma": jnp.full((sid.levels,), config.diger.sigma_init, jnp.float32)}

  # Input pipeline: item-id batches (the tokenizer makes the tokens inside the step).
  train_ex = rec_data.train_examples(splits, config.data.max_history)
  valid_ex = rec_data.eval_examples(splits, "valid", config.data.max_history)
  for ex, name in ((train_ex, "train"), (valid_ex, "valid")):
    rec_data.check_items(ex, vectors.shape[0], f"diger {name} examples")
  global_batch = parallel.pad_to_multiple(min(t.batch_size, len(train_ex)), mesh)
  parallel.check_batch_size(global_batch, mesh)
  plan = rec_data.BatchPlan(len(train_ex), global_batch, config.seed)
  steps_per_epoch = plan.steps_per_epoch
  host_rows = parallel.host_batch_slice(global_batch)

  def host_batch(step):
    index, weight = plan.rows(step)
    index, weight = index[host_rows], weight[host_rows]
    return parallel.to_global({"history": train_ex.history[index],
                               "target": train_ex.target[index], "weight": weight}, mesh)

  # Optimizer and the sharded train state.
  tx = make_optimizer(config, t.epochs * steps_per_epoch)
  shardings = param_shardings(recommender, params, mesh, t.fsdp_min_size)
  rep = parallel.replicated(mesh)
  params = jax.device_put(params, shardings)
  state = {"params": params, "opt": jax.jit(tx.init)(params),
           "usage": jax.device_put(jnp.full((sid.levels, sid.codebook_size),
                                            1.0 / sid.codebook_size, jnp.float32), rep),
           "step": jax.device_put(jnp.zeros((), jnp.int32), rep)}
  vectors_dev = jax.device_put(vectors, rep)
  train_step = make_train_step(tok_graph, rec_graph, tx, cfg, config.diger.usage_momentum,
                               config.seed, config.diger.rng_impl)
  rank = make_ranker(rec_graph, config.eval.beam_size)

  # The pretrained tokenizer's SID table, then resume (the checkpoint holds the epoch's table).
  table, stats = build_table(tok_graph, state["params"]["tokenizer"], vectors, mesh, config)
  if table is None:
    raise ValueError(f"diger: the pretrained {config.diger.pretrain} puts "
                     f"{stats['max_group_size']} items on one code tuple, more than "
                     f"config.sid.max_collisions={sid.max_collisions}: no SID table")
  manager = checkpoint.make_manager(os.path.join(out_dir, "ckpt"), keep=t.checkpoint_keep)
  fingerprint = _fingerprint(config, vectors)
  tree = {"state": state, "best": _copy(state["params"]), "table": jax.device_put(table, rep)}
  restored = checkpoint.restore(manager, checkpoint.abstract_like(tree))
  if restored is not None:
    epoch, tree, meta = restored
    if meta["fingerprint"] != fingerprint:
      raise io.ArtifactError(f"{out_dir}/ckpt: checkpoint of another run (fingerprint "
                             f"{meta['fingerprint']} != {fingerprint}); use a fresh workdir")
    history, best_epoch, bad_epochs = meta["history"], meta["best_epoch"], meta["bad_epochs"]
    table = np.asarray(tree["table"])
    logging.info("diger: resumed after epoch %d", epoch)
  else:
    epoch, history, best_epoch, bad_epochs = 0, [], 0, 0
    history.append({"epoch": 0, **stats, "sigma": _floats(state["params"]["sigma"])})
    logging.info("diger epoch 0 (pretrained): usage %s collision %.4f",
                 _fmt(stats["usage_per_level"]), stats["collision_rate"])
  state = tree["state"]

  select = t.select_metric
  while epoch < t.epochs and bad_epochs < t.patience:
    start = time.time()
    table_dev = jax.device_put(table, rep)
    sums: dict[str, jax.Array] = {}
    for step, batch in rec_data.Prefetcher(host_batch, epoch * steps_per_epoch,
                                           (epoch + 1) * steps_per_epoch, t.prefetch):
      state, metrics = train_step(state, batch, vectors_dev, table_dev)
      sums = metrics if not sums else jax.tree.map(jnp.add, sums, metrics)
      if t.log_every_steps and (step + 1) % t.log_every_steps == 0:
        logging.info("diger step %d: loss %.4f rec_ce %.4f", step + 1, float(metrics["loss"]),
                     float(metrics["rec_ce"]))
    epoch += 1
    means = {k: np.asarray(v) / steps_per_epoch for k, v in sums.items()}
    if t.nonfinite == "raise" and not math.isfinite(float(means["loss"])):
      raise FloatingPointError(f"diger: non-finite loss in epoch {epoch} ({means['loss']})")
    new_table, stats = build_table(tok_graph, state["params"]["tokenizer"], vectors, mesh, config)
    # Collapsed codes (no valid table): keep training on the last table; the epoch can't win.
    table = table if new_table is None else new_table
    evaluated = epoch % t.eval_every_epochs == 0 or epoch == t.epochs
    valid = (validate(rank, state["params"]["recommender"], table, layout, valid_ex, config, mesh)
             if evaluated and new_table is not None else {})
    record = {"epoch": epoch, **{f"train_{k}": _floats(v) for k, v in means.items()}, **stats,
              "sigma": _floats(state["params"]["sigma"]), "table_valid": new_table is not None,
              **{f"valid_{k}": v for k, v in valid.items()},
              "seconds": time.time() - start}
    best_value = max((h.get(f"valid_{select}", -1.0) for h in history), default=-1.0)
    history.append(record)
    improved = bool(valid) and valid[select] > best_value
    if improved:
      best_epoch, bad_epochs = epoch, 0
    elif evaluated:
      bad_epochs += 1
    tree = {"state": state, "best": _copy(state["params"]) if improved else tree["best"],
            "table": table_dev if new_table is None else jax.device_put(table, rep)}
    checkpoint.save(manager, epoch, tree, {"fingerprint": fingerprint, "history": history,
                                           "best_epoch": best_epoch, "bad_epochs": bad_epochs})
    logging.info("diger epoch %d: rec_ce %.4f recon %.4g usage %s collision %.4f max group %d "
                 "sigma %s noisy %.3f valid %s %s (%.0fs)", epoch, record["train_rec_ce"],
                 record["train_recon"], _fmt(stats["usage_per_level"]),
                 stats["collision_rate"], stats["max_group_size"], _fmt(record["sigma"]),
                 record["train_noisy_fraction"], select,
                 f"{valid[select]:.4f}" if valid else "-", record["seconds"])
  manager.wait_until_finished()

  # ---- save: SID table + recommender + tokenizer of the best epoch, together --------------
  best = tree["best"]
  table, stats = build_table(tok_graph, best["tokenizer"], vectors, mesh, config)
  if table is None:
    raise ValueError(f"diger (decay={cfg.decay}): the codes collapsed from the start (max group "
                     f"{stats['max_group_size']} > config.sid.max_collisions) and no epoch gave "
                     "a valid SID table")
  best_record = next(h for h in history if h["epoch"] == best_epoch)
  summary = {"decay": cfg.decay, "best_epoch": best_epoch,
             "valid": {k[len("valid_"):]: v for k, v in best_record.items()
                       if k.startswith("valid_")},
             "sid_metrics": stats, "history": history}
  save_final(out_dir, workdir, best, table, summary, config, vectors, best_epoch)
  return summary


def save_final(out_dir: str, workdir: str, params: dict[str, Any], table: np.ndarray,
               summary: dict[str, Any], config: ml_collections.ConfigDict, vectors: np.ndarray,
               best_epoch: int) -> None:
  """Writes diger/model (orbax: tokenizer, recommender, sigma), diger/sid_table.npy,
  diger/summary.json, and the table again as workdir/tokenizer/sid_table.npy."""
  final = checkpoint.make_manager(os.path.join(out_dir, "model"), keep=1, async_save=False)
  checkpoint.save(final, best_epoch, params, {"decay": config.diger.decay,
                                              "best_epoch": best_epoch}, force=True)
  final.wait_until_finished()
  io.write_npy(os.path.join(out_dir, "sid_table.npy"), table)
  io.write_json(os.path.join(out_dir, "summary.json"), summary)
  meta = {"tokenizer": "diger", "pretrain": config.diger.pretrain,
          "num_items": int(vectors.shape[0]), "levels": config.sid.levels,
          "codebook_size": config.sid.codebook_size, "max_collisions": config.sid.max_collisions,
          "vectors_fingerprint": io.fingerprint_array(vectors), "best_epoch": best_epoch,
          "config": config.diger.to_dict()}
  metrics = {**summary["sid_metrics"], "tokenizer": "diger"}
  sid_lib.save_sid_table(workdir, table, metrics, meta)


def _floats(x: Any) -> float | list[float]:
  a = np.asarray(x, np.float64)
  return float(a) if a.ndim == 0 else [float(v) for v in a.ravel()]


def _fmt(values: list[float]) -> str:
  return "[" + " ".join(f"{v:.3f}" for v in values) + "]"
