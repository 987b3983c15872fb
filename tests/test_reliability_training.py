"""Reliability of training: preemption, corrupted checkpoints, mixed artifacts,
non-finite steps, determinism.

Every run is the tiny pipeline of tests/bad_inputs/reliability_harness.py in its own process:
`python -m r3vae_jax.main --mode=train` started by `subprocess` when it is killed or timed,
forked by tests/bad_inputs/run_main.py otherwise. All share a persistent compilation cache,
so only the reference run compiles. Kill steps are random; `RELIABILITY_SEED=N` replays them.
"""
import json
import os
import pathlib
import random
import re
import shutil
import signal
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "bad_inputs"))
import reliability_harness as rh  # pylint: disable=g-import-not-at-top,wrong-import-position

# One xdist worker runs this module (pytest.ini: --dist loadgroup): its shared runs are built
# once, and no worker waits on the other's lock while it builds them.
pytestmark = pytest.mark.xdist_group("reliability_training")

SEED = int(os.environ.get("RELIABILITY_SEED", random.SystemRandom().randrange(10**6)))
TOTAL = 2 * rh.STEPS_PER_EPOCH            # steps of the tiny run
POISON_STEP = 12                          # the step whose batch carries NaN weights


def _argv(workdir: pathlib.Path, mode: str = "train", **overrides) -> list[str]:
  return rh.tiny_flags(**overrides) + [f"--workdir={workdir}", f"--mode={mode}"]


def _summary(workdir: pathlib.Path) -> dict:
  """result.json's outcome, per-step train records (the last of each step) and validations."""
  root = workdir / "recommender"
  result = json.loads((root / "result.json").read_text())
  train, valid = {}, {}
  for line in (root / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    if r["kind"] == "train":
      train[r["step"]] = [r[k] for k in ("loss", "accuracy", "grad_norm", "lr", "loss_per_level",
                                         "skipped")]
    else:
      valid[r["epoch"]] = {k: v for k, v in r.items() if "@" in k}
  return {"outcome": {k: result[k] for k in ("best_valid", "best_step", "best_epoch", "step",
                                             "finished")},
          "train": train, "valid": valid}


def _checkpoint(workdir: pathlib.Path, step: int | None = None) -> tuple[int, dict, dict]:
  """(step, {leaf path: numpy array}, meta) of a recommender checkpoint (default: latest)."""
  manager = ocp.CheckpointManager(str(workdir / "recommender" / "checkpoints"))
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  manager.close()
  import jax  # pylint: disable=g-import-not-at-top
  arrays = {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(restored["state"])}
  return step, arrays, dict(restored["meta"])


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  root = workdir / "recommender" / "checkpoints"
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


def _assert_same_params(a: dict, b: dict) -> None:
  assert a.keys() == b.keys()
  differ = [k for k in a if a[k].tobytes() != b[k].tobytes() or a[k].shape != b[k].shape]
  assert not differ, f"parameters differ bitwise in {differ[:5]}"


def _assert_same_run(reference: pathlib.Path, workdir: pathlib.Path) -> None:
  """Same outcome, per-step losses, validation metrics and final train state, bitwise."""
  ref, got = _summary(reference), _summary(workdir)
  assert got["outcome"] == ref["outcome"]
  assert got["valid"] and all(got["valid"][e] == ref["valid"][e] for e in got["valid"])
  assert got["train"] and all(got["train"][s] == ref["train"][s] for s in got["train"]), (
      [s for s in got["train"] if got["train"][s] != ref["train"][s]][:5])
  ref_step, ref_state, _ = _checkpoint(reference)
  step, state, _ = _checkpoint(workdir)
  assert step == ref_step == TOTAL
  _assert_same_params(state, ref_state)


@pytest.fixture(scope="module")
def env():
  return rh.cache_env()


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
  return rh.shared_bases(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bases, env):
  """An uninterrupted tiny training run (the first process compiles, later ones hit the cache)."""
  root = rh.shared_dir(tmp_path_factory, "reference")
  with rh.once(root) as fresh:
    if fresh:
      shutil.copytree(bases["tokenized"], root / "work")
      launch = rh.launch_train(_argv(root / "work"), env, root / "train.log")
      assert launch.rc == 0, launch.output[-3000:]
      assert launch.steps[-1] == TOTAL
      print(f"reference run: first step {launch.recovery_s:.1f}s after start (cold compile)")
  return root / "work"


def _corrupt_silently(workdir: pathlib.Path, step: int) -> None:
  """Flips one bit of checkpoint `step`'s array data, keeping file sizes, at the first place
  where orbax alone still reads the checkpoint back without an error, with wrong values."""
  good = _checkpoint(workdir, step)[1]
  state_dir = workdir / "recommender" / "checkpoints" / str(step) / "state"
  files = sorted((p for p in state_dir.rglob("*") if p.is_file() and "/d/" in str(p)),
                 key=lambda p: -p.stat().st_size)
  for path in files:
    original = path.read_bytes()
    for position in range(len(original) // 2, len(original), 101):
      data = bytearray(original)
      data[position] ^= 0x01
      path.write_bytes(bytes(data))
      try:
        read = _checkpoint(workdir, step)[1]
      except Exception:  # pylint: disable=broad-except  # orbax noticed; find a silent one
        continue
      if any(read[k].tobytes() != good[k].tobytes() for k in good):
        return
    path.write_bytes(original)
  raise AssertionError(f"no bit flip of checkpoint {step} went unnoticed by orbax")


def test_preemption_and_corruption_resume_exactly(reference, bases, env, tmp_path):
  """SIGKILL at a random step; SIGTERM at a later one (saves and exits 0); then one bit of the
  checkpoint SIGTERM saved is flipped where orbax alone reads it back silently: the relaunch
  reports it (checksums), sets it aside, resumes from the checkpoint before and ends bitwise
  equal to an uninterrupted run of the same config and seed."""
  rng = random.Random(SEED)
  kill_at = rng.randint(3, 16)
  term_at = rng.randint(kill_at + 6, TOTAL - 8)
  work = tmp_path / "work"
  shutil.copytree(bases["tokenized"], work)
  info = f"RELIABILITY_SEED={SEED}: SIGKILL after step {kill_at}, SIGTERM after {term_at}"

  killed = rh.launch_train(_argv(work), env, tmp_path / "1.log", kill_at, signal.SIGKILL)
  assert killed.rc == -signal.SIGKILL and killed.signalled_at is not None, info

  term = rh.launch_train(_argv(work), env, tmp_path / "2.log", term_at, signal.SIGTERM)
  assert term.rc == 0, f"{info}\n{term.output[-3000:]}"
  assert term.resumed_from is None or term.resumed_from <= killed.signalled_at + 1, info
  assert term.steps[0] == (term.resumed_from or 0) + 1, info
  saved = re.search(r"preempted; checkpoint saved at step (\d+)", term.output)
  assert saved and int(saved.group(1)) >= term.signalled_at, f"{info}\n{term.output[-3000:]}"
  saved = int(saved.group(1))
  steps = _checkpoint_steps(work)
  assert steps[-1] == saved and len(steps) >= 2, (info, steps)

  _corrupt_silently(work, saved)
  final = rh.launch_train(_argv(work), env, tmp_path / "3.log")
  assert final.rc == 0, final.output[-3000:]
  assert re.search(rf"Checkpoint \S+/{saved} is unreadable \(checksum mismatch", final.output)
  assert final.resumed_from == steps[-2] and final.steps[0] == steps[-2] + 1, info
  assert final.steps[-1] == TOTAL
  assert (work / "recommender" / "checkpoints" / f"{saved}.unreadable").is_dir()
  _assert_same_run(reference, work)
  print(f"{info}; recovery (start -> first new step): after SIGKILL {term.recovery_s:.1f}s "
        f"(resumed from {term.resumed_from}), after SIGTERM + corruption {final.recovery_s:.1f}s "
        f"(resumed from {final.resumed_from})")


def _set_meta_version(workdir: pathlib.Path, version: int) -> None:
  for path in (workdir / "recommender" / "checkpoints").glob("*/meta/metadata"):
    meta = json.loads(path.read_text())
    meta["version"] = version
    path.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def batch(tmp_path_factory, bases, reference, env):
  """Runs of the tiny pipeline in one batch of forked processes: {name: (Result, workdir,
  hashes before)}."""
  from r3vae_jax import main  # pylint: disable=g-import-not-at-top
  root = rh.shared_dir(tmp_path_factory, "training_batch")
  setups = {
      "nan_raise": ("tokenized", "train", {}, POISON_STEP),
      "nan_skip": ("tokenized", "train", {"train__nonfinite": "skip"}, POISON_STEP),
      "train_again": ("tokenized", "train", {}, None),
      "tokenize_again": ("vectors", "tokenize", {}, None),
      "evaluate": ("reference", "evaluate", {}, None),
      "other_sid_evaluate": ("reference", "evaluate", {}, None),
      "other_sid_train": ("reference", "train", {}, None),
      "old_meta_train": ("reference", "train", {}, None),
      "old_meta_evaluate": ("reference", "evaluate", {}, None),
      "sid_from_other_vectors": ("tokenized", "train", {}, None),
  }
  with rh.once(root) as fresh:
    if fresh:
      jobs, before = [], {}
      for name, (base, mode, overrides, poison) in setups.items():
        work = root / name
        shutil.copytree(reference if base == "reference" else bases[base], work)
        if name.startswith("other_sid"):   # a SID table from another tokenizer run
          tokenize = main._stage_tokenize  # pylint: disable=protected-access
          tokenize(rh.tiny_config(rqkmeans__seed=1), str(work))
        if name.startswith("old_meta"):    # checkpoints written by an older version
          _set_meta_version(work, 0)
        if name == "sid_from_other_vectors":
          path = work / "tokenizer" / "sid_metrics.json"
          metrics = json.loads(path.read_text())
          metrics["meta"]["vectors_fingerprint"] = "0" * 16
          path.write_text(json.dumps(metrics))
        before[name] = rh.tree_hashes(work)
        jobs.append({"name": name, "argv": _argv(work, mode, **overrides),
                     "poison_step": poison})
      results = rh.run_jobs(jobs, root / "logs", env)
      (root / "runs.json").write_text(json.dumps(
          {n: {"rc": r.rc, "output": r.output, "seconds": r.seconds, "before": before[n]}
           for n, r in results.items()}))
  runs = json.loads((root / "runs.json").read_text())
  return {n: (rh.Result(r["rc"], r["output"], r["seconds"]), root / n, r["before"])
          for n, r in runs.items()}


def _assert_finite_checkpoints(workdir: pathlib.Path) -> list[int]:
  steps = _checkpoint_steps(workdir)
  for step in steps:
    _, state, _ = _checkpoint(workdir, step)
    bad = [k for k, v in state.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    assert not bad, f"checkpoint {step} holds non-finite {bad}"
  return steps


def test_nonfinite_raise_stops_naming_the_step(batch):
  result, work, before = batch["nan_raise"]
  rh.assert_clean_failure(result, rf"train: recommender: non-finite loss.* at step {POISON_STEP}",
                          before, rh.tree_hashes(work))
  steps = _assert_finite_checkpoints(work)
  assert steps and max(steps) <= POISON_STEP, steps


def test_nonfinite_skip_skips_the_update(batch, reference):
  result, work, _ = batch["nan_skip"]
  assert result.rc == 0, result.output[-3000:]
  assert "non-finite steps skipped" in result.output
  summary = _summary(work)
  assert summary["train"][POISON_STEP + 1][-1] == 1          # that step's update was skipped
  assert sum(r[-1] for r in summary["train"].values()) == 1
  assert summary["outcome"]["finished"] == "epochs"
  assert _assert_finite_checkpoints(work)[-1] == TOTAL
  with pytest.raises(AssertionError, match="differ bitwise"):
    _assert_same_params(_checkpoint(work)[1], _checkpoint(reference)[1])


@pytest.mark.parametrize("name,expect", [
    ("other_sid_evaluate",
     r"evaluate: .*sid_table.npy with fingerprint \w+, but that file now holds \w+ .*"
     r"rerun --mode=train"),
    ("other_sid_train", r"train: .*trained with a different sid_table"),
    ("old_meta_train", r"train: .*checkpoint meta version 0, this code reads version 2"),
    ("old_meta_evaluate", r"evaluate: .*checkpoint meta version 0"),
    ("sid_from_other_vectors", r"sid_table\.npy: made from vectors with fingerprint 0{16}"),
])
def test_mixed_or_old_artifacts_are_refused(batch, reference, name, expect):
  result, work, before = batch[name]
  rh.assert_clean_failure(result, expect, before, rh.tree_hashes(work))
  if name.startswith("other_sid"):   # the refused table really differs from the trained one
    assert (work / "tokenizer" / "sid_table.npy").read_bytes() != \
        (reference / "tokenizer" / "sid_table.npy").read_bytes()


def test_evaluate_of_the_trained_workdir_succeeds(batch):
  result, work, _ = batch["evaluate"]
  assert result.rc == 0, result.output[-3000:]
  metrics = json.loads((work / "eval.json").read_text())
  assert metrics["test"]["users"] == 120 and 0 <= metrics["test"]["ndcg@10"] <= 1


def test_same_config_and_seed_give_the_same_sids_and_metrics(batch, bases, reference):
  """Tokenize in a second process == the in-process tokenize; a second training == the first."""
  _, work, _ = batch["tokenize_again"]
  tokenized = bases["tokenized"] / "tokenizer"
  assert (work / "tokenizer" / "sid_table.npy").read_bytes() == \
      (tokenized / "sid_table.npy").read_bytes()
  strip = lambda m: {k: v for k, v in m.items() if k != "fit_seconds"}
  assert strip(json.loads((work / "tokenizer" / "sid_metrics.json").read_text())) == \
      strip(json.loads((tokenized / "sid_metrics.json").read_text()))
  result, work, _ = batch["train_again"]
  assert result.rc == 0, result.output[-3000:]
  _assert_same_run(reference, work)


@pytest.mark.slow
def test_preemption_full(bases, env, tmp_path):
  """4 epochs validated each epoch, dropout on; SIGKILL three times and SIGTERM once at random
  steps; the last relaunch without the compilation cache (cold recovery). Equal to an
  uninterrupted run."""
  overrides = {"train__epochs": 4, "train__eval_every_epochs": 1, "recommender__dropout": 0.1}
  total = 4 * rh.STEPS_PER_EPOCH
  reference = tmp_path / "reference"
  shutil.copytree(bases["tokenized"], reference)
  ref = rh.launch_train(_argv(reference, **overrides), env, tmp_path / "ref.log")
  assert ref.rc == 0 and ref.steps[-1] == total
  rng = random.Random(SEED)
  stops = sorted(rng.sample(range(3, total - 4), 4))
  sigs = [signal.SIGKILL] * 4
  sigs[rng.randrange(4)] = signal.SIGTERM
  work = tmp_path / "work"
  shutil.copytree(bases["tokenized"], work)
  report = [f"RELIABILITY_SEED={SEED}, reference first step {ref.recovery_s:.1f}s"]
  for i, (stop, sig) in enumerate(zip(stops, sigs)):
    run = rh.launch_train(_argv(work, **overrides), env, tmp_path / f"{i}.log", stop, sig)
    assert run.rc == (0 if sig == signal.SIGTERM else -signal.SIGKILL), run.output[-3000:]
    report.append(f"{signal.Signals(sig).name} after step {run.signalled_at} (run resumed "
                  f"from {run.resumed_from}, first step {run.recovery_s:.1f}s)")
  cold = {k: v for k, v in env.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  final = rh.launch_train(_argv(work, **overrides), cold, tmp_path / "final.log")
  assert final.rc == 0 and final.steps[-1] == total, final.output[-3000:]
  report.append(f"cold relaunch resumed from {final.resumed_from}, first step "
                f"{final.recovery_s:.1f}s")
  print("; ".join(report))
  ref_summary, summary = _summary(reference), _summary(work)
  assert summary == ref_summary
  _assert_same_params(_checkpoint(work)[1], _checkpoint(reference)[1])
