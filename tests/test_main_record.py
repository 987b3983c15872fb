"""What `main` records about a run: the wall time of every launch in a workdir (a run stopped by
time, or killed, and launched again trains on, and its results JSON counts both launches, the
killed one up to its last record), and the SID table's transition lift beside the tokenizer's
metrics."""
import json
import os
import time

import numpy as np
import pytest

from r3vae_jax import io, main, quantize
from r3vae_jax.configs import default
from r3vae_jax.data import dataset, splits
from r3vae_jax.tokenizer import sid_table


class Killed(Exception):
  """A launch that dies inside a stage."""


def fake_stages(die_in=None):
  """Stages that return what run_all reads, and one that dies when asked."""
  outputs = {"prepare": {"users": 3}, "vectors": {"source": "fake", "fingerprint": "f"},
             "tokenize": {"collision_rate": 0.0}, "train": {"best_epoch": 1},
             "evaluate": {"test": {"ndcg@10": 0.5}}}

  def stage(name):
    def run(config, workdir):
      del config, workdir
      if name == die_in:
        raise Killed(name)
      return outputs[name]
    return run
  return {name: stage(name) for name in outputs}


def test_a_relaunch_sums_the_wall_time_of_every_launch(tmp_path, monkeypatch):
  config, workdir = default.get_config("rqkmeans"), str(tmp_path)
  monkeypatch.setattr(main, "_STAGES", fake_stages(die_in="train"))
  with pytest.raises(Killed):
    main.run_all(config, workdir)
  killed = io.read_json(os.path.join(workdir, "wall_time.json"))["launches"]
  # Up to the death, the stage it died in included.
  assert [sorted(w) for w in killed] == [["prepare", "tokenize", "train", "vectors"]]
  assert not os.path.exists(os.path.join(workdir, "results.json"))

  monkeypatch.setattr(main, "_STAGES", fake_stages())
  first = main.run_all(config, workdir)  # the launch after the killed one
  second = main.run_all(config, workdir)  # and one more, after a finished launch
  launches = second["wall_time_s_per_launch"]
  assert len(launches) == 3 and launches[0] == killed[0] and launches[:2] == first[
      "wall_time_s_per_launch"]
  for stage in ("prepare", "vectors", "tokenize", "train", "evaluate"):
    assert second["wall_time_s"][stage] == pytest.approx(
        sum(w.get(stage, 0.0) for w in launches), abs=0.02)
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    assert json.load(f)["wall_time_s"] == second["wall_time_s"]


def test_the_stage_under_way_is_written_while_it_runs(tmp_path, monkeypatch):
  """A launch killed where no Python code runs (SIGKILL, the OOM killer) leaves the record the
  clock wrote last: the stage under way, timed up to that write."""
  seen = {}
  stages = fake_stages()
  finished_train = stages["train"]

  def slow_train(config, workdir):
    time.sleep(0.5)  # several beats of the clock
    seen["record"] = io.read_json(os.path.join(workdir, "wall_time.json"))["launches"]
    return finished_train(config, workdir)

  monkeypatch.setattr(main, "_STAGES", {**stages, "train": slow_train})
  monkeypatch.setattr(main, "_WALL_TIME_EVERY_S", 0.05)
  results = main.run_all(default.get_config("rqkmeans"), str(tmp_path))
  (during,) = seen["record"]
  assert sorted(during) == ["prepare", "tokenize", "train", "vectors"]
  assert 0.2 <= during["train"] <= results["wall_time_s"]["train"]


def test_one_launch_has_no_per_launch_list(tmp_path, monkeypatch):
  monkeypatch.setattr(main, "_STAGES", fake_stages())
  results = main.run_all(default.get_config("rqkmeans"), str(tmp_path))
  assert "wall_time_s_per_launch" not in results
  assert set(results["wall_time_s"]) == {"prepare", "vectors", "tokenize", "train", "evaluate"}


def test_the_xla_environment_of_a_run_is_recorded(tmp_path, monkeypatch):
  """XLA_FLAGS and the GPU memory share (set when rows share a GPU) land in results.json; unset
  ones are left out."""
  monkeypatch.setattr(main, "_STAGES", fake_stages())
  monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=true")
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  results = main.run_all(default.get_config("rqkmeans"), str(tmp_path))
  assert results["xla_environment"] == {"XLA_FLAGS": "--xla_gpu_deterministic_ops=true"}
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.3")
  monkeypatch.delenv("XLA_FLAGS")
  results = main.run_all(default.get_config("rqkmeans"), str(tmp_path / "shared"))
  assert results["xla_environment"] == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"}


@pytest.mark.parametrize("content", ['{"launches": 3}', '[1, 2]',
                                     '{"launches": [{"train": "long"}]}'])
def test_a_damaged_wall_time_file_is_named(tmp_path, monkeypatch, content):
  (tmp_path / "wall_time.json").write_text(content)
  monkeypatch.setattr(main, "_STAGES", fake_stages())
  with pytest.raises(io.ArtifactError, match="wall_time.json"):
    main.run_all(default.get_config("rqkmeans"), str(tmp_path))


def test_tokenize_records_the_tables_transition_lift(tmp_path):
  """On synthetic topic data (users keep to topics, items of a topic have close vectors) the
  level-1 codes group consecutive items far above chance; the stage's numbers are those of
  `quantize.transition_lift` on the saved table and the training split."""
  config, workdir = default.get_config("rqkmeans"), str(tmp_path)
  config.data.synthetic.update(num_items=200, num_users=300, num_topics=8, dim=16)
  config.sid.update(codebook_size=8, max_collisions=32)
  config.rqkmeans.iters = 10
  for stage in ("prepare", "vectors"):
    main._STAGES[stage](config, workdir)
  metrics = main._STAGES["tokenize"](config, workdir)
  table, _ = sid_table.load_sid_table(workdir)
  train = splits.leave_one_out(dataset.load_prepared(workdir).sequences).train
  expected = quantize.transition_lift(table[:, :config.sid.levels], train)
  np.testing.assert_allclose(metrics["transition_lift"], expected)
  assert len(metrics["transition_lift"]) == config.sid.levels
  assert metrics["transition_lift"][0] > 2.0, metrics["transition_lift"]


def test_the_commit_is_taken_when_the_run_starts(tmp_path, monkeypatch):
  """A checkout moved on while a long run trains does not relabel the code that ran."""
  commits = iter(["started-at", "later"])
  monkeypatch.setattr(io, "source_commit", lambda: next(commits))
  monkeypatch.setattr(main, "_STAGES", fake_stages())
  assert main.run_all(default.get_config("rqkmeans"), str(tmp_path))["commit"] == "started-at"
