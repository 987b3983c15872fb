"""Recommender trainer on a real slice of Beauty: sharding, learning, exact resume, preemption.

Tolerance of the sharding test: 1e-5 absolute on the loss, gradient norm and updated
parameters (float32 reductions in a different order across devices).

Compile time dominates on CPU, so the CI tests share one config (no dropout) and one mesh
(data=4 x model=2 over the 8 fake devices): when they run in one process the training runs
reuse the step compiled by the sharding test (`programs.train_programs` caches programs). The
`slow` variants add the data=8 mesh and dropout.
"""
import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from r3vae_jax import parallel
from r3vae_jax.configs import default
from r3vae_jax.io import ArtifactError
from r3vae_jax.recommender import artifacts, data, evaluation, programs, tokens, train

USERS = 300


@pytest.fixture(scope="module")
def setup(beauty_users):
  """(config, sid_table, splits) for the first USERS users of Beauty, item ids made dense."""
  splits, table = beauty_users(USERS, levels=3, k=16)
  c = default.base_config()
  c.sid.levels, c.sid.codebook_size, c.sid.max_collisions = 3, 16, int(table[:, -1].max()) + 1
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32, num_heads=2,
                            d_kv=16, d_ff=64, dropout=0.0))
  c.data.max_history = 5
  c.train.update(dict(batch_size=512, epochs=2, warmup_steps=2, lr=5e-3, log_every_steps=2,
                      checkpoint_every_steps=5, patience=5, eval_every_epochs=1,
                      length_buckets=(), example_window=0))  # 7 steps per epoch, one shape
  c.eval.update(dict(beam_size=10, batch_size=320))
  c.mesh.update(dict(data=4, model=2))
  return c, table, splits


def _first_batch(config, table, splits):
  ex = data.train_examples(splits, config.data.max_history, config.train.example_window)
  layout = tokens.layout_from_config(config)
  source = data.BatchSource(ex, data.BatchPlan(len(ex), config.train.batch_size, 0),
                            layout.item_tokens(table), table)
  return source.host_batch(0)


def _total_steps(config, splits):
  examples = len(data.train_examples(splits, config.data.max_history,
                                     config.train.example_window))
  return config.train.epochs * -(-examples // config.train.batch_size)


@pytest.mark.parametrize("meshes", [
    ((4, 2),),
    pytest.param(((8, 1),), marks=pytest.mark.slow),
], ids=["data4_model2", "data8"])
def test_sharded_step_equals_single_device_step(setup, meshes):
  config, table, splits = setup
  batch = _first_batch(config, table, splits)
  out, initial = {}, None
  for n_data, n_model in ((1, 1),) + meshes:
    mesh = parallel.make_mesh(n_data, n_model, jax.devices()[:n_data * n_model])
    prog = programs.train_programs(config, mesh, _total_steps(config, splits))
    state = prog.init()
    # Parameters are created in their shardings, with the same values on every mesh.
    initial = jax.device_get(state["params"]) if initial is None else initial
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state["params"]), initial)
    state, measurements = prog.train_step(state, parallel.to_global(batch, mesh))
    out[n_data, n_model] = jax.device_get((measurements, state["params"]))
  (ref_m, ref_p) = out[1, 1]
  assert np.isfinite(ref_m["loss"]) and ref_m["grad_norm"] > 0
  for key in meshes:
    m, p = out[key]
    np.testing.assert_allclose(m["loss"], ref_m["loss"], atol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], ref_m["grad_norm"], atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p, ref_p)


def _records(workdir, kind):
  with open(os.path.join(workdir, "recommender", "metrics.jsonl"), encoding="utf-8") as f:
    return [r for r in map(json.loads, f) if r["kind"] == kind]


def _latest_params(config, table, workdir):
  mesh = parallel.config_mesh(config)
  return jax.device_get(artifacts.restore_params(config, workdir, table, mesh, "latest")[1])


class _Crash(Exception):
  pass


@pytest.mark.parametrize("dropout", [0.0, pytest.param(0.1, marks=pytest.mark.slow)])
def test_train_crash_sigterm_resume_evaluate(setup, tmp_path, dropout):
  """One test (so that pytest-xdist runs the reference training once): an uninterrupted run
  learns (2 epochs of 7 steps); a run killed at step 6 (last checkpoint 5), relaunched,
  SIGTERMed at step 12 and relaunched again ends with bitwise the same parameters and metrics;
  a finished run relaunches as a no-op, evaluates its best checkpoint and refuses another SID
  table."""
  config, table, splits = setup
  config = config.copy_and_resolve_references()
  config.recommender.dropout = dropout  # with dropout: its masks must replay exactly too
  reference = str(tmp_path / "reference")
  expected = train.train_recommender(config, reference, table, splits)

  # The uninterrupted run learns and logs.
  losses = [r["loss"] for r in _records(reference, "train")]
  assert np.mean(losses[-2:]) < losses[0] - 0.1, losses
  assert all(r["examples_per_s"] > 0 and r["eta_s"] >= 0 for r in _records(reference, "train"))
  valid = _records(reference, "valid")
  assert [r["epoch"] for r in valid] == [1, 2] and all(r["users"] == USERS for r in valid)
  assert expected["finished"] == "epochs" and expected["best_epoch"] in (1, 2)
  with open(expected["result_path"], encoding="utf-8") as f:
    assert json.load(f)["best_valid"] == expected["best_valid"]

  # Killed (no save at the kill), then preempted by SIGTERM (save and return), then finished.
  workdir = str(tmp_path / "interrupted")
  handler_before = signal.getsignal(signal.SIGTERM)

  def crash(step):
    if step == 6:
      raise _Crash("simulated kill: nothing saved since step 5")

  with pytest.raises(_Crash):
    train.train_recommender(config, workdir, table, splits, step_hook=crash)

  def sigterm(step):
    if step == 12:
      assert signal.getsignal(signal.SIGTERM) != handler_before, "no SIGTERM handler installed"
      os.kill(os.getpid(), signal.SIGTERM)

  preempted = train.train_recommender(config, workdir, table, splits, step_hook=sigterm)
  assert preempted["finished"] == "preempted" and preempted["step"] == 12
  assert os.path.isdir(os.path.join(workdir, "recommender", "checkpoints", "12"))
  assert signal.getsignal(signal.SIGTERM) == handler_before
  # A passed deadline (train.stop_at, in no fingerprint) stops a relaunch before any step.
  late = config.copy_and_resolve_references()
  late.train.stop_at = time.time() - 1.0
  trained = []
  stopped = train.train_recommender(late, workdir, table, splits, step_hook=trained.append)
  assert stopped["finished"] == "preempted" and stopped["step"] == 12 and not trained
  resumed = train.train_recommender(config, workdir, table, splits)
  assert resumed["finished"] == "epochs" and resumed["step"] == expected["step"]
  assert resumed["best_valid"] == expected["best_valid"]
  jax.tree.map(np.testing.assert_array_equal, _latest_params(config, table, workdir),
               _latest_params(config, table, reference))

  # A finished run: relaunching changes nothing; evaluation reads the best checkpoint.
  again = train.train_recommender(config, reference, table, splits)
  assert again["step"] == expected["step"] and again["best_valid"] == expected["best_valid"]
  metrics = evaluation.evaluate_recommender(config, reference, table, splits, split="valid")
  assert metrics["step"] == expected["best_step"]
  for key in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
    assert metrics[key] == pytest.approx(expected["best_valid"][key])
  assert os.path.exists(os.path.join(reference, "recommender", "valid_metrics.json"))

  # Checkpoints trained on one SID table are never resumed with another.
  other = table.copy()
  other[[0, 1]] = other[[1, 0]]
  with pytest.raises(ArtifactError, match="different sid_table"):
    train.train_recommender(config, reference, other, splits)


def test_nonfinite_step_is_skipped_and_named(setup):
  config, table, splits = setup
  mesh = parallel.config_mesh(config)
  batch = _first_batch(config, table, splits)
  # The same programs as the training runs (reused when they run in this process).
  prog = programs.train_programs(config, mesh, _total_steps(config, splits))
  state = prog.init()
  before = jax.device_get(state["params"])
  bad = dict(batch, weight=np.where(np.arange(len(batch["weight"])) == 3, np.nan,
                                    batch["weight"]).astype(np.float32))
  state, m = prog.train_step(state, parallel.to_global(bad, mesh))
  assert not m["finite"]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state["params"]), before)
  state, m = prog.train_step(state, parallel.to_global(batch, mesh))
  assert m["finite"]
  record = jax.device_get(state["nonfinite"])
  assert record["first_step"] == 0 and record["count"] == 1
  names = programs.model_programs(config, mesh).mdef.param_names()
  message = train.nonfinite_error(record, names)
  assert "non-finite loss" in message and "at step 0" in message
  with pytest.raises(ValueError, match="config.train.nonfinite"):
    bad_config = config.copy_and_resolve_references()
    bad_config.train.nonfinite = "ignore"
    train.train_recommender(bad_config, "/nonexistent", table, splits)


def test_seeds_share_one_compiled_train_step(setup):
  """The seed enters the update step as data (state["rng"]), not as a program constant: runs
  that differ only in their seed lower to the same program (one compilation, one cache entry),
  and still draw different dropout masks."""
  config, table, splits = setup
  batch = _first_batch(config, table, splits)
  mesh = parallel.make_mesh(1, 1, jax.devices()[:1])
  texts, losses, first_params = [], [], None
  placed = parallel.to_global(batch, mesh)
  for seed in (0, 1):
    c = config.copy_and_resolve_references()
    c.seed, c.recommender.dropout = seed, 0.1
    prog = programs.train_programs(c, mesh, _total_steps(c, splits))
    state = prog.init()
    texts.append(prog.train_step.lower(state, placed).as_text())
    if first_params is None:
      first_params = jax.device_get(state["params"])
    else:  # seed 0's parameters: only the dropout masks differ
      state["params"] = jax.device_put(first_params, prog.shardings["params"])
    losses.append(float(prog.train_step(state, placed)[1]["loss"]))
  assert texts[0] == texts[1]
  assert losses[0] != losses[1]  # same parameters, other dropout masks


def test_checkpoint_fingerprint_covers_what_orders_the_batches(setup):
  """A resume must see the same batches: length buckets and the example window are part of the
  config fingerprint; the learning rate and epochs (may change on a relaunch) are not."""
  config, table, _ = setup
  base = artifacts.fingerprints(config, table)["config"]
  for field, value in (("length_buckets", (4, 8)), ("example_window", 20), ("lr", 1.0),
                       ("epochs", 99)):
    c = config.copy_and_resolve_references()
    c.train[field] = value
    changed = artifacts.fingerprints(c, table)["config"] != base
    assert changed == (field in ("length_buckets", "example_window")), field
