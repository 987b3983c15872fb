"""Checkpoint integrity: checksums, fallback to the previous good step,
unreadable steps set aside, no non-finite checkpoint."""
import json
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from r3vae_jax import checkpoint, parallel
from r3vae_jax.io import ArtifactError


def _state(shift: float = 0.0) -> dict:
  return {"w": jnp.arange(4096.0).reshape(64, 64) * 0.37 + shift, "b": jnp.ones((3,), jnp.bfloat16),
          "step": jnp.array(7, jnp.int32), "mask": jnp.array([True, False]),
          "key": jax.random.key(3)}


def _write(root: pathlib.Path, steps=(10, 20)) -> None:
  manager = checkpoint.make_manager(str(root), keep=5, async_save=False)
  for s in steps:
    checkpoint.save(manager, s, _state(float(s)), {"s": s}, force=True)
  manager.close()


def _restore(root: pathlib.Path, step=None):
  manager = checkpoint.make_manager(str(root), keep=5, async_save=False)
  try:
    return checkpoint.restore(manager, checkpoint.abstract_like(_state()), step=step)
  finally:
    manager.close()


def flip_one_bit(step_dir: pathlib.Path) -> None:
  """Flips one bit in the middle of the largest array-data file (inside compressed array
  bytes: orbax reads it back without an error, the values are wrong)."""
  path = max((p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)),
             key=lambda p: p.stat().st_size)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x01
  path.write_bytes(bytes(data))


def _truncate_data(step_dir: pathlib.Path) -> None:
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and ("/d/" in str(path) or path.name == "manifest.ocdbt"):
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_meta(step_dir: pathlib.Path) -> None:
  (step_dir / "meta" / "metadata").write_text('{"s": 2')


def test_round_trip_verifies_and_hides_the_checksums(tmp_path):
  _write(tmp_path)
  step, state, meta = _restore(tmp_path)
  assert step == 20 and meta == {"s": 20}
  np.testing.assert_array_equal(state["w"], _state(20.0)["w"])
  raw = json.loads((tmp_path / "20" / "meta" / "metadata").read_text())
  assert len(raw[checkpoint.CHECKSUMS_KEY]) == len(jax.tree.leaves(_state()))


@pytest.mark.parametrize("damage", [flip_one_bit, _truncate_data, _garble_meta])
def test_damaged_latest_falls_back_and_is_set_aside(tmp_path, damage, caplog):
  _write(tmp_path)
  damage(tmp_path / "20")
  with caplog.at_level(logging.WARNING):
    step, state, meta = _restore(tmp_path)
  assert step == 10 and meta == {"s": 10}
  np.testing.assert_array_equal(state["w"], _state(10.0)["w"])
  assert any("20 is unreadable" in r.getMessage() for r in caplog.records)
  assert (tmp_path / "20.unreadable").is_dir() and not (tmp_path / "20").exists()
  _write(tmp_path, steps=(20,))        # the step can be written again
  assert _restore(tmp_path)[0] == 20


def test_flipped_bits_pass_orbax_but_not_the_checksums(tmp_path):
  """Why the checksums exist: orbax reads the garbled arrays back without an error."""
  _write(tmp_path)
  flip_one_bit(tmp_path / "20")
  manager = ocp.CheckpointManager(str(tmp_path))
  raw = manager.restore(20, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(checkpoint.abstract_like(_state())),
      meta=ocp.args.JsonRestore()))
  manager.close()
  assert not np.array_equal(raw["state"]["w"], _state(20.0)["w"])
  with pytest.raises(ArtifactError, match=r"20: checkpoint unreadable: checksum mismatch"):
    _restore(tmp_path, step=20)
  assert (tmp_path / "20").is_dir()    # an explicit step is never renamed


def test_nothing_readable_raises_and_renames_nothing(tmp_path):
  _write(tmp_path)
  _garble_meta(tmp_path / "10")
  _garble_meta(tmp_path / "20")
  with pytest.raises(ArtifactError, match=r"no checkpoint reads back \(20: .*; 10: .*\)"):
    _restore(tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["10", "20"]


def test_another_model_is_refused_not_skipped(tmp_path):
  """A checkpoint of another model shape must not make training start over silently."""
  _write(tmp_path)
  manager = checkpoint.make_manager(str(tmp_path), async_save=False)
  other = checkpoint.abstract_like({**_state(), "w": jnp.zeros((32, 64))})
  with pytest.raises(ArtifactError, match=r"no checkpoint reads back.*fresh --workdir"):
    checkpoint.restore(manager, other)
  manager.close()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["10", "20"]


def test_non_finite_state_is_never_written(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path), async_save=False)
  bad = _state()
  bad["w"] = bad["w"].at[3, 4].set(jnp.nan)
  with pytest.raises(FloatingPointError, match=r"refusing to checkpoint step 5: .*\['w'\]"):
    checkpoint.save(manager, 5, bad, {})
  manager.close()
  assert not list(tmp_path.iterdir())


def test_checksum_sees_every_element_and_ignores_sharding():
  mesh = parallel.make_mesh(-1, 1)
  x = jnp.arange(8 * 6, dtype=jnp.float32).reshape(8, 6)
  sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
  checksums = lambda tree: checkpoint._summaries(tree)[2]  # pylint: disable=protected-access
  sums = checksums({"a": x, "b": sharded})
  assert sums[0] == sums[1]
  flat = x.reshape(-1)
  seen = {int(sums[0])}
  for i in range(x.size):
    seen.add(int(checksums({"a": flat.at[i].add(1.0).reshape(8, 6)})[0]))
  swapped = flat.at[0].set(flat[1]).at[1].set(flat[0])
  seen.add(int(checksums({"a": swapped.reshape(8, 6)})[0]))
  assert len(seen) == x.size + 2


def test_checkpoints_without_checksums_still_restore(tmp_path):
  manager = ocp.CheckpointManager(str(tmp_path))
  manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(_state()),
                                          meta=ocp.args.JsonSave({"s": 3})))
  manager.wait_until_finished()
  manager.close()
  assert _restore(tmp_path)[0] == 3


def test_small_replicated_arrays_are_written_without_replica_slices(tmp_path):
  """Orbax splits a replicated array into one slice per replica only from
  `MIN_REPLICA_SLICE_BYTES` per slice; a replicated state on every device round-trips."""
  from orbax.checkpoint._src.serialization import replica_slices  # pylint: disable=g-import-not-at-top
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  limit = checkpoint.MIN_REPLICA_SLICE_BYTES
  mesh = parallel.make_mesh()
  replicate = lambda x: jax.device_put(x, NamedSharding(mesh, P()))
  small, big = replicate(jnp.ones((64, 64))), replicate(jnp.ones((len(mesh.devices.flat), limit)))
  for arr, sliced in ((small, False), (big, mesh.size > 1)):
    got = replica_slices.get_replica_slices(
        arr, 0, True, handler._min_slice_bytes_for_replica_parallel)  # pylint: disable=protected-access
    assert (len(got.replica_slices) > 1) == sliced, (arr.shape, got)
  manager = checkpoint.make_manager(str(tmp_path), keep=1, async_save=True)
  state = jax.tree.map(replicate, {k: v for k, v in _state().items() if k != "key"})
  checkpoint.save(manager, 1, state, {"s": 1}, force=True)
  manager.wait_until_finished()
  _, restored, _ = checkpoint.restore(manager, checkpoint.abstract_like(state))
  manager.close()
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored),
               jax.tree.map(np.asarray, state))
