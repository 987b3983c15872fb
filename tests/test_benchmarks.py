"""The benchmark harness (benchmarks/): timing, budget, inputs, and the physical-view counts.

No torch here (it is absent from CI); the PyTorch references are checked by the slow
tests/test_torch_parity.py.
"""
import pathlib
import sys
import time

from flax import nnx
import jax
import numpy as np
import optax
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import harness, physics, plot, synthetic_inputs  # pylint: disable=wrong-import-position
from r3vae_jax.configs import default  # pylint: disable=wrong-import-position
from r3vae_jax.tokenizer import programs as tok_programs  # pylint: disable=wrong-import-position

PEAKS = {"bf16": 1e15, "tf32": 5e14, "fp32": 6e13, "hbm": 3e12}


def test_random_sid_table_is_unique_with_dense_collision_tokens():
  rng = np.random.default_rng(0)
  table = synthetic_inputs.random_sid_table(rng, 3000, levels=2, codebook=8, max_collisions=200)
  assert table.shape == (3000, 3) and table.dtype == np.int32
  assert np.unique(table, axis=0).shape[0] == 3000
  assert table[:, :2].max() < 8 and table.min() >= 0
  for codes in {tuple(r) for r in table[:50, :2].tolist()}:
    group = table[(table[:, :2] == codes).all(1), 2]
    np.testing.assert_array_equal(group, np.arange(group.size))   # item order, 0..n-1


def test_random_sid_table_rejects_overfull_groups():
  with pytest.raises(ValueError, match="max_collisions"):
    synthetic_inputs.random_sid_table(np.random.default_rng(0), 100, 1, 2, max_collisions=10)


def test_random_histories_are_left_padded():
  h = synthetic_inputs.random_histories(np.random.default_rng(1), 200, 7, 50)
  assert h.shape == (200, 7) and h.max() < 50
  valid = h >= 0
  assert valid[:, -1].all()                                  # at least one item, the last slot
  assert (np.diff(valid.astype(int), axis=1) >= 0).all()     # padding only on the left
  assert (~valid).any()


def test_measure_takes_the_median_per_call():
  calls = []
  timing = harness.measure(lambda: calls.append(time.sleep(0.002)), lambda _: None, warmup=2,
                           repeats=3, iters=4)
  assert len(calls) == 2 + 3 * 4
  assert timing["repeats"] == 3 and len(timing["all_s"]) == 3
  assert 0.0015 < timing["seconds"] < 0.05
  assert timing["min_s"] <= timing["seconds"] <= timing["max_s"]


def test_step_loop_carries_the_state_and_cycles_the_batches():
  def step(state, batch):
    return state + batch, {"loss": state * 10}
  batches = iter([1, 2, 3])
  loop = harness.StepLoop(step, 0, batches.__next__)
  assert [loop(), loop(), loop()] == [0, 10, 30]
  assert loop.state == 6


def test_runner_records_errors_and_runs_heavy_variants_last_by_priority():
  order, writes = [], []
  runner = harness.Runner(time.perf_counter() + 60, heavy_reserve_s=1.0,
                          on_update=lambda: writes.append(1))
  entry = {}
  runner.variant(entry, "h2", lambda: order.append("h2") or {"rate": 2.0}, heavy=True, priority=2)
  runner.variant(entry, "h1", lambda: order.append("h1") or {"rate": 1.0}, heavy=True, priority=1)
  runner.variant(entry, "light", lambda: order.append("light") or {"rate": 3.0})
  runner.variant(entry, "bad", lambda: 1 / 0)
  assert entry["h1"]["skipped"].startswith("queued")
  runner.run_heavy()
  assert order == ["light", "h1", "h2"]
  assert entry["bad"]["error"].startswith("ZeroDivisionError")
  assert entry["h1"]["rate"] == 1.0 and "wall_s" in entry["h1"]
  assert len(writes) == 4


def test_runner_skips_heavy_variants_without_enough_budget():
  runner = harness.Runner(time.perf_counter() + 5, heavy_reserve_s=30.0)
  entry = {}
  runner.variant(entry, "light", lambda: {"rate": 1.0})
  runner.variant(entry, "heavy", lambda: {"rate": 2.0}, heavy=True)
  runner.run_heavy()
  assert entry["light"]["rate"] == 1.0
  assert "time budget" in entry["heavy"]["skipped"]


@pytest.mark.parametrize("flops,nbytes,seconds,word", [
    (5e14, 1e9, 1.1, "compute-bound"),        # compute floor 1 s, memory floor 0.3 ms
    (5e11, 3e12, 1.2, "memory-bound"),        # memory floor 1 s
    (5e11, 3e9, 1.0, "overhead"),             # floors 1 ms: 1000x slower than either
])
def test_achieved_verdicts(flops, nbytes, seconds, word):
  out = physics.achieved(flops, nbytes, seconds, PEAKS, "tf32")
  assert out["verdict"].startswith(word)
  assert out["tflop_per_s"] == pytest.approx(flops / seconds / 1e12)
  assert out["frac_peak_hbm"] == pytest.approx(nbytes / seconds / 3e12)


def test_achieved_without_peaks_has_no_verdict():
  out = physics.achieved(1e9, 1e9, 1.0, None, "tf32")
  assert "verdict" not in out and out["tflop_per_s"] == pytest.approx(1e-3)


@pytest.mark.parametrize("name", ["rqvae", "r3vae"])
def test_tokenizer_flop_count_agrees_with_xla(name):
  """The analytic count (matrix products only) is within 15% of XLA's cost analysis."""
  config = default.base_config()
  config.tokenizer = name
  config.sid.codebook_size = 32
  config.r3vae.update(default.R3VAE_SOFT_VARIANT)  # the variant `physics` counts
  c = config[name]
  c.hidden, c.latent_dim = (64, 32), 16
  dim, batch = 48, 256
  model = tok_programs.build_model(config, dim, 0)
  graphdef, params = nnx.split(model)
  tx = optax.adamw(1e-3)

  def step(state, x):
    grads = jax.grad(lambda p: nnx.merge(graphdef, p)(x).loss)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return {"params": optax.apply_updates(state["params"], updates), "opt": opt}

  state = {"params": params, "opt": tx.init(params)}
  x = np.zeros((batch, dim), np.float32)
  xla = physics.xla_cost(jax.jit(step).lower(state, x).compile())
  ours = physics.tokenizer_step(name, batch, dim, c.hidden, c.latent_dim, config.sid.levels,
                                config.sid.codebook_size, rating=c.get("rating", "soft"),
                                use_sc=c.get("use_sc", False), use_pd=c.get("use_pd", False))
  assert ours["flops"] == pytest.approx(xla["flops"], rel=0.15)
  assert xla["bytes"] > 0


def _run_record(commit, workloads, dtype="float32", device="H100"):
  return {"commit": commit, "device": device, "platform": "gpu", "versions": {},
          "precision": {"recommender_compute": dtype}, "workloads": workloads}


def test_merge_records_later_runs_replace_and_dtypes_stay_apart():
  first = _run_record("a", {"decode": {"speedup": 2.0}, "recommender_train": {"speedup": 1.5}})
  bf16 = _run_record("b", {"recommender_train": {"speedup": 3.0}}, dtype="bfloat16")
  again = _run_record("c", {"decode": {"speedup": 4.0}})
  merged = plot.merge_records([first, bf16, again])
  assert merged["workloads"] == {"decode": {"speedup": 4.0, "commit": "c"},
                                 "recommender_train": {"speedup": 1.5, "commit": "a"},
                                 "recommender_train (bfloat16)": {"speedup": 3.0, "commit": "b"}}
  assert merged["commit"] == "a, b, c"
  table = plot.markdown_table(merged)
  assert "| recommender_train (bfloat16) |" in table and table.count("\n") == 4


def test_merge_records_refuses_runs_of_different_devices():
  with pytest.raises(ValueError, match="differ in 'device'"):
    plot.merge_records([_run_record("a", {}), _run_record("b", {}, device="H200")])
