"""The DIGER curves collector: JSON lines of several decay runs -> one table (no training)."""
import json

import pytest

from r3vae_jax import io
from r3vae_jax.diger import curves


def _record(epoch, ndcg=None, valid=True):
  r = {"epoch": epoch, "usage_per_level": [0.5, 0.75, 1.0], "collision_rate": 0.1 * epoch,
       "max_group_size": 3, "sigma": [1.0, 0.9, 0.8], "table_valid": valid}
  if epoch:
    r.update(train_noisy_fraction=0.4, train_rec_ce=3.0, seconds=2.0)
  if ndcg is not None:
    r["valid_ndcg@10"] = ndcg
  return r


def _write(path, records):
  path.parent.mkdir(parents=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_curves_keep_the_last_record_per_epoch_and_pick_the_best(tmp_path):
  # epoch 1 was replayed after a crash (second line wins); epoch 2 had no valid table.
  _write(tmp_path / "frequency" / "diger" / "metrics.jsonl",
         [_record(0), _record(1, 0.01), _record(1, 0.02), _record(2, valid=False),
          _record(3, 0.015)])
  got = curves.collect(str(tmp_path), ["frequency", "none"])
  freq = got["frequency"]
  assert [r["epoch"] for r in freq["epochs"]] == [0, 1, 2, 3]
  assert freq["epochs"][1]["valid_ndcg@10"] == 0.02 and freq["epochs"][1]["usage@2"] == 0.75
  assert freq["epochs"][2]["table_valid"] is False and freq["epochs"][2]["valid_ndcg@10"] is None
  assert freq["best_epoch"] == 1 and freq["train_seconds"] == 6.0
  assert "missing" in got["none"]["error"]           # a failed mode is reported, not fatal
  table = curves.format_table(got)
  assert "2!" in table and "0.0200" in table and "none: no curve" in table


def test_bad_line_names_the_file_and_line(tmp_path):
  path = tmp_path / "gumbel" / "diger" / "metrics.jsonl"
  _write(path, [_record(0)])
  with open(path, "a", encoding="utf-8") as f:
    f.write('{"epoch": 1}\n')
  with pytest.raises(io.ArtifactError, match="metrics.jsonl:2"):
    curves.read_mode(str(tmp_path / "gumbel"))
  with pytest.raises(ValueError, match="config.diger.decay"):
    curves.collect(str(tmp_path), ["annealed"])
