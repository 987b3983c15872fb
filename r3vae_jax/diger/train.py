"""DIGER trainer: the RQ-VAE tokenizer and the T5 recommender trained jointly, end to end.

  python -m r3vae_jax.main --config=r3vae_jax/configs/default.py:diger --workdir=DIR --mode=all

Sections, top to bottom: config checks, pretrained tokenizer, model & optimizer, update step,
SID table & evaluation, save, the train loop (mesh, input pipeline, model & transfer, resume,
epochs).

* Starts from the RQ-VAE of `config.diger.pretrain` (its best parameters in
  `workdir/tokenizer/<pretrain>_ckpt`; fitted first when absent) and a fresh recommender.
* One jitted step (batch over `data`; recommender parameters by `recommender.sharding`,
  tokenizer, sigma and the usage EMA replicated) computes `joint.joint_loss` and applies one
  `optax.multi_transform` with three groups: tokenizer (`diger.tokenizer_lr`), recommender
  (the recommender's own optimizer: `train.lr`, warmup, schedule) and sigma (`diger.sigma_lr`).
* After every epoch the SID table is recomputed (greedy codes + collision tokens) and its code
  usage per level, collision rate, largest code-tuple group and sigma are logged; every
  `train.eval_every_epochs` epochs validation NDCG@10 comes from the constrained beam search over
  that table. An epoch whose codes put more than `sid.max_collisions` items on one tuple has no
  valid table (collapse): training continues on the last valid table and the epoch cannot be
  the best (a warning says so; the run never stops there). Early stopping on
  `train.select_metric` with `train.patience` validations. Every epoch's record (the same dicts
  as `history` below) is appended to `workdir/diger/metrics.jsonl` as one JSON line, epoch 0
  being the pretrained tokenizer (a resumed run appends; `diger/curves.py` reads this file).
* The best epoch's tokenizer, recommender, sigma and SID table are saved together in
  `workdir/diger/`; the table also via `tokenizer.sid_table.save_sid_table` and the recommender
  also as a `workdir/recommender/checkpoints` step, so `--mode=evaluate` reads them unchanged.
* Every epoch is checkpointed (orbax, `workdir/diger/ckpt`, with the epoch's table); a rerun of
  the same config resumes from the latest one. SIGTERM (or the multi-host preemption sync point)
  stops the run before the next step: the interrupted epoch's steps are dropped (checkpoints
  are per epoch), the best epoch so far is saved as above (so `--mode=all` evaluates it) and the
  summary says `"stopped": "preempted"`; a relaunch resumes after the last finished epoch.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from r3vae_jax import checkpoint
from r3vae_jax import io
from r3vae_jax import parallel
from r3vae_jax import quantize
from r3vae_jax.configs import validate as config_checks
from r3vae_jax.data.splits import Splits
from r3vae_jax import decode
from r3vae_jax.decode import trie as trie_lib
from r3vae_jax.diger import joint
from r3vae_jax.diger import noise
from r3vae_jax.recommender import artifacts as rec_artifacts
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.recommender import evaluation as rec_evaluation
from r3vae_jax.recommender import programs as rec_programs
from r3vae_jax.recommender import ranking as rec_ranking
from r3vae_jax.recommender import state as rec_state
from r3vae_jax.tokenizer import api as tok_api
from r3vae_jax.tokenizer import models as tok_models
from r3vae_jax.tokenizer import programs as tok_programs
from r3vae_jax.tokenizer import sid_table as sid_lib
from r3vae_jax.training import compile as compile_lib
from r3vae_jax.training import eta, resume, stage as stage_lib
from r3vae_jax.training import progress as progress_line
from r3vae_jax.training.preemption import PreemptionWatch
from r3vae_jax.training.selection import Progress

DIGER_DIR = "diger"
META_VERSION = 1
GROUPS = ("tokenizer", "recommender", "sigma")


# ---- config checks -----------------------------------------------------------------------

def joint_config(config: ml_collections.ConfigDict) -> joint.JointConfig:
  """The static hyperparameters of the joint loss, from a validated config
  (`configs/validate.py` names a bad field)."""
  config_checks.validate(config)
  d = config.diger
  return joint.JointConfig(decay=d.decay, tau=float(d.tau), noise_scale=float(d.noise_scale),
                           hot_factor=float(d.hot_factor), sigma_lambda=float(d.sigma_lambda),
                           beta=float(config[d.pretrain].beta),
                           recon_weight=float(d.recon_weight), vq_weight=float(d.vq_weight),
                           detach=bool(d.detach_codes), vq_codes=d.vq_codes,
                           normalize_logits=bool(d.normalize_logits),
                           noisy_targets=bool(d.noisy_targets), reader_codes=d.reader_codes)


# ---- pretrained tokenizer ----------------------------------------------------------------

def load_pretrained_tokenizer(config: ml_collections.ConfigDict, vectors: np.ndarray,
                              workdir: str) -> nnx.Module:
  """The RQ-VAE with the best parameters of its pretraining; fits it first when absent.

  Reads the checkpoint `tokenizer/train.py` writes (`workdir/tokenizer/<name>_ckpt`, tree
  {"state": {"params", "opt"}, "best_params"}).
  """
  pre = config.copy_and_resolve_references()
  pre.tokenizer = config.diger.pretrain
  c = pre[pre.tokenizer]
  ckpt_dir = os.path.join(workdir, "tokenizer", f"{pre.tokenizer}_ckpt")
  if not (io.isdir(ckpt_dir) and any(n.isdigit() for n in io.listdir(ckpt_dir))):
    logging.info("diger: no pretrained %s in %s; fitting it first", pre.tokenizer, ckpt_dir)
    tok_api.fit_tokenizer(pre, vectors, workdir)
  graphdef, params = nnx.split(tok_programs.build_model(pre, vectors.shape[1], pre.seed))
  params = nnx.to_pure_dict(params)
  tx = tok_programs.optimizer(c.lr, c.weight_decay, c.warmup_steps)  # layout.
  tree = {"state": {"params": params, "opt": tx.init(params)}, "best_params": params}
  manager = checkpoint.make_manager(ckpt_dir, keep=c.checkpoint_keep, async_save=False)
  restored = checkpoint.restore(manager, checkpoint.abstract_like(tree))
  if restored is None:
    raise io.ArtifactError(f"{ckpt_dir}: no readable {pre.tokenizer} checkpoint to start from")
  return nnx.merge(graphdef, restored[1]["best_params"])


# ---- model & optimizer -------------------------------------------------------------------

def tokenizer_lr_schedule(config: ml_collections.ConfigDict, rec_schedule: optax.Schedule
                          ) -> optax.Schedule:
  """The tokenizer group's learning rate per step.

  `diger.tokenizer_schedule` "constant": `diger.tokenizer_lr` at every step; "follow": the
  recommender's schedule scaled by `tokenizer_lr / train.lr` (same warm-up and decay, peak
  `tokenizer_lr`), so the codes stop moving when the recommender can no longer follow them. At
  a constant tokenizer rate the full-data rows' training loss rose again once the recommender's
  cosine rate had decayed (docs/experiments.md).
  """
  d = config.diger
  if d.tokenizer_schedule == "follow":
    ratio = d.tokenizer_lr / config.train.lr
    return lambda step: rec_schedule(step) * ratio
  return optax.constant_schedule(d.tokenizer_lr)  # "constant" (checked by validate.py)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int
                   ) -> optax.GradientTransformation:
  """One optimizer per parameter group: the tokenizer's lr is << the recommender's.

  tokenizer: clip + AdamW(`tokenizer_lr_schedule`); recommender: its own optimizer
  (`recommender.state.make_optimizer`: clip, AdamW, warmup + `train.schedule`); sigma:
  Adam(`diger.sigma_lr`). With `diger.freeze_encoder` the tokenizer's encoder gets zero updates
  (RecBoard's DIGER `freeze_id_encoder`): only the codebooks and the decoder move.
  """
  d, t = config.diger, config.train
  rec_tx, rec_schedule = rec_state.make_optimizer(config, total_steps)
  tok_adamw = optax.adamw(tokenizer_lr_schedule(config, rec_schedule),
                          weight_decay=config[d.pretrain].weight_decay,
                          mask=tok_models.weight_decay_mask)
  transforms = {
      "tokenizer": optax.chain(optax.clip_by_global_norm(t.clip_norm), tok_adamw)
                   if t.clip_norm else tok_adamw,  # clip_norm 0: no clipping
      "recommender": rec_tx,
      "sigma": optax.adam(d.sigma_lr),
      "frozen": optax.set_to_zero(),
  }

  def labels(params):
    out = {g: jax.tree.map(lambda _, g=g: g, params[g]) for g in GROUPS}
    if d.freeze_encoder:
      out["tokenizer"]["encoder"] = jax.tree.map(lambda _: "frozen",
                                                 params["tokenizer"]["encoder"])
    return out

  return optax.multi_transform(transforms, labels)


# ---- update step -------------------------------------------------------------------------

def make_train_step(tok_graph: Any, mdef: rec_state.ModelDef, tx: optax.GradientTransformation,
                    cfg: joint.JointConfig, config: ml_collections.ConfigDict,
                    state_shardings: Any, mesh: jax.sharding.Mesh, total_steps: int = 0):
  """Returns the jitted `step(state, batch, vectors, table, decay_id) -> (state, metrics)`.

  `state` = {"params": {tokenizer, recommender, sigma}, "opt", "usage": float[L, K],
  "step": int32, "rng": uint32 key data}, kept in `state_shardings` and donated;
  `batch` = {"history": int32[B, H], "target": int32[B], "weight": float[B]} split over `data`;
  vectors float[N, D] and the SID table int32[N, L+1] replicated; decay_id int32[] the index
  of `diger.decay` in `noise.DECAYS`, an argument rather than a constant so that every decay
  compiles to the same program (one persistent-cache entry serves them all). Per-step
  randomness (Gumbel noise, dropout) is `rec_state.step_key(state["rng"], step)`
  (`rec_state.seed_key_data`: the seed is data too, so seeds share the program).
  The noise scales are multiplied by `noise.anneal_factor(state["step"], A, schedule)`, with
  A = `noise.anneal_steps(diger.noise_anneal_fraction, total_steps)` (0 = off: factor 1).
  """
  d = config.diger
  impl, momentum = d.rng_impl, d.usage_momentum
  num_anneal = noise.anneal_steps(d.noise_anneal_fraction, total_steps)

  def loss_fn(params, usage, batch, vectors, table, key, decay_id, factor):
    return joint.joint_loss(nnx.merge(tok_graph, params["tokenizer"]),
                            mdef.bind(params["recommender"]), params["sigma"],
                            batch["history"], batch["target"], batch["weight"], vectors, table,
                            usage, key, cfg, decay_id, factor)

  def step(state, batch, vectors, table, decay_id):
    key = rec_state.step_key(state["rng"], state["step"], impl)
    factor = noise.anneal_factor(state["step"], num_anneal, d.noise_anneal_schedule)
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], state["usage"], batch, vectors, table, key, decay_id, factor)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    new_state = {
        "params": optax.apply_updates(state["params"], updates), "opt": opt,
        "usage": noise.update_usage(state["usage"], aux.pop("target_greedy"), momentum),
        "step": state["step"] + 1, "rng": state["rng"],
    }
    aux["grad_norm"] = optax.global_norm(grads)
    aux["codebook_grad_norm"] = jnp.linalg.norm(grads["tokenizer"]["codebooks"])
    return new_state, aux

  rep = parallel.replicated(mesh)
  return jax.jit(step,
                 in_shardings=(state_shardings, parallel.batch_sharding(mesh), rep, rep, rep),
                 out_shardings=(state_shardings, rep), donate_argnums=0)


@dataclasses.dataclass(frozen=True)
class JointProgram:
  """A joint run's initial train state and its jitted update step.

  Attributes:
    state: {"params": {tokenizer, recommender, sigma}, "opt", "usage", "step", "rng"}, on the
      devices (`make_train_step`'s layout).
    train_step: `make_train_step`'s `step(state, batch, vectors, table, decay_id)`.
    tok_graph: the tokenizer's nnx graph (its parameters live in the state).
    programs: the recommender's `rec_programs.model_programs` (model definition, shardings,
      constrained-beam `generate`).
  """
  state: dict[str, Any]
  train_step: Callable[..., Any]
  tok_graph: Any
  programs: Any


def joint_program(config: ml_collections.ConfigDict, cfg: joint.JointConfig,
                  tokenizer: nnx.Module, mesh: jax.sharding.Mesh, total_steps: int
                  ) -> JointProgram:
  """The state a joint run starts from (`tokenizer`'s parameters, a fresh recommender, sigma at
  `diger.sigma_init`, uniform usage, step 0) placed on `mesh`, and its update step for
  `total_steps` steps (optimizer schedules, noise annealing)."""
  sid = config.sid
  rep = parallel.replicated(mesh)
  tok_graph, tok_params = nnx.split(tokenizer)
  programs = rec_programs.model_programs(config, mesh)
  tx = make_optimizer(config, total_steps)
  params = {
      "tokenizer": jax.device_put(nnx.to_pure_dict(tok_params), rep),
      "recommender": jax.jit(programs.mdef.init_params,
                             out_shardings=programs.param_shardings)(),
      "sigma": jax.device_put(jnp.full((sid.levels,), config.diger.sigma_init, jnp.float32),
                              rep)}
  # Adam moments inherit their parameter's sharding; step counts (made from nothing) would land
  # on one device, so they are replicated.
  opt = jax.tree.map(lambda x: x if len(x.sharding.device_set) == mesh.size
                     else jax.device_put(x, rep), jax.jit(tx.init)(params))
  state = {"params": params, "opt": opt,
           "usage": jax.device_put(jnp.full((sid.levels, sid.codebook_size),
                                            1.0 / sid.codebook_size, jnp.float32), rep),
           "step": jax.device_put(jnp.zeros((), jnp.int32), rep),
           "rng": jax.device_put(rec_state.seed_key_data(config.seed, config.diger.rng_impl),
                                 rep)}
  shardings = jax.tree.map(lambda x: x.sharding, state)
  # One jitted step per (config, mesh, run length, state layout) in the process: a resumed or
  # repeated run reuses its traced programs instead of tracing the joint step again. The decay
  # is an argument of the step (`make_train_step`), so runs differing only in it share one.
  settings = config.to_dict()
  settings["train"].pop("stop_at", None)  # the deadline is not part of the step
  settings["diger"].pop("decay")
  leaves, treedef = jax.tree.flatten(shardings)
  key = ("diger_step", mesh, total_steps, io.fingerprint_json(settings),
         dataclasses.replace(cfg, decay=noise.DECAYS[0]), tok_graph, tuple(leaves), treedef)
  train_step = compile_lib.cached_program(key, lambda: make_train_step(
      tok_graph, programs.mdef, tx, cfg, config, shardings, mesh, total_steps))
  return JointProgram(state, train_step, tok_graph, programs)


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
  codes, recon = tok_programs.encode(tok_graph, tok_params, vectors, mesh)
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


def fixed_shape_trie(table: np.ndarray, level_sizes: list[int]) -> decode.DeviceTrie:
  """`decode.build_trie` with every dense level padded to the most nodes its depth can hold.

  The table changes every epoch, and with it the number of distinct prefixes per depth; padded
  (with -1 rows that no beam reaches) to `min(N, K_0 * ... * K_{l-1})` rows, the trie's shapes
  depend on the sizes only, so the beam search compiles once per run (and once for every decay,
  through the persistent compilation cache) instead of once per epoch. Levels too large for a
  dense table (`trie.DEFAULT_DENSE_BUDGET`) stay as built.

  Args:
    table: int32[N, L+1] SID table (unique rows).
    level_sizes: codes per SID position.

  Returns:
    the `decode.DeviceTrie`.
  """
  trie = decode.build_trie(table, level_sizes)
  levels, capacity = [], 1
  for level, size in zip(trie.levels, level_sizes):
    if (isinstance(level, decode.DenseLevel)
        and capacity * size <= trie_lib.DEFAULT_DENSE_BUDGET):
      pad = capacity - level.child.shape[0]
      level = decode.DenseLevel(jnp.pad(level.child, ((0, pad), (0, 0)), constant_values=-1),
                                level.size)
    levels.append(level)
    capacity = min(capacity * size, table.shape[0])
  return dataclasses.replace(trie, levels=tuple(levels))


def validate(generate: Any, rec_params: Any, table: np.ndarray, layout: Any,
             examples: rec_data.Examples, config: ml_collections.ConfigDict,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Recall/NDCG@K over `examples`: the recommender's constrained beam search over `table`."""
  trie = fixed_shape_trie(table, list(layout.level_sizes))
  tokens = layout.item_tokens(table)
  inputs = {"enc_tokens": tokens[examples.history].reshape(len(examples), -1),
            "enc_mask": np.repeat(examples.history >= 0, layout.num_levels, axis=1)}
  multiple = int(np.lcm(mesh.shape[parallel.DATA], jax.process_count()))
  batch = -(-min(config.eval.batch_size, len(examples)) // multiple) * multiple
  return rec_ranking.score(lambda b: generate(rec_params, b, trie), inputs, examples.target,
                           rec_evaluation.eval_seen(config, examples), batch, mesh,
                           tuple(config.eval.ks))


# ---- save --------------------------------------------------------------------------------

def save_final(workdir: str, params: dict[str, Any], table: np.ndarray, summary: dict[str, Any],
               config: ml_collections.ConfigDict, vectors: np.ndarray, step: int,
               mesh: jax.sharding.Mesh) -> None:
  """The best epoch's tokenizer, recommender, sigma and SID table, together and for evaluation.

  Writes diger/model (orbax: {tokenizer, recommender, sigma}), diger/sid_table.npy,
  diger/summary.json; tokenizer/sid_table.npy (+ sid_metrics.json) via `save_sid_table`; and the
  recommender as step `step` of recommender/checkpoints in the recommender trainer's layout.
  """
  out_dir = os.path.join(workdir, DIGER_DIR)
  best_epoch = summary["best_epoch"]
  final = checkpoint.make_manager(os.path.join(out_dir, "model"), keep=1, async_save=False)
  if best_epoch not in final.all_steps():
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
  sid_lib.save_sid_table(workdir, table, {**summary["sid_metrics"], "tokenizer": "diger"}, meta)
  rec_artifacts.export_params(config, workdir, params["recommender"], table, summary["valid"],
                              best_epoch, step, mesh)


# ---- train loop --------------------------------------------------------------------------

class ItemBatchSource:
  """This host's rows of any global training batch, as item ids.

  Batches follow `plan` (`rec_data.make_plan`): with length buckets each batch's histories are
  cut to its bucket's length (only left padding goes), as the fixed-table trainer's token
  batches are, so the joint step runs on short histories; one compiled program per bucket.
  """

  def __init__(self, examples: rec_data.Examples, plan: rec_data.BatchPlan |
               rec_data.BucketedPlan, mesh=None):
    self.examples, self.plan, self.mesh = examples, plan, mesh
    self.plan_rows = rec_data.PlanRows(plan)

  def host_batch(self, step: int) -> dict[str, np.ndarray]:
    """{"history": int32[b, H'] (-1 = padding), "target": int32[b], "weight": float32[b]} of
    global step `step`, this host's b rows; H' is the step's bucket (H without buckets)."""
    index, weight, items = self.plan_rows(step)
    rows = parallel.host_batch_slice(self.plan.global_batch, self.mesh)
    index = index[rows]
    return {"history": rec_data.bucket_history(self.examples.history[index], items),
            "target": self.examples.target[index], "weight": weight[rows]}


def train_diger(config: ml_collections.ConfigDict, workdir: str, vectors: np.ndarray,
                splits: Splits, step_hook: Callable[[int], None] | None = None
                ) -> dict[str, Any]:
  """Joint DIGER training (module docstring); returns the summary written to diger/summary.json.

  Args:
    config: full config (diger, the pretrain tokenizer's section, sid, recommender, train, eval,
      data.max_history, mesh, seed).
    workdir: run folder (reads tokenizer/; writes diger/, tokenizer/sid_table.npy and a
      recommender/checkpoints step).
    vectors: float32[N, D] item vectors.
    splits: leave-one-out splits over the same N items.
    step_hook: called with the global step before each train step (tests inject failures).

  Returns:
    {"decay", "stopped" ("finished" | "preempted"), "best_epoch", "valid" (metrics of the best
    epoch), "sid_metrics" (of the saved table), "sid_changes" (`quantize.sid_changes` of the
    pretrained table against the saved one), "history": one dict per epoch (0 = the
    pretrained tokenizer) with usage_per_level, perplexity_per_level, collision_rate,
    max_group_size, reconstruction_mse, sigma, table_valid, train_* (epoch means of the step
    metrics: loss, rec, rec_ce, ce_per_level, recon, vq, accuracy, noisy_fraction, noise_factor,
    grad_norm, codebook_grad_norm), valid_* and seconds}.
  """
  cfg = joint_config(config)
  vectors = np.asarray(vectors, np.float32)
  t, select = config.train, config.train.select_metric
  if vectors.ndim != 2:
    raise ValueError(f"diger: vectors must be [N, D], got shape {vectors.shape}")
  stage = stage_lib.begin(workdir, DIGER_DIR, {"config": _fingerprint(config, vectors)})

  # ================================ Mesh ======================================================
  mesh = parallel.config_mesh(config)
  rep = parallel.replicated(mesh)

  # ================================ Input pipeline ============================================
  # Batches of item ids: the tokenizer makes the SID tokens inside the step. The training
  # examples and batches are the fixed-table trainer's (same history cap, train.example_window
  # and train.length_buckets).
  train_ex = rec_data.train_examples(splits, config.data.max_history, t.example_window)
  valid_ex = rec_data.eval_examples(splits, "valid", config.data.max_history,
                                     config.eval.max_users)
  for ex, name in ((train_ex, "train"), (valid_ex, "valid")):
    rec_data.check_items(ex, vectors.shape[0], f"diger {name} examples")
  parallel.check_batch_size(t.batch_size, mesh)
  source = ItemBatchSource(train_ex, rec_data.make_plan(train_ex, t.batch_size, config.seed,
                                                         t.length_buckets), mesh)
  steps_per_epoch = source.plan.steps_per_epoch

  # ================================ Model, optimizer, shard & transfer ========================
  tokenizer = load_pretrained_tokenizer(config, vectors, workdir)
  prog = joint_program(config, cfg, tokenizer, mesh, t.epochs * steps_per_epoch)
  tok_graph, generate = prog.tok_graph, prog.programs.generate
  layout, params = prog.programs.mdef.layout, prog.state["params"]
  vectors_dev = jax.device_put(vectors, rep)
  decay_id = jax.device_put(noise.decay_index(cfg.decay), rep)

  def joint_step(state, batch, table_dev):
    return prog.train_step(state, batch, vectors_dev, table_dev, decay_id)

  # ================================ Load checkpoint ===========================================
  table, stats = build_table(tok_graph, params["tokenizer"], vectors, mesh, config)
  if table is None:
    raise ValueError(f"diger: the pretrained {config.diger.pretrain} puts "
                     f"{stats['max_group_size']} items on one code tuple, more than "
                     f"config.sid.max_collisions={config.sid.max_collisions}: no SID table")
  pretrained_table = table
  manager = checkpoint.make_manager(stage.path("ckpt"), keep=t.checkpoint_keep)
  tree = {"state": prog.state, "best": _copy(params), "table": jax.device_put(table, rep)}
  restored = resume.resume(manager, tree, META_VERSION, stage.fingerprints)
  if restored is not None:
    _, tree, meta = restored
    history, progress = meta["history"], Progress(**meta["progress"])
    progress.extend_to(t.epochs)
    logging.info("diger: resumed after epoch %d", progress.validated_epochs)
  else:
    progress = Progress(best_epoch=0, best_step=0)
    history = [{"epoch": 0, **stats, "sigma": _floats(params["sigma"]), "table_valid": True}]
    stage.metrics.write(history[-1])
    logging.info("diger epoch 0 (pretrained %s): usage %s collision %.4f max group %d",
                 config.diger.pretrain, _fmt(stats["usage_per_level"]),
                 stats["collision_rate"], stats["max_group_size"])

  # ================================ Train loop ================================================
  if not progress.finished:
    compile_lib.precompile(
        lambda b: prog.train_step.lower(tree["state"], b, vectors_dev, tree["table"],
                                        decay_id).compile(),
        rec_data.bucket_batches(source, mesh), "each history-length bucket")
  stopped, clock = "finished", eta.Eta(t.epochs, progress.validated_epochs)
  with PreemptionWatch(t.stop_at) as preemption:
    while not progress.finished:
      start, epoch = time.time(), progress.validated_epochs + 1
      state, sums = _train_epoch(joint_step, tree, source, epoch - 1, mesh, config, preemption,
                                 step_hook)
      if state is None:
        stopped = "preempted"
        logging.warning("diger: preempted in epoch %d; its steps are dropped, the best epoch so "
                        "far (%d) is saved, a relaunch resumes after epoch %d", epoch,
                        progress.best_epoch, epoch - 1)
        break
      means = {k: np.asarray(v) / steps_per_epoch for k, v in sums.items()}
      if t.nonfinite == "raise" and not math.isfinite(float(means["loss"])):
        raise FloatingPointError(f"diger: non-finite loss in epoch {epoch} ({means['loss']})")

      new_table, valid, record = _evaluate_epoch(
          tok_graph, generate, state, means, epoch, vectors, layout, valid_ex, config, mesh)
      record["seconds"] = time.time() - start
      history.append(record)
      stage.metrics.write(record)
      evaluated = epoch % t.eval_every_epochs == 0 or epoch == t.epochs
      improved = evaluated and progress.record_validation(
          valid or None, select, epoch, epoch * steps_per_epoch, t.patience)
      progress.end_epoch(epoch, t.epochs)
      tree = {"state": state, "best": _copy(state["params"]) if improved else tree["best"],
              "table": tree["table"] if new_table is None else jax.device_put(new_table, rep)}
      checkpoint.save(manager, epoch, tree, resume.make_meta(
          META_VERSION, stage.fingerprints, history=history,
          progress=dataclasses.asdict(progress)))
      _log_epoch(record, select, valid, clock.tick(epoch)[1])
  manager.wait_until_finished()
  stage.close()

  # ================================ Save ======================================================
  summary = _summary(tok_graph, tree["best"], progress.best_epoch, history, stopped,
                     pretrained_table, vectors, cfg, config, mesh)
  save_final(workdir, tree["best"], summary.pop("table"), summary, config, vectors,
             progress.best_epoch * steps_per_epoch, mesh)
  return summary


def _evaluate_epoch(tok_graph: Any, generate: Callable, state: dict[str, Any],
                    means: dict[str, np.ndarray], epoch: int, vectors: np.ndarray, layout: Any,
                    valid_ex: rec_data.Examples, config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh
                    ) -> tuple[np.ndarray | None, dict[str, float], dict[str, Any]]:
  """The epoch's SID table, its statistics and validation over it (every
  `train.eval_every_epochs` epochs and the last, when the table is valid).

  Returns:
    (the table or None when collapsed, validation metrics or {}, the epoch's history record
    without "seconds").
  """
  t = config.train
  table, stats = build_table(tok_graph, state["params"]["tokenizer"], vectors, mesh, config)
  evaluated = epoch % t.eval_every_epochs == 0 or epoch == t.epochs
  valid = (validate(generate, state["params"]["recommender"], table, layout, valid_ex, config,
                    mesh) if evaluated and table is not None else {})
  if table is None:
    logging.warning("diger epoch %d: %d items share one code tuple, more than "
                    "config.sid.max_collisions=%d: no valid SID table this epoch; training "
                    "goes on with the last valid table, and this epoch is not validated and "
                    "cannot be the best", epoch, stats["max_group_size"],
                    config.sid.max_collisions)
  record = {"epoch": epoch, **{f"train_{k}": _floats(v) for k, v in means.items()}, **stats,
            "sigma": _floats(state["params"]["sigma"]), "table_valid": table is not None,
            **{f"valid_{k}": v for k, v in valid.items()}}
  return table, valid, record


def _summary(tok_graph: Any, best: dict[str, Any], best_epoch: int, history: list[dict],
             stopped: str, pretrained_table: np.ndarray, vectors: np.ndarray,
             cfg: joint.JointConfig, config: ml_collections.ConfigDict,
             mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """`train_diger`'s summary of the best epoch, with its SID table under "table"."""
  if best_epoch == 0:
    logging.warning("diger: no epoch was validated with a valid SID table; saving the pretrained "
                    "%s and the recommender as initialised (epoch 0)", config.diger.pretrain)
  table, stats = build_table(tok_graph, best["tokenizer"], vectors, mesh, config)
  best_record = next(h for h in history if h["epoch"] == best_epoch)
  summary = {"decay": cfg.decay, "stopped": stopped, "best_epoch": best_epoch,
             "valid": {k[len("valid_"):]: v for k, v in best_record.items()
                       if k.startswith("valid_")},
             "sid_metrics": stats, "history": history,
             "sid_changes": quantize.sid_changes(pretrained_table, table, config.sid.levels),
             "table": table}
  logging.info("diger: %.1f%% of the items' SIDs differ from the pretrained %s's (codes per "
               "level %s)", 100 * summary["sid_changes"]["sid_changed"], config.diger.pretrain,
               _fmt(summary["sid_changes"]["code_changed"]))
  return summary


def _train_epoch(joint_step: Callable, tree: dict[str, Any], source: ItemBatchSource,
                 epoch: int, mesh: jax.sharding.Mesh, config: ml_collections.ConfigDict, preemption: PreemptionWatch,
                 step_hook: Callable[[int], None] | None) -> tuple[Any, dict[str, jax.Array]]:
  """The joint steps (`joint_step(state, batch, table)`) of epoch `epoch` (0-based) from
  `tree`'s state and table: (state, the step metrics summed over the epoch), or (None, ...)
  when preemption was requested."""
  steps_per_epoch, t = source.plan.steps_per_epoch, config.train
  state, sums = tree["state"], {}
  batches = rec_data.Prefetcher(lambda s: parallel.to_global(source.host_batch(s), mesh),
                                epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch,
                                t.prefetch)
  try:
    for step, batch in batches:
      if step_hook is not None:
        step_hook(step)
      if preemption.requested(step):
        return None, sums
      state, metrics = joint_step(state, batch, tree["table"])
      sums = metrics if not sums else jax.tree.map(jnp.add, sums, metrics)
      if (step + 1) % t.log_every_steps == 0:
        logging.info("%s", progress_line.line(
            "diger", step + 1, t.epochs * steps_per_epoch, "step",
            {"loss": float(metrics["loss"]), "rec_ce": float(metrics["rec_ce"]),
             "noisy": float(metrics["noisy_fraction"])}))
  finally:
    batches.close()
  return state, sums


def _log_epoch(record: dict[str, Any], select: str, valid: dict[str, float], eta_s: float
               ) -> None:
  logging.info("diger epoch %d: rec_ce %.4f recon %.4g usage %s collision %.4f max group %d "
               "sigma %s noisy %.3f %s %s (%.0fs, ETA %.0fs)", record["epoch"],
               record["train_rec_ce"], record["train_recon"], _fmt(record["usage_per_level"]),
               record["collision_rate"], record["max_group_size"], _fmt(record["sigma"]),
               record["train_noisy_fraction"], select,
               f"{valid[select]:.4f}" if valid else "-", record["seconds"], eta_s)


def _fingerprint(config: ml_collections.ConfigDict, vectors: np.ndarray) -> str:
  sections = {k: config[k].to_dict() for k in ("diger", "recommender", "sid", "train", "data")}
  sections["train"].pop("stop_at", None)  # a deadline, not a setting: relaunches resume
  return io.fingerprint_json({**sections, "seed": config.seed,
                              "pretrain": config[config.diger.pretrain].to_dict(),
                              "vectors": io.fingerprint_array(vectors)})


def _copy(tree: Any) -> Any:
  """A device copy (the train state is donated to the next step; the best must survive)."""
  return jax.tree.map(jnp.copy, tree)


def _floats(x: Any) -> float | list[float]:
  a = np.asarray(x, np.float64)
  return float(a) if a.ndim == 0 else [float(v) for v in a.ravel()]


def _fmt(values: list[float]) -> str:
  return "[" + " ".join(f"{v:.3f}" for v in values) + "]"
