"""Trainer of the generative recommender on a fixed SID table. Read it top to bottom.

  train_recommender(config, workdir, sid_table, splits) -> dict

Writes `workdir/recommender/` (layout in `artifacts.py`); `metrics.jsonl` holds one JSON object
per log interval ("kind": "train"), validation ("valid") and epoch ("epoch": where the wall time
went, `EPOCH_TIMING`); a resumed run appends (steps replayed after a crash appear again).
Evaluation of the best checkpoint is `evaluation.evaluate_recommender`.

Resume is exact: the data order, the dropout keys and the learning rate are functions of the
step, which is restored with the params and optimizer state; relaunching the same command after
a crash or a SIGTERM continues from the latest readable checkpoint. A finished run relaunched
unchanged does nothing; relaunched with more `train.epochs` it trains on (the learning-rate
schedule then stretches to the new length). Changing anything in `artifacts.fingerprints` is
refused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np

from r3vae_jax import checkpoint, io, parallel
from r3vae_jax.data.splits import Splits
from r3vae_jax.decode import build_trie
from r3vae_jax.recommender import artifacts, data, evaluation, programs, ranking, steps
from r3vae_jax.recommender import state as state_lib
from r3vae_jax.recommender.tokens import check_sid_table, layout_from_config
from r3vae_jax.training import compile as compile_lib
from r3vae_jax.training import eta, resume, stage as stage_lib
from r3vae_jax.training import progress as progress_line
from r3vae_jax.training.preemption import PreemptionWatch
from r3vae_jax.training.selection import Progress

# Fields of the per-epoch metrics line {"kind": "epoch", "epoch", "step", ...}; times in seconds.
EPOCH_TIMING = {
    "wall_s": "wall time since the previous epoch line (training, validation, checkpoint, logs)",
    "train_step_s": "host time inside the compiled train step: its calls (dispatch; epoch 1 "
                    "also compiles) plus waiting for its results at each log flush",
    "input_wait_s": "waiting for the next prefetched batch",
    "valid_s": "validation (beam search over all users and scoring)",
    "checkpoint_s": "checkpoint save (async: the blocking part)",
    "outside_step_frac": "1 - train_step_s / wall_s: share of the wall time outside the "
                         "compiled train step (input wait, validation, checkpoint, Python)",
}


def train_recommender(config: ml_collections.ConfigDict, workdir: str, sid_table: np.ndarray,
                      splits: Splits, *, step_hook: Callable[[int], None] | None = None
                      ) -> dict[str, Any]:
  """Trains (or resumes training) the recommender on `sid_table`; see the module docstring.

  Args:
    config: the full config (recommender, sid, data.max_history, train, eval, mesh, seed).
    workdir: run directory; writes `workdir/recommender/`.
    sid_table: int[N, L+1] the SID of every item.
    splits: leave-one-out splits over the same item ids.
    step_hook: called on the host after every step with the new step number (tests use it to
      interrupt a run).

  Returns:
    {"best_valid": metrics dict, "best_epoch", "best_step", "finished" ("early_stop" |
    "epochs" | "preempted"), "step", "checkpoint_dir", "metrics_path", "result_path",
    "train_time_s"}.
  """
  _check_train_config(config)
  t = config.train
  layout = layout_from_config(config)
  table = check_sid_table(sid_table, layout, "recommender: sid_table")
  stage = stage_lib.begin(workdir, artifacts.STAGE, artifacts.fingerprints(config, table))

  # ================================ Mesh ========================================================
  mesh = parallel.config_mesh(config)
  parallel.check_batch_size(t.batch_size, mesh)
  logging.info("recommender: mesh %s over %d devices, %d processes", dict(mesh.shape),
               mesh.size, jax.process_count())

  # ================================ Input pipeline ==============================================
  train_ex = data.train_examples(splits, config.data.max_history, t.example_window)
  valid_ex = data.eval_examples(splits, "valid", config.data.max_history,
                                 config.eval.max_users)
  data.check_items(train_ex, table.shape[0], "recommender: training data")
  data.check_items(valid_ex, table.shape[0], "recommender: validation data")
  item_tokens = layout.item_tokens(table)
  plan = data.make_plan(train_ex, t.batch_size, config.seed, t.length_buckets)
  total_steps = t.epochs * plan.steps_per_epoch
  source = data.BatchSource(train_ex, plan, item_tokens, table, mesh)
  logging.info("recommender: %d training examples, %d steps/epoch x %d epochs, %d valid users",
               len(train_ex), plan.steps_per_epoch, t.epochs, len(valid_ex))

  # ================================ Model & optimizer ===========================================
  model_prog = programs.model_programs(config, mesh)
  train_prog = programs.train_programs(config, mesh, total_steps)
  abstract = state_lib.abstract_state(model_prog.mdef, train_prog.tx, train_prog.shardings)
  logging.info("recommender: %d parameters",
               sum(x.size for x in jax.tree.leaves(abstract["params"])))

  # ================================ Evals =======================================================
  trie = build_trie(table, list(layout.level_sizes))
  valid_inputs = evaluation.ranking_inputs(valid_ex, item_tokens, table)
  valid_seen = evaluation.eval_seen(config, valid_ex)
  eval_batch = evaluation.eval_batch_size(config, len(valid_ex), mesh)

  def validate(params: Any) -> dict[str, float]:
    rank = lambda batch: model_prog.generate(params, batch, trie)
    return ranking.score(rank, valid_inputs, valid_ex.target, valid_seen, eval_batch, mesh,
                         tuple(config.eval.ks))

  # ================================ Load checkpoint =============================================
  manager = artifacts.make_manager(config, workdir)
  restored = resume.resume(manager, abstract, artifacts.META_VERSION, stage.fingerprints)
  if restored is None:
    step, state, progress = 0, train_prog.init(), Progress()
  else:
    step, state, meta = restored
    progress = Progress(**meta["progress"])
    progress.extend_to(t.epochs)
    logging.info("recommender: resumed from step %d (%d epochs validated)", step,
                 progress.validated_epochs)
  loop = _Loop(config, stage, manager, validate, plan.steps_per_epoch, total_steps, step, state,
               progress, model_prog.mdef.param_names(), step_hook)
  loop.last_saved = -1 if restored is None else step

  # ================================ Train loop ==================================================
  finished = progress.finished
  if not finished:
    compile_lib.precompile(lambda b: train_prog.train_step.lower(abstract, b).compile(),
                           data.bucket_batches(source, mesh), "each history-length bucket")
  prefetcher = None
  try:
    with PreemptionWatch(t.stop_at) as preemption:
      while not loop.progress.finished:
        if loop.progress.validated_epochs < loop.step // plan.steps_per_epoch:
          loop.end_epoch()
        elif preemption.requested(loop.step):
          loop.flush()
          loop.save()
          finished = "preempted"
          logging.warning("recommender: preempted; checkpoint saved at step %d", loop.step)
          break
        else:
          if prefetcher is None:
            prefetcher = data.device_batches(source, mesh, loop.step, total_steps, t.prefetch)
            batches = iter(prefetcher)
          loop.train_step(train_prog.train_step, batches)
      finished = loop.progress.finished or finished
  finally:
    if prefetcher is not None:
      prefetcher.close()
    manager.wait_until_finished()
    stage.close()

  # ================================ Result ======================================================
  paths = artifacts.paths(workdir)
  progress = loop.progress
  result = {"best_valid": progress.best_metrics, "best_epoch": progress.best_epoch,
            "best_step": progress.best_step, "finished": finished, "step": loop.step,
            "checkpoint_dir": paths.checkpoints, "metrics_path": stage.path(stage_lib.METRICS_FILE),
            "result_path": paths.result, "train_time_s": stage.elapsed()}
  if jax.process_index() == 0:
    io.write_json(paths.result, result)
  return result


class _Loop:
  """The train loop's state between steps: the train state, the step, the `Progress`, the
  measurements not yet logged and the clocks of the epoch (`EPOCH_TIMING`)."""

  def __init__(self, config, stage, manager, validate, steps_per_epoch, total_steps, step, state,
               progress, param_names, step_hook):
    self.t, self.ks = config.train, tuple(config.eval.ks)
    self.stage, self.manager, self.validate = stage, manager, validate
    self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
    self.step, self.state, self.progress = step, state, progress
    self.param_names, self.step_hook = param_names, step_hook
    self.last_saved = -1
    self.pending: list[dict] = []
    self.seen_nonfinite = 0
    self.eta = eta.Eta(total_steps, step)
    self.window = {"examples_start": time.time(), "input_wait": 0.0}
    self.timing = dict.fromkeys(("train_step_s", "input_wait_s", "valid_s", "checkpoint_s"), 0.0)
    self.epoch_start = time.time()

  @contextlib.contextmanager
  def timed(self, key: str):
    began = time.time()
    yield
    self.timing[key] += time.time() - began

  def train_step(self, train_step: Callable, batches) -> None:
    """One update, then `step_hook(step)`; logs every `log_every_steps`, checkpoints every
    `checkpoint_every_steps`."""
    wait = time.time()
    _, batch = next(batches)
    called = time.time()
    self.window["input_wait"] += called - wait
    self.timing["input_wait_s"] += called - wait
    with jax.transfer_guard("disallow"):
      self.state, measurements = train_step(self.state, batch)
    self.timing["train_step_s"] += time.time() - called
    self.step += 1
    self.pending.append(measurements)
    if self.step_hook is not None:
      self.step_hook(self.step)
    if self.step % self.t.log_every_steps == 0:
      self.flush()
    if (self.t.checkpoint_every_steps and self.step % self.t.checkpoint_every_steps == 0
        and self.step % self.steps_per_epoch):
      self.flush()
      self.save()

  def save(self, metrics: dict | None = None) -> None:
    if self.step == self.last_saved:
      return
    meta = resume.make_meta(artifacts.META_VERSION, self.stage.fingerprints, step=self.step,
                            progress=dataclasses.asdict(self.progress))
    with self.timed("checkpoint_s"):
      checkpoint.save(self.manager, self.step, self.state, meta, metrics=metrics, force=True)
    self.last_saved = self.step

  def flush(self) -> None:
    """Fetches the measurements since the last flush (the only per-interval host sync) and
    writes one "train" line."""
    if not self.pending:
      return
    with self.timed("train_step_s"):
      host, bad = jax.device_get((self.pending, self.state["nonfinite"]))
    self.pending = []
    if int(bad["first_step"]) >= 0 and self.t.nonfinite == "raise":
      raise FloatingPointError(nonfinite_error(bad, self.param_names))
    if int(bad["count"]) > self.seen_nonfinite:
      logging.warning("recommender: %d non-finite steps skipped so far (first at step %d)",
                      int(bad["count"]), int(bad["first_step"]))
      self.seen_nonfinite = int(bad["count"])
    elapsed = max(time.time() - self.window["examples_start"], 1e-9)
    _, eta_s = self.eta.tick(self.step)
    record = {"kind": "train", "step": self.step, "epoch": self.step / self.steps_per_epoch,
              **_mean_measurements(host), "lr": float(host[-1]["lr"]),
              "examples_per_s": float(sum(m["examples"] for m in host)) / elapsed,
              "input_wait_frac": self.window["input_wait"] / elapsed, "eta_s": eta_s,
              "time": self.stage.elapsed()}
    self.stage.metrics.write(record)
    logging.info("%s", progress_line.line(
        "recommender", self.step, self.total_steps, "step",
        {"epoch": round(record["epoch"], 2), "loss": record["loss"],
         "acc": record["token_accuracy"], "lr": record["lr"]},
        f"{record['examples_per_s']:.0f} ex/s", eta_s))
    self.window = {"examples_start": time.time(), "input_wait": 0.0}

  def end_epoch(self) -> None:
    """Validation, early stopping and the epoch checkpoint for epoch `validated_epochs` + 1."""
    epoch, p, t = self.progress.validated_epochs + 1, self.progress, self.t
    self.flush()
    improved = False
    if epoch % t.eval_every_epochs == 0 or epoch == t.epochs:
      with self.timed("valid_s"):
        metrics = self.validate(self.state["params"])
      self.stage.metrics.write({"kind": "valid", "step": self.step, "epoch": epoch, **metrics,
                                "time": self.stage.elapsed()})
      logging.info("recommender: epoch %d valid %s", epoch, progress_line.format_metrics(metrics))
      improved = p.record_validation(metrics, t.select_metric, epoch, self.step, t.patience)
    p.end_epoch(epoch, t.epochs)
    # Only improvements carry the metric: orbax's BestN then keeps exactly our best (ties and
    # later equal scores never displace it).
    self.save({t.select_metric: p.best} if improved else None)
    self._epoch_line(epoch)

  def _epoch_line(self, epoch: int) -> None:
    """The "epoch" line (`EPOCH_TIMING`); restarts the epoch's clocks."""
    now = time.time()
    wall = max(now - self.epoch_start, 1e-9)
    timing = self.timing
    record = {"kind": "epoch", "epoch": epoch, "step": self.step, "wall_s": wall, **timing,
              "outside_step_frac": 1.0 - min(timing["train_step_s"] / wall, 1.0),
              "time": self.stage.elapsed()}
    self.stage.metrics.write(record)
    logging.debug("recommender: epoch %d took %.2fs: train step %.2fs, input wait %.2fs, "
                 "valid %.2fs, checkpoint %.2fs; outside the train step %.1f%%", epoch, wall,
                 timing["train_step_s"], timing["input_wait_s"], timing["valid_s"],
                 timing["checkpoint_s"], 100 * record["outside_step_frac"])
    self.timing = dict.fromkeys(timing, 0.0)
    self.epoch_start = now


def _mean_measurements(host: list[dict]) -> dict[str, Any]:
  """Means over the finite steps of a log interval; "skipped" counts the others."""
  finite = [m for m in host if m["finite"]]
  mean = lambda key, empty: float(np.mean([m[key] for m in finite])) if finite else empty
  return {"loss": mean("loss", float("nan")), "accuracy": mean("accuracy", 0.0),
          "token_accuracy": mean("token_accuracy", 0.0),
          "grad_norm": mean("grad_norm", 0.0),
          "loss_per_level": (np.mean([m["loss_per_level"] for m in finite], 0).tolist()
                             if finite else []),
          "skipped": len(host) - len(finite)}


def nonfinite_error(nonfinite: dict, param_names: list[str]) -> str:
  """The message naming the first non-finite step and its offending tensors.

  Args:
    nonfinite: host copy of `state["nonfinite"]` with first_step >= 0.
    param_names: parameter paths in leaf order (`ModelDef.param_names`).
  """
  names = list(steps.NONFINITE_NAMES) + [f"grad {n}" for n in param_names]
  bad = [names[i] for i in np.flatnonzero(nonfinite["which"])]
  shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
  return (f"recommender: non-finite {shown} at step {int(nonfinite['first_step'])} (the update "
          f"was not applied; config.train.nonfinite='skip' skips such steps instead)")


def _check_train_config(config: ml_collections.ConfigDict) -> None:
  t = config.train
  if t.rng_impl not in ("rbg", "threefry2x32"):
    raise ValueError(f"config.train.rng_impl must be 'rbg' or 'threefry2x32', got "
                     f"{t.rng_impl!r}")
  if t.nonfinite not in ("raise", "skip"):
    raise ValueError(f"config.train.nonfinite must be 'raise' or 'skip', got {t.nonfinite!r}")
  for field in ("batch_size", "epochs", "patience", "eval_every_epochs", "checkpoint_keep",
                "log_every_steps"):
    if not isinstance(t[field], int) or t[field] < 1:
      raise ValueError(f"config.train.{field} must be a positive int, got {t[field]!r}")
  if not isinstance(t.checkpoint_every_steps, int) or t.checkpoint_every_steps < 0:
    raise ValueError(f"config.train.checkpoint_every_steps must be an int >= 0, got "
                     f"{t.checkpoint_every_steps!r}")
  name, _, k = t.select_metric.partition("@")
  if name not in ("ndcg", "recall") or not k.isdigit() or int(k) not in config.eval.ks:
    raise ValueError(f"config.train.select_metric must be ndcg@K or recall@K with K in "
                     f"config.eval.ks {tuple(config.eval.ks)}, got {t.select_metric!r}")
  if max(config.eval.ks) > config.eval.beam_size:
    raise ValueError(f"config.eval.beam_size ({config.eval.beam_size}) must be >= every K in "
                     f"config.eval.ks {tuple(config.eval.ks)}")
