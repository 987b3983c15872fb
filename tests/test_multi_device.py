"""benchmarks/multi_device.py on 8 fake CPU devices: every mesh computes
the one-device loss curve, decodes the same items, and a checkpoint moves between meshes.

Tolerance: 1e-5 absolute on losses and parameters (float32 reductions in another order).
Measured here: largest loss difference 4.8e-7, parameter difference 2.6e-7; decoded ids equal;
the restored state's next loss equal to the saving mesh's (0.0 difference) both ways. The
R3-VAE tokenizer on data = 8: the same per-epoch losses (0.0 difference), parameters within
1.3e-6 and the same SIDs.
"""
import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import multi_device  # pylint: disable=wrong-import-position

STEPS = 3


def test_meshes_cover_data_powers_of_two_and_a_model_axis():
  assert multi_device.mesh_shapes(1) == [(1, 1)]
  assert multi_device.mesh_shapes(2) == [(1, 1), (2, 1), (1, 2)]
  assert multi_device.mesh_shapes(8) == [(1, 1), (2, 1), (4, 1), (8, 1), (4, 2)]


def test_every_mesh_trains_decodes_and_reshards_like_one_device():
  assert jax.device_count() == 8
  shapes = [(1, 1), (8, 1), (4, 2)]
  config = multi_device.make_config("paper", True, 32, 600, 10)
  table, source = multi_device._workload(config, 600, STEPS + 1)  # pylint: disable=protected-access

  curve, params = multi_device.part_curve(config, shapes, source, STEPS)
  assert len(curve["1x1"]["losses"]) == STEPS and np.all(np.isfinite(curve["1x1"]["losses"]))
  for name, entry in curve.items():
    assert entry["max_abs_loss_diff"] < 1e-5 and entry["max_abs_param_diff"] < 1e-5, name

  decoded = multi_device.part_decode(config, shapes, table, params, 48)
  assert all(entry["identical_to_1x1"] for entry in decoded.values()), decoded

  moved = multi_device.part_reshard(config, (4, 2), source, STEPS)
  assert set(moved) == {"4x2->1x1", "1x1->4x2"}
  for name, entry in moved.items():
    assert entry["abs_diff"] < 1e-5, (name, entry)


def test_ranking_agreement_counts_users():
  ref = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 5, 9]])
  ranked = np.array([[1, 2, 3], [4, 6, 5], [8, 7, 0], [1, 5, 9]])
  assert multi_device.ranking_agreement(ranked, ref) == {
      "users_ranking_equal": 0.5, "users_top1_equal": 0.75, "users_topk_set_equal": 0.75}


def test_tokenizer_on_the_data_axis_matches_one_device():
  config = multi_device.tokenizer_config(True, 256)
  vectors = multi_device.synthetic_inputs.unit_vectors(600, 32)
  out = multi_device.part_tokenizer(config, [(1, 1), (8, 1)], vectors, 2)
  assert len(out["8x1"]["losses"]) == 2 and np.all(np.isfinite(out["8x1"]["losses"]))
  assert out["8x1"]["max_abs_loss_diff"] < 1e-5 and out["8x1"]["max_abs_param_diff"] < 1e-5
  assert out["8x1"]["sid_rows_equal_to_1x1"] == 1.0
