"""Trainer of the gradient tokenizers (RQ-VAE, R3-VAE). Read it top to bottom.

  train_tokenizer(config, vectors, workdir) -> TrainResult

* Epochs run in chunks of `eval_every` (`programs.train_chunk`: one jitted, sharded scan per
  chunk); after every chunk the whole catalogue is coded and `quantize.sid_report` computed, one
  "eval" line is appended to `workdir/tokenizer/metrics.jsonl` and a checkpoint is written
  (orbax, `workdir/tokenizer/<name>_ckpt`).
* **Best epoch rule** (`sid.select`): among evaluated epochs, first any epoch whose SID table
  can be built (max group size <= `sid.max_collisions`), then "min_collision": the lowest
  collision rate (share of items whose full L-code tuple is not unique), ties broken by the
  lower reconstruction error; or "last": the latest such epoch (TIGER uses its final RQ-VAE).
  Its parameters are kept in the train state (`best_params`), so the result never needs an
  older checkpoint.
* A rerun resumes from the latest checkpoint and ends in the same state as an uninterrupted
  run (all randomness is a function of the seed and the epoch); raising `epochs` extends a
  finished run; any other change of the tokenizer's section, the SID shape, the seed or the
  vectors is refused (`_run_fingerprint`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r3vae_jax import checkpoint, io, parallel
from r3vae_jax.tokenizer import programs
from r3vae_jax.training import eta, resume, stage as stage_lib
from r3vae_jax.training import progress

STAGE = "tokenizer"
META_VERSION = 1
_RESUMABLE_FIELDS = ("epochs", "eval_every", "checkpoint_keep")  # may change between runs


@dataclasses.dataclass
class TrainResult:
  """The best epoch's model, codes int32[N, L] and metrics; every evaluation in `history`."""
  model: nnx.Module
  codes: np.ndarray
  metrics: dict[str, Any]
  best_epoch: int
  history: list[dict[str, Any]]


def train_tokenizer(config: ml_collections.ConfigDict, vectors: np.ndarray, workdir: str
                    ) -> TrainResult:
  """Trains `config.tokenizer` ("rqvae" | "r3vae") on item vectors, resuming if possible.

  Args:
    config: the full config (fields tokenizer, seed, sid, mesh and the tokenizer's section:
      hidden, latent_dim, lr, weight_decay, epochs, batch_size, eval_every, kmeans_init,
      kmeans_iters, kmeans_max_items, checkpoint_keep, ...).
    vectors: float32 `[N, D_in]` item vectors.
    workdir: checkpoints go to `workdir/tokenizer/<name>_ckpt`.

  Returns:
    `TrainResult` of the best evaluated epoch (rule in the module docstring).
  """
  name = config.tokenizer
  c = config[name]
  vectors = np.asarray(vectors, np.float32)
  if vectors.ndim != 2 or vectors.shape[0] < 2:
    raise ValueError(f"tokenizer: vectors must be [N >= 2, D], got shape {vectors.shape}")
  if c.epochs < 1 or c.eval_every < 1:
    raise ValueError(f"config.{name}: epochs and eval_every must be >= 1, "
                     f"got {c.epochs}, {c.eval_every}")
  stage = stage_lib.begin(workdir, STAGE, {"config": _run_fingerprint(config, vectors)})
  mesh = parallel.config_mesh(config)

  # ================================ Model, optimizer, checkpoint ================================
  manager = checkpoint.make_manager(stage.path(f"{name}_ckpt"), keep=c.checkpoint_keep)
  setup = programs.init_state(config, vectors, mesh,
                              kmeans=c.kmeans_init and not manager.all_steps())
  graphdef, x_dev, static = setup.graphdef, setup.vectors, setup.static
  tree = {"state": setup.state, "best_params": _copy(setup.state["params"])}
  restored = resume.resume(manager, tree, META_VERSION, stage.fingerprints)
  epoch, history = 0, []
  if restored is not None:
    epoch, tree, meta = restored
    history = meta["history"]
    logging.info("%s: resumed from epoch %d of %d", name, epoch, c.epochs)

  # ================================ Train loop ==================================================
  clock = eta.Eta(c.epochs, epoch)
  while epoch < c.epochs:
    num = min(c.eval_every, c.epochs - epoch)
    state, terms = programs.train_chunk(tree["state"], x_dev, setup.shuffle_key,
                                        jnp.int32(epoch), num_epochs=num, **static)
    epoch += num
    codes, recon = programs.encode(graphdef, state["params"], vectors, mesh)
    metrics = {"epoch": epoch,
               **programs.evaluate(vectors, codes, recon, config.sid.codebook_size),
               **{f"train_{k}": float(v[-1]) for k, v in terms.items()}}
    _check_finite(metrics, name, epoch)
    is_best = pick_best(history + [metrics], config.sid) is metrics
    tree = {"state": state,
            "best_params": _copy(state["params"]) if is_best else tree["best_params"]}
    history.append(metrics)
    checkpoint.save(manager, epoch, tree,
                    resume.make_meta(META_VERSION, stage.fingerprints, history=history))
    rate, eta_s = clock.tick(epoch)
    stage.metrics.write({"kind": "eval", "tokenizer": name, **metrics, "eta_s": eta_s,
                         "items_per_s": rate * vectors.shape[0],
                         "time": stage.elapsed()})
    logging.info("%s", progress.line(
        name, epoch, c.epochs, "epoch",
        {"loss": metrics["train_loss"], "recon": metrics["reconstruction_mse"],
         "collision": metrics["collision_rate"], "usage@1": metrics["usage_per_level"][0]},
        f"{rate * vectors.shape[0]:.0f} items/s", eta_s))
  manager.wait_until_finished()
  stage.close()

  # ================================ Result ======================================================
  best = pick_best(history, config.sid)
  codes, _ = programs.encode(graphdef, tree["best_params"], vectors, mesh)
  logging.info("%s: best epoch %d (collision rate %.4f, recon %.4g)", name, best["epoch"],
               best["collision_rate"], best["reconstruction_mse"])
  return TrainResult(nnx.merge(graphdef, tree["best_params"]), codes, best, int(best["epoch"]),
                     history)


def selection_key(metrics: dict[str, Any], max_collisions: int, rule: str = "min_collision"
                  ) -> tuple[float, ...]:
  """The best-epoch rule `rule` (`sid.select`; lower is better): see the module docstring."""
  unbuildable = float(metrics["max_group_size"] > max_collisions)
  if rule == "last":
    return (unbuildable, -float(metrics["epoch"]))
  return (unbuildable, metrics["collision_rate"], metrics["reconstruction_mse"])


def pick_best(history: list[dict[str, Any]], sid: ml_collections.ConfigDict) -> dict[str, Any]:
  """The best of the evaluated epochs' metrics under `sid.select` (the earliest on a tie).
  With `sid.spill_overflow` every epoch's table can be built (over-full tuples spill)."""
  limit = math.inf if sid.spill_overflow else sid.max_collisions
  return min(history, key=lambda m: selection_key(m, limit, sid.select))


def _run_fingerprint(config: ml_collections.ConfigDict, vectors: np.ndarray) -> str:
  """What a checkpoint must match to be resumed (raising `epochs` extends a finished run)."""
  name = config.tokenizer
  section = {k: v for k, v in config[name].to_dict().items() if k not in _RESUMABLE_FIELDS}
  return io.fingerprint_json({"tokenizer": name, "section": section,
                              "sid": config.sid.to_dict(), "seed": config.seed,
                              "vectors": io.fingerprint_array(vectors)})


def _copy(tree: Any) -> Any:
  """A device copy (the train state is donated to the next chunk; the best must survive)."""
  return jax.tree.map(jnp.copy, tree)


def _check_finite(metrics: dict[str, Any], name: str, epoch: int) -> None:
  """Training losses and reconstruction must be finite (SC/PD are NaN when undefined)."""
  bad = [k for k, v in metrics.items() if (k.startswith("train_") or k == "reconstruction_mse")
         and not math.isfinite(v)]
  if bad:
    raise FloatingPointError(f"{name}: non-finite {bad} at epoch {epoch}")
