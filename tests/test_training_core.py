"""The training core: best-checkpoint selection and early stopping, refusing another run's
checkpoint, metrics sinks, the ETA."""
import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from r3vae_jax import checkpoint
from r3vae_jax.io import ArtifactError
from r3vae_jax.training import eta, metrics, resume, selection, stage


def test_progress_keeps_the_first_best_and_stops_after_patience_validations():
  p = selection.Progress()
  assert p.record_validation({"ndcg@10": 0.2, "recall@10": 0.3}, "ndcg@10", 1, 10, patience=2)
  assert not p.record_validation({"ndcg@10": 0.2}, "ndcg@10", 2, 20, patience=2)  # a tie
  assert (p.best, p.best_epoch, p.best_step, p.bad_validations) == (0.2, 1, 10, 1)
  assert p.best_metrics == {"ndcg@10": 0.2, "recall@10": 0.3}
  assert not p.record_validation(None, "ndcg@10", 3, 30, patience=2)  # could not be scored
  assert p.finished == "early_stop"


def test_progress_finishes_at_the_last_epoch_and_extends_on_a_relaunch():
  p = selection.Progress()
  p.end_epoch(1, 2)
  assert p.finished == ""
  p.end_epoch(2, 2)
  assert p.finished == "epochs" and p.validated_epochs == 2
  p.extend_to(2)
  assert p.finished == "epochs"
  p.extend_to(3)
  assert p.finished == ""
  assert selection.Progress(**json.loads(json.dumps(p.__dict__))) == p


def test_resume_restores_the_latest_and_refuses_another_run(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path / "ckpt"), keep=2, async_save=False)
  tree = {"w": jnp.arange(4.0)}
  assert resume.resume(manager, tree, 1, {"config": "a"}) is None
  checkpoint.save(manager, 3, {"w": jnp.arange(4.0) + 1}, resume.make_meta(
      1, {"config": "a"}, history=[1]))
  step, restored, meta = resume.resume(manager, tree, 1, {"config": "a"})
  assert step == 3 and meta["history"] == [1]
  np.testing.assert_array_equal(restored["w"], np.arange(4.0) + 1)
  with pytest.raises(ArtifactError, match=r"checkpoint of another run: trained with a "
                     r"different config \(fingerprint a != b\)"):
    resume.resume(manager, tree, 1, {"config": "b"})
  with pytest.raises(ArtifactError, match="checkpoint meta version 1, this code reads version 2"):
    resume.resume(manager, tree, 2, {"config": "a"})


def test_stage_writes_json_lines_to_every_sink(tmp_path):
  class Memory:
    def __init__(self):
      self.records, self.closed = [], False

    def write(self, record):
      self.records.append(record)

    def close(self):
      self.closed = True

  memory = Memory()
  path = tmp_path / "work" / "sasrec" / stage.METRICS_FILE
  s = stage.begin(str(tmp_path / "work"), "sasrec", {"config": "f"},
                  writer=metrics.MultiWriter(metrics.JsonlWriter(str(path)), memory))
  s.metrics.write({"kind": "train", "step": 1, "loss": 0.5})
  s.metrics.write({"kind": "valid", "epoch": 1})
  s.close()
  assert [json.loads(line) for line in path.read_text().splitlines()] == memory.records
  assert memory.closed and s.path("x") == str(tmp_path / "work" / "sasrec" / "x")


def test_eta_is_the_time_left_at_the_rate_since_the_last_tick(monkeypatch):
  now = iter([100.0, 110.0, 130.0])
  monkeypatch.setattr(eta.time, "time", lambda: next(now))
  clock = eta.Eta(total=100, done=20)
  assert clock.tick(30) == (1.0, 70.0)   # 10 units in 10 s
  assert clock.tick(40) == (0.5, 120.0)  # 10 units in 20 s


def test_tensorboard_writer_loads_without_importing_torch(tmp_path):
  """The event-file writer leaves PyTorch unloaded (2.5 s per training process) and still
  writes the scalars; a later `import torch` is unaffected."""
  code = (
      "import sys\n"
      "from r3vae_jax.training import tensorboard\n"
      f"w = tensorboard.TensorBoardWriter({str(tmp_path)!r})\n"
      "w.write({'kind': 'train', 'step': 3, 'loss': 1.5})\n"
      "w.close()\n"
      "assert 'torch' not in sys.modules, 'torch was imported'\n"
      f"print(tensorboard.read_scalars({str(tmp_path)!r}))\n"
      "import importlib.util\n"
      "if importlib.util.find_spec('torch') is not None:\n"
      "  import torch\n"
      "  print('torch', torch.ones(1).item())\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       timeout=120).stdout
  assert "train/loss" in out and "1.5" in out
