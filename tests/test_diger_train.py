"""DIGER joint training end to end on a small synthetic catalogue (8 fake devices)."""
import json
import os
import shutil
import signal
import time

import jax
import numpy as np
import pytest

from r3vae_jax import decode
from r3vae_jax import io
from r3vae_jax import quantize
from r3vae_jax.configs import default
from r3vae_jax.configs import ablations
from r3vae_jax.data import splits as splits_lib
from r3vae_jax.data import synthetic
from r3vae_jax.diger import train as diger_train
from r3vae_jax.recommender import data as rec_data
from r3vae_jax.recommender import evaluation as rec_evaluation
from r3vae_jax.tokenizer import sid_table
from conftest import load_results_script


def small_config(decay: str = "frequency"):
  c = default.get_config("diger")
  c.diger.decay = decay
  c.data.synthetic.update(dict(num_items=240, num_users=160, num_topics=8, dim=16, max_len=12))
  c.data.max_history = 6
  c.sid.update(dict(codebook_size=16, max_collisions=64))
  c.rqvae.update(dict(epochs=4, eval_every=4, batch_size=64, hidden=(32,), latent_dim=8,
                      kmeans_iters=10))
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=16,
                            num_heads=2, d_kv=8, d_ff=32, dropout=0.0))
  c.train.update(dict(batch_size=64, epochs=3, warmup_steps=5, patience=5, prefetch=1,
                      log_every_steps=1000, length_buckets=(3,)))
  c.eval.update(dict(beam_size=10, batch_size=64))
  return c


COLLAPSED_EPOCH = 2


# The tests of `synthetic_run` run on one xdist worker (pytest.ini: --dist loadgroup), so the
# module fixture's DIGER training happens once per session rather than once per worker.
SHARES_SYNTHETIC_RUN = pytest.mark.xdist_group("diger_synthetic_run")


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
  """3 joint epochs; epoch 2's codes are made to collapse (a tuple holding more items than
  sid.max_collisions), which must not stop the run."""
  config = small_config()
  inter, vectors = synthetic.make_synthetic(config.data.synthetic)
  splits = splits_lib.leave_one_out(inter.sequences)
  workdir = str(tmp_path_factory.mktemp("diger"))
  real, calls = diger_train.build_table, []

  def collapse_one_epoch(*args):
    table, stats = real(*args)
    calls.append(stats)
    if len(calls) == COLLAPSED_EPOCH + 1:  # call 0 is the pretrained tokenizer's table
      return None, {**stats, "max_group_size": config.sid.max_collisions + 1}
    return table, stats

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(diger_train, "build_table", collapse_one_epoch)
    summary = diger_train.train_diger(config, workdir, vectors, splits)
  return config, workdir, vectors, splits, summary


@SHARES_SYNTHETIC_RUN
def test_history_logs_usage_collisions_sigma_and_validation(synthetic_run):
  config, _, _, _, summary = synthetic_run
  history = summary["history"]
  assert [h["epoch"] for h in history] == [0, 1, 2, 3]
  for h in history:
    assert len(h["usage_per_level"]) == config.sid.levels
    assert all(0 < u <= 1 for u in h["usage_per_level"])
    assert 0 <= h["collision_rate"] <= 1
    assert len(h["sigma"]) == config.sid.levels
  for h in history[1:]:
    assert h["train_codebook_grad_norm"] > 0          # the tokenizer is being trained
    assert 0 <= h["train_noisy_fraction"] <= 1
    assert h["train_noise_factor"] == 1.0             # no annealing by default
    assert np.isfinite(h["train_loss"])
    if h["epoch"] != COLLAPSED_EPOCH:
      assert h["table_valid"] and 0 <= h["valid_ndcg@10"] <= 1 and h["valid_users"] == 160
  assert summary["best_epoch"] in (1, 3)


@SHARES_SYNTHETIC_RUN
def test_epoch_without_valid_table_is_recorded_and_skipped(synthetic_run):
  """Collapsed codes: the run goes on with the last valid table; that epoch is not validated."""
  _, _, _, _, summary = synthetic_run
  collapsed = summary["history"][COLLAPSED_EPOCH]
  assert collapsed["table_valid"] is False
  assert not any(k.startswith("valid_") for k in collapsed)
  assert summary["best_epoch"] != COLLAPSED_EPOCH


@SHARES_SYNTHETIC_RUN
def test_every_epoch_is_a_json_line(synthetic_run):
  _, workdir, _, _, summary = synthetic_run
  with open(os.path.join(workdir, "diger", "metrics.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(line) for line in f]
  assert lines == json.loads(json.dumps(summary["history"]))
  assert {"usage_per_level", "collision_rate", "sigma"} <= set(lines[-1])


@SHARES_SYNTHETIC_RUN
def test_saved_table_recommender_and_tokenizer_belong_together(synthetic_run):
  config, workdir, _, splits, summary = synthetic_run
  table = np.load(os.path.join(workdir, "diger", "sid_table.npy"))
  loaded, metrics = sid_table.load_sid_table(workdir)
  np.testing.assert_array_equal(table, loaded)
  assert metrics["tokenizer"] == "diger" and metrics["meta"]["best_epoch"] == summary["best_epoch"]
  assert len(np.unique(table, axis=0)) == len(table) == 240
  assert os.path.isdir(os.path.join(workdir, "diger", "model"))
  # --mode=evaluate's path reads the exported recommender with the saved table: same ranking.
  valid = rec_evaluation.evaluate_recommender(config, workdir, table, splits, split="valid")
  assert valid["ndcg@10"] == pytest.approx(summary["valid"]["ndcg@10"], abs=1e-6)


@SHARES_SYNTHETIC_RUN
def test_rerun_resumes_without_training_again(synthetic_run):
  config, workdir, vectors, splits, summary = synthetic_run
  again = diger_train.train_diger(config, workdir, vectors, splits)
  assert again["history"] == summary["history"]
  assert again["best_epoch"] == summary["best_epoch"]


def test_sigterm_or_deadline_saves_the_best_epoch_so_far_and_a_relaunch_finishes(tmp_path):
  """SIGTERM at the second step of epoch 2: the run stops before that step, with epoch 1 saved
  as the best (diger/summary.json, the exported recommender) and the handler put back. A
  relaunch whose `train.stop_at` has passed resumes after epoch 1 (the deadline is in no
  fingerprint) and stops at once; one without a deadline trains epoch 2 and finishes, with the
  history (training losses, codes, validation), SID table and SID changes of a run never
  stopped. The settings are the DIGER rows' (detached reader, the tokenizer's rate following the
  recommender's schedule, noise annealed by step), which stop at a deadline and resume."""
  config = small_config()
  ablations.apply(config, "diger", "detached_follow")
  # One history-length bucket (one step program to compile): stopping and resuming, not
  # bucketing or sharding (`synthetic_run` trains with buckets on 8 devices).
  config.train.update(dict(epochs=2, eval_every_epochs=1, length_buckets=()))
  config.mesh.data = 1
  inter, vectors = synthetic.make_synthetic(config.data.synthetic)
  splits = splits_lib.leave_one_out(inter.sequences)
  train_ex = rec_data.train_examples(splits, config.data.max_history, config.train.example_window)
  steps_per_epoch = rec_data.make_plan(train_ex, config.train.batch_size, config.seed,
                                       config.train.length_buckets).steps_per_epoch
  assert steps_per_epoch > 1
  workdir = str(tmp_path)
  handler_before = signal.getsignal(signal.SIGTERM)
  trained = []

  def sigterm_in_epoch_2(step):
    trained.append(step)
    if step == steps_per_epoch + 1:
      assert signal.getsignal(signal.SIGTERM) != handler_before, "no SIGTERM handler installed"
      os.kill(os.getpid(), signal.SIGTERM)

  stopped = diger_train.train_diger(config, workdir, vectors, splits,
                                    step_hook=sigterm_in_epoch_2)
  assert stopped["stopped"] == "preempted" and stopped["best_epoch"] == 1
  assert [h["epoch"] for h in stopped["history"]] == [0, 1]
  assert trained == list(range(steps_per_epoch + 2))
  assert signal.getsignal(signal.SIGTERM) == handler_before
  with open(os.path.join(workdir, "diger", "summary.json"), encoding="utf-8") as f:
    assert json.load(f)["best_epoch"] == 1
  assert os.path.isdir(os.path.join(workdir, "diger", "model"))

  late = config.copy_and_resolve_references()
  late.train.stop_at = time.time() - 1.0
  trained.clear()
  again = diger_train.train_diger(late, workdir, vectors, splits, step_hook=trained.append)
  assert again["stopped"] == "preempted" and trained == [steps_per_epoch]
  assert again["history"] == stopped["history"]

  finished = diger_train.train_diger(config, workdir, vectors, splits)
  assert finished["stopped"] == "finished"
  assert [h["epoch"] for h in finished["history"]] == [0, 1, 2]
  assert finished["history"][1] == stopped["history"][1]

  whole_dir = str(tmp_path / "never_stopped")  # from the same pretrained RQ-VAE (not refitted)
  shutil.copytree(os.path.join(workdir, "tokenizer", f"{config.diger.pretrain}_ckpt"),
                  os.path.join(whole_dir, "tokenizer", f"{config.diger.pretrain}_ckpt"))
  whole = diger_train.train_diger(config, whole_dir, vectors, splits)

  def without_time(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

  assert without_time(finished["history"]) == without_time(whole["history"])
  assert (finished["best_epoch"], finished["sid_changes"]) == (whole["best_epoch"],
                                                               whole["sid_changes"])
  np.testing.assert_array_equal(np.load(os.path.join(workdir, "diger", "sid_table.npy")),
                                np.load(os.path.join(whole_dir, "diger", "sid_table.npy")))


def test_bad_decay_is_a_clear_error(tmp_path):
  config = small_config("annealed")
  with pytest.raises(ValueError, match="config.diger.decay"):
    diger_train.train_diger(config, str(tmp_path), np.zeros((4, 2), np.float32),
                            splits_lib.leave_one_out([np.arange(4)]))


@pytest.mark.parametrize("field,value", [("noise_anneal_fraction", 2.0),
                                         ("noise_anneal_schedule", "step"),
                                         ("reader_codes", "table"),
                                         ("tokenizer_schedule", "cosine")])
def test_bad_annealing_or_reader_codes_is_a_clear_error(tmp_path, field, value):
  config = small_config()
  config.diger[field] = value
  with pytest.raises(ValueError, match=f"config.diger.{field}"):
    diger_train.train_diger(config, str(tmp_path), np.zeros((4, 2), np.float32),
                            splits_lib.leave_one_out([np.arange(4)]))


@pytest.mark.parametrize("mode", ["constant", "follow"])
def test_tokenizer_lr_follows_the_recommender_schedule_or_stays(mode):
  """With "follow" the tokenizer's lr has the recommender's warm-up and cosine decay, peaking at
  tokenizer_lr, so the last codebook updates are ~0; with "constant" it is tokenizer_lr
  throughout. Checked on the optimizer's actual updates too."""
  config = small_config()
  config.train.update(dict(lr=1e-3, schedule="cosine", warmup_steps=4, clip_norm=0.0))
  config.diger.update(dict(tokenizer_lr=1e-5, tokenizer_schedule=mode))
  config[config.diger.pretrain].weight_decay = 0.0
  total = 20
  tx = diger_train.make_optimizer(config, total)
  _, rec_schedule = diger_train.rec_state.make_optimizer(config, total)
  lr = diger_train.tokenizer_lr_schedule(config, rec_schedule)
  expected = {s: (1e-5 if mode == "constant" else float(rec_schedule(s)) * 1e-2)
              for s in (0, 2, 4, 12, 19)}
  for step, want in expected.items():
    np.testing.assert_allclose(float(lr(step)), want, rtol=1e-5, atol=1e-12)
  if mode == "follow":
    assert expected[4] == pytest.approx(1e-5) and expected[19] < 1e-7
  params = {"tokenizer": {"w": np.ones(3, np.float32)}, "recommender": {"w": np.ones(3, np.float32)},
            "sigma": np.ones(3, np.float32)}
  grads = jax.tree.map(np.ones_like, params)
  state = tx.init(params)
  for step in range(total):
    updates, state = tx.update(grads, state, params)
    # Adam's normalised step is 1 for a constant gradient, so the update is -lr(step).
    np.testing.assert_allclose(np.asarray(updates["tokenizer"]["w"]), -expected.get(
        step, float(lr(step))), rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_encoder_zeroes_only_the_encoder_updates(freeze):
  """diger.freeze_encoder: the tokenizer's encoder gets zero updates; its codebooks, decoder,
  the recommender and sigma still move."""
  config = small_config()
  config.diger.freeze_encoder = freeze
  config.train.warmup_steps = 0  # a first update > 0 for every group
  tx = diger_train.make_optimizer(config, 10)
  ones = lambda: np.ones(3, np.float32)
  params = {"tokenizer": {"encoder": {"w": ones()}, "decoder": {"w": ones()},
                          "codebooks": ones()},
            "recommender": {"w": ones()}, "sigma": ones()}
  updates, _ = tx.update(jax.tree.map(np.ones_like, params), tx.init(params), params)
  moved = {path: bool(np.any(np.asarray(u) != 0))
           for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]}
  for path, nonzero in moved.items():
    is_encoder = "encoder" in jax.tree_util.keystr(path)
    assert nonzero == (not (freeze and is_encoder)), jax.tree_util.keystr(path)


def test_training_examples_are_the_fixed_table_trainers(tmp_path):
  """Same protocol as the fixed-table rows: history cap and train.example_window."""
  config = small_config()
  config.train.example_window = 7
  inter, vectors = synthetic.make_synthetic(config.data.synthetic)
  splits = splits_lib.leave_one_out(inter.sequences)
  calls = []

  class Stop(Exception):
    pass

  def record(*args):
    calls.append(args)
    raise Stop

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(diger_train.rec_data, "train_examples", record)
    with pytest.raises(Stop):
      diger_train.train_diger(config, str(tmp_path), vectors, splits)
  assert calls == [(splits, config.data.max_history, 7)]


def test_item_batches_follow_the_length_buckets_and_visit_every_example_once():
  """Batches of one bucket are cut to its length, only padding is cut, and an epoch holds
  every training example once (plus weight-0 filler rows)."""
  config = small_config()
  inter, _ = synthetic.make_synthetic(config.data.synthetic)
  examples = diger_train.rec_data.train_examples(splits_lib.leave_one_out(inter.sequences),
                                                 config.data.max_history, 0)
  plan = diger_train.rec_data.make_plan(examples, 64, 0, (3,))
  source = diger_train.ItemBatchSource(examples, plan)
  widths, seen = set(), []
  for step in range(plan.steps_per_epoch):
    batch = source.host_batch(step)
    width = batch["history"].shape[1]
    widths.add(width)
    kept = batch["weight"] > 0
    seen += [(tuple(h[h >= 0]), t) for h, t in zip(batch["history"][kept], batch["target"][kept])]
  assert widths == {3, config.data.max_history}
  expected = [(tuple(h[h >= 0]), t) for h, t in zip(examples.history, examples.target)]
  assert sorted(seen) == sorted(expected)


@SHARES_SYNTHETIC_RUN  # the same programs as `synthetic_run`'s, compiled once in that worker
def test_results_json_describes_the_table_the_recommender_was_tested_on(tmp_path):
  """run_all with DIGER: sid_metrics are those of DIGER's saved table (not the pretrained
  RQ-VAE's, which stay as pretrained_sid_metrics)."""
  from r3vae_jax import main  # pylint: disable=g-import-not-at-top
  config = small_config()  # as `synthetic_run` (its run length too): no new step to compile
  results = main.run_all(config, str(tmp_path))
  saved = json.loads((tmp_path / "tokenizer" / "sid_metrics.json").read_text())
  assert saved["tokenizer"] == "diger"
  assert results["sid_metrics"] == results["train"]["sid_metrics"]
  assert results["sid_metrics"]["collision_rate"] == pytest.approx(saved["collision_rate"])
  assert results["pretrained_sid_metrics"]["tokenizer"] == "rqvae"
  vectors = np.load(tmp_path / "vectors.npy")
  assert results["vectors_fingerprint"] == io.fingerprint_array(vectors)
  # The trainer's count of moved SIDs agrees with results/diger_code_drift.py, which encodes
  # the items again with the pretrained checkpoint.
  io.write_json(str(tmp_path / "config.json"), config.to_dict())  # as the command line writes
  drift = load_results_script("diger_code_drift").drift(str(tmp_path))
  changes = results["train"]["sid_changes"]
  assert changes["sid_changed"] == drift["sid_changed"] > 0
  assert changes["code_changed"] == [level["code_changed"] for level in drift["levels"]]


def test_fixed_shape_trie_pads_dense_levels_to_capacity():
  """Two tables with different prefix counts give tries of one shape (one beam-search compile
  per run), each padded level being the built one plus unreachable -1 rows."""
  rng = np.random.default_rng(0)
  sizes = [4, 4, 8]
  shapes = []
  for spread in (4, 2):  # level-1 codes drawn from 4 or 2 values: different node counts
    codes = np.c_[rng.integers(0, spread, 30), rng.integers(0, 4, 30)]
    table = np.c_[codes, np.asarray(quantize.collision_tokens(codes))]
    built = decode.build_trie(table, sizes)
    fixed = diger_train.fixed_shape_trie(table, sizes)
    shapes.append([x.shape for x in jax.tree.leaves(fixed)])
    for b, f in zip(built.levels, fixed.levels):
      rows = b.child.shape[0]
      np.testing.assert_array_equal(f.child[:rows], b.child)
      assert np.all(np.asarray(f.child[rows:]) == -1)
  assert shapes[0] == shapes[1]
  assert [s[0] for s in shapes[0][:3]] == [1, 4, 16]


def test_runs_differing_only_in_the_decay_share_one_traced_step():
  """The decay is an argument of the joint step: a second run with another decay reuses the
  first one's jitted step (no new trace), while another setting gets its own."""
  from r3vae_jax import parallel  # pylint: disable=g-import-not-at-top
  from r3vae_jax.tokenizer import programs as tok_programs  # pylint: disable=g-import-not-at-top
  steps = {}
  for decay, tau in (("frequency", None), ("none", None), ("none", 0.5)):
    config = small_config(decay)
    config.mesh.data = 1
    if tau is not None:
      config.diger.tau = tau
    pre = config.copy_and_resolve_references()
    pre.tokenizer = config.diger.pretrain
    tokenizer = tok_programs.build_model(pre, config.data.synthetic.dim, config.seed)
    program = diger_train.joint_program(config, diger_train.joint_config(config), tokenizer,
                                        parallel.config_mesh(config), 10)
    steps[decay, tau] = program.train_step
  assert steps["frequency", None] is steps["none", None]
  assert steps["none", 0.5] is not steps["none", None]
