"""Trainer of the generative recommender. Read it top to bottom (big_vision style).

  train_recommender(config, workdir, sid_table, splits) -> dict
  evaluate_recommender(config, workdir, sid_table, splits, split="test") -> dict

Files under `workdir/recommender/`:
  checkpoints/   orbax: the latest `config.train.checkpoint_keep` steps plus the best one by
                 validation `config.train.select_metric`; each carries `meta` (progress of the
                 run, SID-table and config fingerprints).
  metrics.jsonl  one JSON object per log interval ("kind": "train"), validation ("valid") and
                 epoch ("epoch": where the wall time went, `EPOCH_TIMING`); a resumed run
                 appends (steps replayed after a crash appear again).
  result.json    the best validation metrics and the paths, when training ends.

Resume is exact: the data order, the dropout keys and the learning rate are functions of the
step, which is restored with the params and optimizer state; relaunching the same command after
a crash or a SIGTERM continues from the latest readable checkpoint. A finished run relaunched
unchanged does nothing; relaunched with more `train.epochs` it trains on (the learning-rate
schedule then stretches to the new length). Changing anything in `fingerprints` is refused.
"""
from __future__ import annotations

from concurrent import futures
import dataclasses
import json
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from r3vae_jax import checkpoint, evaluate, io, parallel
from r3vae_jax.decode import build_trie
from r3vae_jax.data.splits import Splits
from r3vae_jax.recommender import data, ema, fusion, popularity, ranking, sharding, smoothing
from r3vae_jax.recommender import steps
from r3vae_jax.recommender import state as state_lib
from r3vae_jax.recommender.preemption import PreemptionWatch
from r3vae_jax.recommender.tokens import check_sid_table, layout_from_config

META_VERSION = 2  # 2: the train state holds "rng" (dropout key data)

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


@dataclasses.dataclass
class Progress:
  """What the loop has decided so far; saved in every checkpoint's meta."""
  validated_epochs: int = 0          # epochs whose end-of-epoch bookkeeping is done
  best: float = -1.0                 # best validation select_metric
  best_epoch: int = -1
  best_step: int = -1
  best_metrics: dict = dataclasses.field(default_factory=dict)
  bad_validations: int = 0           # validations in a row without improvement
  finished: str = ""                 # "" while training; "early_stop" | "epochs" when done


@dataclasses.dataclass(frozen=True)
class Paths:
  root: str
  checkpoints: str
  metrics: str
  result: str


def _paths(workdir: str) -> Paths:
  root = os.path.join(workdir, "recommender")
  return Paths(root, os.path.join(root, "checkpoints"), os.path.join(root, "metrics.jsonl"),
               os.path.join(root, "result.json"))


def fingerprints(config: ml_collections.ConfigDict, sid_table: np.ndarray) -> dict[str, str]:
  """What a checkpoint must agree with: the SID table and the config that shapes the run."""
  # embed_grad changes how a gradient is computed, not its value: runs may resume across it.
  model = {k: v for k, v in config.recommender.to_dict().items() if k != "embed_grad"}
  run = {"recommender": model, "sid": config.sid.to_dict(),
         "max_history": config.data.max_history, "seed": config.seed,
         "batch_size": config.train.batch_size,
         # the batch order (data.make_plan) depends on these two: a resume must keep them
         "length_buckets": list(config.train.length_buckets),
         "example_window": config.train.example_window}
  return {"sid_table": io.fingerprint_array(sid_table), "config": io.fingerprint_json(run)}


def _check_meta(meta: dict, expected: dict[str, str], directory: str) -> None:
  if meta.get("version") != META_VERSION:
    raise io.ArtifactError(f"{directory}: checkpoint meta version {meta.get('version')!r}, "
                           f"this code reads version {META_VERSION}; use a fresh --workdir")
  for key, value in expected.items():
    if meta.get("fingerprints", {}).get(key) != value:
      raise io.ArtifactError(
          f"{directory}: the checkpoints were trained with a different {key} (fingerprint "
          f"{meta.get('fingerprints', {}).get(key)} != {value}); refusing to mix runs. Use a "
          f"fresh --workdir or the {key} they were trained with")


class MetricsLog:
  """Appends JSON lines to `path` (process 0 only)."""

  def __init__(self, path: str):
    self.path = path
    io.makedirs(os.path.dirname(path))

  def write(self, record: dict) -> None:
    """Appends `record`; on object stores (no append) the file is written again whole."""
    line = json.dumps(record, sort_keys=True) + "\n"
    if io.is_local(self.path):
      with io.open_file(self.path, "a") as f:
        f.write(line)
    else:
      io.write_text(self.path, (io.read_text(self.path) if io.exists(self.path) else "") + line)


@dataclasses.dataclass(frozen=True)
class ModelPrograms:
  """What inference needs: the model structure, where params live, constrained generation.

  `generate_scored(params, batch, trie)` -> (item ids, scores) `[B, beam]` (`steps.make_generate`);
  `generate` the same, item ids only.
  """
  mdef: state_lib.ModelDef
  param_shardings: Any
  generate_scored: Callable

  def generate(self, params: Any, batch: Any, trie: Any) -> jax.Array:
    return self.generate_scored(params, batch, trie)[0]


@dataclasses.dataclass(frozen=True)
class TrainPrograms:
  """What training adds: the optimizer, the train-state layout, init and the update step."""
  tx: Any
  shardings: Any
  init: Callable
  train_step: Callable


_PROGRAMS: dict[tuple, Any] = {}


def cached_program(key: tuple, build: Callable[[], Any]) -> Any:
  """`build()` the first time `key` is asked for in this process, the same object after.

  `jax.jit` caches executables per function object, so reusing the objects means that a second
  run of the same config on the same mesh in one process (evaluation after training, a resume
  after an in-process interruption, tests) compiles nothing again.
  """
  if key not in _PROGRAMS:
    _PROGRAMS[key] = build()
  return _PROGRAMS[key]


def model_programs(config: ml_collections.ConfigDict, mesh: Mesh) -> ModelPrograms:
  """Builds the inference programs, or reuses them (`cached_program`)."""
  key = ("model", mesh, io.fingerprint_json(
      {"recommender": config.recommender.to_dict(), "sid": config.sid.to_dict(),
       "seed": config.seed, "rng_impl": config.train.rng_impl,
       "beam_size": config.eval.beam_size, "fsdp_min_size": config.train.fsdp_min_size}))

  def build():
    mdef = state_lib.model_def(config)
    param_sh = sharding.param_shardings(mdef.abstract_params, mesh, config.train.fsdp_min_size)
    return ModelPrograms(mdef, param_sh, steps.make_generate(
        mdef, config.eval.beam_size, param_sh, mesh))

  return cached_program(key, build)


def train_programs(config: ml_collections.ConfigDict, mesh: Mesh, total_steps: int
                   ) -> TrainPrograms:
  """As `model_programs`, for training `total_steps` steps (the learning-rate schedule)."""
  key = ("train", mesh, total_steps, io.fingerprint_json(config.to_dict()))

  def build():
    mdef = model_programs(config, mesh).mdef
    tx, schedule = state_lib.make_optimizer(config, total_steps)
    shardings = state_lib.state_shardings(mdef, tx, mesh, config.train.fsdp_min_size)
    return TrainPrograms(tx, shardings, state_lib.make_init(mdef, tx, shardings),
                         steps.make_train_step(mdef, tx, schedule, config.train.rng_impl,
                                               shardings, mesh))

  return cached_program(key, build)


def precompile_buckets(compile_batch: Callable[[Any], Any], source: Any, mesh: Mesh) -> None:
  """Compiles the train step for every history-length bucket at once, before training.

  Each bucket is its own batch shape, so its own program; compiled lazily they would run one
  after another inside the first epoch. Compiling ahead of time on threads (XLA releases the
  GIL) overlaps them; `jax.jit` then finds each executable in its cache.

  Args:
    compile_batch: compiles the train step for one global batch (e.g.
      `lambda b: step.lower(state, b).compile()`).
    source: has `plan` and `host_batch(step)` (`data.BatchSource`, DIGER's item batches).
    mesh: the run's.
  """
  if not isinstance(source.plan, data.BucketedPlan):
    return
  first_step = {items: steps[0] for items, steps in data.steps_by_width(source.plan).items()}
  if len(first_step) < 2:
    return
  start = time.time()
  batches = [parallel.to_global(source.host_batch(s), mesh) for s in first_step.values()]
  with futures.ThreadPoolExecutor(len(batches)) as pool:
    list(pool.map(compile_batch, batches))
  logging.info("compiled the train step for history lengths %s in %.1fs",
               sorted(first_step), time.time() - start)


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


def eval_seen(config: ml_collections.ConfigDict, examples: data.Examples) -> np.ndarray | None:
  """The items removed from each ranking: `examples.seen` when `config.eval.exclude_seen`."""
  if not isinstance(config.eval.exclude_seen, bool):
    raise ValueError(f"config.eval.exclude_seen must be a bool, got "
                     f"{config.eval.exclude_seen!r}")
  return examples.seen if config.eval.exclude_seen else None


def _ranking_inputs(examples: data.Examples, item_tokens: np.ndarray, sid_table: np.ndarray
                    ) -> dict[str, np.ndarray]:
  batch = data.make_batch(examples, np.arange(len(examples)), np.ones(len(examples)),
                          item_tokens, sid_table)
  return {"enc_tokens": batch["enc_tokens"], "enc_mask": batch["enc_mask"]}


def _eval_batch_size(config: ml_collections.ConfigDict, num_users: int, mesh: Mesh) -> int:
  multiple = np.lcm(mesh.shape[parallel.DATA], jax.process_count())
  size = min(config.eval.batch_size, num_users)
  return int(-(-size // multiple) * multiple)


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
    "epochs" | "preempted"), "step", "checkpoint_dir", "metrics_path", "result_path"}.
  """
  start_time = time.time()
  _check_train_config(config)
  t = config.train
  layout = layout_from_config(config)
  table = check_sid_table(sid_table, layout, "recommender: sid_table")
  paths = _paths(workdir)

  # ================================ Mesh ========================================================
  mesh = parallel.config_mesh(config)
  parallel.check_batch_size(t.batch_size, mesh)
  logging.info("recommender: mesh %s over %d devices, %d processes", dict(mesh.shape),
               mesh.size, jax.process_count())

  # ================================ Input pipeline ==============================================
  train_ex = data.train_examples(splits, config.data.max_history, t.example_window)
  valid_ex = data.eval_examples(splits, "valid", config.data.max_history)
  data.check_items(train_ex, table.shape[0], "recommender: training data")
  data.check_items(valid_ex, table.shape[0], "recommender: validation data")
  item_tokens = layout.item_tokens(table)
  plan = data.make_plan(train_ex, t.batch_size, config.seed, t.length_buckets)
  steps_per_epoch = plan.steps_per_epoch
  total_steps = t.epochs * steps_per_epoch
  support = (smoothing.support_table(table, layout.level_sizes, t.smoothing_support)
             if t.label_smoothing > 0 else None)
  source = data.BatchSource(train_ex, plan, item_tokens, table, support, t.label_smoothing)
  valid_inputs = _ranking_inputs(valid_ex, item_tokens, table)
  valid_seen = eval_seen(config, valid_ex)
  eval_batch = _eval_batch_size(config, len(valid_ex), mesh)
  logging.info("recommender: %d training examples, %d steps/epoch x %d epochs, %d valid users",
               len(train_ex), steps_per_epoch, t.epochs, len(valid_ex))

  # ================================ Model & optimizer ===========================================
  model_prog = model_programs(config, mesh)
  train_prog = train_programs(config, mesh, total_steps)
  abstract = state_lib.abstract_state(model_prog.mdef, train_prog.tx, train_prog.shardings)
  logging.info("recommender: %d parameters",
               sum(x.size for x in jax.tree.leaves(abstract["params"])))
  trie = build_trie(table, list(layout.level_sizes))
  param_names = model_prog.mdef.param_names()

  # ================================ Load checkpoint =============================================
  manager = checkpoint.make_manager(paths.checkpoints, keep=t.checkpoint_keep,
                                    best_metric=t.select_metric, best_mode="max")
  expected = fingerprints(config, table)
  restored = checkpoint.restore(manager, abstract)
  if restored is None:
    step, state, progress, last_saved = 0, train_prog.init(), Progress(), -1
  else:
    step, state, meta = restored
    _check_meta(meta, expected, paths.checkpoints)
    progress, last_saved = Progress(**meta["progress"]), step
    if progress.finished == "epochs" and progress.validated_epochs < t.epochs:
      progress.finished = ""  # relaunched with more epochs: train on
    logging.info("recommender: resumed from step %d (%d epochs validated)", step,
                 progress.validated_epochs)
  log = MetricsLog(paths.metrics)

  def save(metrics: dict | None = None) -> None:
    nonlocal last_saved
    if step == last_saved:
      return
    meta = {"version": META_VERSION, "step": step, "progress": dataclasses.asdict(progress),
            "fingerprints": expected}
    checkpoint.save(manager, step, state, meta, metrics=metrics, force=True)
    last_saved = step

  # ================================ Evals =======================================================
  def validate() -> dict[str, float]:
    rank = lambda batch: model_prog.generate(ema.eval_params(state), batch, trie)
    return ranking.score(rank, valid_inputs, valid_ex.target, valid_seen, eval_batch, mesh,
                         tuple(config.eval.ks))

  # ================================ Logging =====================================================
  pending: list[dict] = []
  window = {"start": time.time(), "steps": 0, "input_wait": 0.0}
  timing = dict.fromkeys(("train_step_s", "input_wait_s", "valid_s", "checkpoint_s"), 0.0)
  timing["start"] = time.time()
  seen_nonfinite = 0

  def flush() -> None:
    """Fetches the measurements since the last flush (the only per-interval host sync)."""
    nonlocal seen_nonfinite
    if not pending:
      return
    wait = time.time()
    host, bad = jax.device_get((pending, state["nonfinite"]))
    timing["train_step_s"] += time.time() - wait
    pending.clear()
    if int(bad["first_step"]) >= 0 and t.nonfinite == "raise":
      raise FloatingPointError(nonfinite_error(bad, param_names))
    if int(bad["count"]) > seen_nonfinite:
      logging.warning("recommender: %d non-finite steps skipped so far (first at step %d)",
                      int(bad["count"]), int(bad["first_step"]))
      seen_nonfinite = int(bad["count"])
    finite = [m for m in host if m["finite"]]
    elapsed = max(time.time() - window["start"], 1e-9)
    examples = float(sum(m["examples"] for m in host))
    record = {
        "kind": "train", "step": step, "epoch": step / steps_per_epoch,
        "loss": float(np.mean([m["loss"] for m in finite])) if finite else float("nan"),
        "accuracy": float(np.mean([m["accuracy"] for m in finite])) if finite else 0.0,
        "grad_norm": float(np.mean([m["grad_norm"] for m in finite])) if finite else 0.0,
        "loss_per_level": np.mean([m["loss_per_level"] for m in finite], 0).tolist()
                          if finite else [],
        "lr": float(host[-1]["lr"]), "skipped": len(host) - len(finite),
        "examples_per_s": examples / elapsed,
        "input_wait_frac": window["input_wait"] / elapsed,
        "eta_s": (total_steps - step) * elapsed / max(window["steps"], 1),
        "time": time.time() - start_time,
    }
    log.write(record)
    logging.info("recommender: step %d/%d epoch %.2f loss %.4f acc %.3f |g| %.3f lr %.2e "
                 "%.0f ex/s ETA %.0fs", step, total_steps, record["epoch"], record["loss"],
                 record["accuracy"], record["grad_norm"], record["lr"],
                 record["examples_per_s"], record["eta_s"])
    window.update(start=time.time(), steps=0, input_wait=0.0)

  def end_epoch() -> None:
    """Validation, early stopping and the epoch checkpoint for epoch `validated_epochs`."""
    epoch = progress.validated_epochs
    flush()
    progress.validated_epochs = epoch + 1
    metrics, improved = None, False
    if (epoch + 1) % t.eval_every_epochs == 0 or epoch + 1 == t.epochs:
      began = time.time()
      metrics = validate()
      timing["valid_s"] += time.time() - began
      log.write({"kind": "valid", "step": step, "epoch": epoch + 1, **metrics,
                 "time": time.time() - start_time})
      logging.info("recommender: epoch %d valid %s", epoch + 1,
                   " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
      value = metrics[t.select_metric]
      improved = value > progress.best
      if improved:
        progress.best, progress.best_epoch, progress.best_step = value, epoch + 1, step
        progress.best_metrics = dict(metrics)
        progress.bad_validations = 0
      else:
        progress.bad_validations += 1
      if progress.bad_validations >= t.patience:
        progress.finished = "early_stop"
    if progress.validated_epochs >= t.epochs:
      progress.finished = progress.finished or "epochs"
    # Only improvements carry the metric: orbax's BestN then keeps exactly our best (ties and
    # later equal scores never displace it).
    began = time.time()
    save({t.select_metric: progress.best} if metrics and improved else None)
    timing["checkpoint_s"] += time.time() - began
    write_epoch_timing(epoch + 1)

  def write_epoch_timing(epoch: int) -> None:
    """The "epoch" line (`EPOCH_TIMING`); restarts the epoch's clocks."""
    now = time.time()
    wall = max(now - timing.pop("start"), 1e-9)
    record = {"kind": "epoch", "epoch": epoch, "step": step, "wall_s": wall,
              **timing,
              "outside_step_frac": 1.0 - min(timing["train_step_s"] / wall, 1.0),
              "time": now - start_time}
    log.write(record)
    logging.info("recommender: epoch %d took %.2fs: train step %.2fs, input wait %.2fs, "
                 "valid %.2fs, checkpoint %.2fs; outside the train step %.1f%%", epoch, wall,
                 timing["train_step_s"], timing["input_wait_s"], timing["valid_s"],
                 timing["checkpoint_s"], 100 * record["outside_step_frac"])
    timing.update(dict.fromkeys(timing, 0.0), start=now)

  # ================================ Train loop ==================================================
  finished = progress.finished
  if not finished:
    precompile_buckets(lambda b: train_prog.train_step.lower(abstract, b).compile(), source,
                       mesh)
  prefetcher, batches = None, None
  try:
    with PreemptionWatch(t.stop_at) as preemption:
      while not progress.finished:
        if progress.validated_epochs < step // steps_per_epoch:
          end_epoch()
          continue
        if preemption.requested(step):
          flush()
          save()
          finished = "preempted"
          logging.warning("recommender: preempted; checkpoint saved at step %d", step)
          break
        if batches is None:
          prefetcher = data.device_batches(source, mesh, step, total_steps, t.prefetch)
          batches = iter(prefetcher)
        wait = time.time()
        _, batch = next(batches)
        called = time.time()
        window["input_wait"] += called - wait
        timing["input_wait_s"] += called - wait
        with jax.transfer_guard("disallow"):
          state, measurements = train_prog.train_step(state, batch)
        timing["train_step_s"] += time.time() - called
        step += 1
        window["steps"] += 1
        pending.append(measurements)
        if step_hook is not None:
          step_hook(step)
        if step % t.log_every_steps == 0:
          flush()
        if (t.checkpoint_every_steps and step % t.checkpoint_every_steps == 0
            and step % steps_per_epoch):
          flush()
          save()
      finished = progress.finished or finished
  finally:
    if prefetcher is not None:
      prefetcher.close()
    manager.wait_until_finished()

  # ================================ Result ======================================================
  result = {"best_valid": progress.best_metrics, "best_epoch": progress.best_epoch,
            "best_step": progress.best_step, "finished": finished, "step": step,
            "checkpoint_dir": paths.checkpoints, "metrics_path": paths.metrics,
            "result_path": paths.result, "train_time_s": time.time() - start_time}
  if jax.process_index() == 0:
    io.write_json(paths.result, result)
  return result


def restore_params(config: ml_collections.ConfigDict, workdir: str, sid_table: np.ndarray,
                   mesh: Mesh, which: str = "best") -> tuple[ModelPrograms, dict, int]:
  """Loads trained parameters for inference.

  Args:
    config, workdir, sid_table: as `train_recommender`.
    mesh: where to place the parameters.
    which: "best" (by validation select_metric; the latest when none was validated) or
      "latest".

  Returns:
    (the model programs, params pure dict placed on `mesh` (their moving average when the run
    tracked one, `train.ema_decay`), checkpoint step).

  Raises:
    ArtifactError: no checkpoint, or one trained on another SID table / config.
  """
  if which not in ("best", "latest"):
    raise ValueError(f"restore_params: which must be 'best' or 'latest', got {which!r}")
  layout = layout_from_config(config)
  table = check_sid_table(sid_table, layout, "recommender: sid_table")
  paths = _paths(workdir)
  manager = checkpoint.make_manager(paths.checkpoints, keep=config.train.checkpoint_keep,
                                    best_metric=config.train.select_metric, async_save=False)
  try:
    ckpt_step = manager.best_step() if which == "best" else None
    ckpt_step = manager.latest_step() if ckpt_step is None else ckpt_step
    if ckpt_step is None:
      raise io.ArtifactError(f"{paths.checkpoints}: no recommender checkpoint; run "
                             "--mode=train first")
    prog = model_programs(config, mesh)
    tx, _ = state_lib.make_optimizer(config, 1)
    shardings = state_lib.state_shardings(prog.mdef, tx, mesh, config.train.fsdp_min_size)
    _, state, meta = checkpoint.restore(
        manager, state_lib.abstract_state(prog.mdef, tx, shardings), step=ckpt_step)
  finally:
    manager.close()
  _check_meta(meta, fingerprints(config, table), paths.checkpoints)
  return prog, ema.eval_params(state), ckpt_step


def evaluate_recommender(config: ml_collections.ConfigDict, workdir: str,
                         sid_table: np.ndarray, splits: Splits, split: str = "test"
                         ) -> dict[str, float]:
  """Recall@K / NDCG@K of the best checkpoint on `split` ("valid" | "test").

  Writes `workdir/recommender/{split}_metrics.json` and `{split}_ranking.npz` (the ranking
  shown to each user, with its beam scores: `fusion.save_ranking`).

  Returns:
    {"recall@K", "ndcg@K" for K in config.eval.ks, "users", "step", "popularity": {alpha as
    text: the same metrics after `popularity.rerank` with that alpha, for each alpha in
    config.eval.popularity_alphas}}.
  """
  mesh = parallel.config_mesh(config)
  table = check_sid_table(sid_table, layout_from_config(config), "recommender: sid_table")
  prog, params, ckpt_step = restore_params(config, workdir, table, mesh)
  root = _paths(workdir).root
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
  writes the scored rankings there (`fusion.save_ranking`: what `python -m r3vae_jax.fuse`
  combines across runs)."""
  layout = layout_from_config(config)
  examples = data.eval_examples(splits, split, config.data.max_history)
  data.check_items(examples, table.shape[0], f"recommender: {split} data")
  trie = build_trie(table, list(layout.level_sizes))
  inputs = _ranking_inputs(examples, layout.item_tokens(table), table)
  ids, scores = evaluate.rank_in_batches(
      lambda batch: generate_scored(batch, trie), inputs,
      _eval_batch_size(config, len(examples), mesh), mesh)
  seen, ks = eval_seen(config, examples), tuple(config.eval.ks)
  shown, shown_scores = (ids, scores) if seen is None else ranking.drop_seen(ids, seen, scores)
  metrics = ranking.metrics_of(shown, examples.target, None, ks)
  if ranking_path is not None and jax.process_index() == 0:
    fusion.save_ranking(ranking_path, shown, shown_scores, examples.target)
  log_pop = popularity.log_popularity(splits.train, table.shape[0])
  metrics["popularity"] = {
      f"{alpha:g}": ranking.metrics_of(popularity.rerank(ids, scores, log_pop, alpha),
                                       examples.target, seen, ks)
      for alpha in config.eval.popularity_alphas}
  return metrics
