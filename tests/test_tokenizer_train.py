"""Tokenizer fitting end to end: synthetic default, a real Beauty slice, determinism, resume."""
import os

from flax import nnx
import jax
import numpy as np
import pytest

from r3vae_jax.configs import default
from r3vae_jax.data.synthetic import make_synthetic
from r3vae_jax.io import ArtifactError
from r3vae_jax.tokenizer import api
from r3vae_jax.tokenizer import rqkmeans
from r3vae_jax.tokenizer import sid_table
from r3vae_jax.tokenizer import programs
from r3vae_jax.tokenizer import train

K, LEVELS = 8, 2


def _config(name: str, epochs: int = 4):
  c = default.get_config(name)
  c.sid.update(dict(levels=LEVELS, codebook_size=K, max_collisions=64))
  c.rqkmeans.iters = 10
  for n in ("rqvae", "r3vae"):
    c[n].update(dict(hidden=(16,), latent_dim=8, epochs=epochs, eval_every=2, batch_size=64,
                     kmeans_iters=10))
  c.data.synthetic.update(dict(num_items=256, num_users=40, num_topics=8, dim=16))
  return c


@pytest.fixture(scope="module")
def synthetic_vectors():
  return make_synthetic(_config("r3vae").data.synthetic)[1]


def _check_table(table, n, workdir):
  assert table.shape == (n, LEVELS + 1) and table.dtype == np.int32
  assert len({tuple(r) for r in table}) == n
  assert table[:, :LEVELS].max() < K
  loaded, info = sid_table.load_sid_table(workdir)
  np.testing.assert_array_equal(loaded, table)
  return info


@pytest.mark.parametrize("name", ["rqkmeans", "rqvae", "r3vae"])
def test_fit_tokenizer_on_synthetic(tmp_path, synthetic_vectors, name):
  config = _config(name)
  table, metrics = api.fit_tokenizer(config, synthetic_vectors, str(tmp_path))
  info = _check_table(table, 256, str(tmp_path))
  for key in ("usage_per_level", "perplexity_per_level", "collision_rate", "semantic_cohesion",
              "preference_discrimination", "gini", "reconstruction_mse"):
    assert key in metrics and key in info
  assert info["meta"]["tokenizer"] == name and len(info["meta"]["vectors_fingerprint"]) == 16
  assert metrics["usage_per_level"][0] >= 0.95
  assert metrics["semantic_cohesion"] > 0.5  # topic clusters stay together
  if name != "rqkmeans":
    assert metrics["best_epoch"] in (2, 4)
    assert os.path.isdir(tmp_path / "tokenizer" / f"{name}_ckpt")


def test_r3vae_is_deterministic_and_resumes_to_the_same_state(tmp_path, synthetic_vectors):
  whole = train.train_tokenizer(_config("r3vae", epochs=4), synthetic_vectors,
                                str(tmp_path / "whole"))
  first = train.train_tokenizer(_config("r3vae", epochs=2), synthetic_vectors,
                                str(tmp_path / "cut"))
  assert first.history == whole.history[:1]
  resumed = train.train_tokenizer(_config("r3vae", epochs=4), synthetic_vectors,
                                  str(tmp_path / "cut"))
  assert resumed.history == whole.history
  assert resumed.best_epoch == whole.best_epoch
  np.testing.assert_array_equal(resumed.codes, whole.codes)
  for a, b in zip(jax.tree.leaves(nnx.state(resumed.model)), jax.tree.leaves(nnx.state(whole.model))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  other = _config("r3vae", epochs=2)
  other.seed = 1
  assert (train.train_tokenizer(other, synthetic_vectors, str(tmp_path / "seed1")).history
          != first.history)
  changed = _config("r3vae", epochs=4)
  changed.r3vae.lr = 1e-2
  with pytest.raises(ArtifactError, match="checkpoint of another run"):
    train.train_tokenizer(changed, synthetic_vectors, str(tmp_path / "cut"))


def test_selection_rule_prefers_buildable_then_fewer_collisions_then_recon():
  ok = {"max_group_size": 3, "collision_rate": 0.2, "reconstruction_mse": 0.5}
  better_recon = {**ok, "reconstruction_mse": 0.1}
  fewer = {**ok, "collision_rate": 0.1, "reconstruction_mse": 0.9}
  unbuildable = {**fewer, "max_group_size": 65, "collision_rate": 0.0}
  ranked = sorted([ok, unbuildable, fewer, better_recon],
                  key=lambda m: train.selection_key(m, max_collisions=64))
  assert ranked == [fewer, better_recon, ok, unbuildable]


def test_last_rule_prefers_buildable_then_the_latest_epoch():
  early = {"epoch": 2, "max_group_size": 3, "collision_rate": 0.1, "reconstruction_mse": 0.5}
  late = {**early, "epoch": 4, "collision_rate": 0.3}
  unbuildable = {**early, "epoch": 6, "max_group_size": 65}
  ranked = sorted([early, unbuildable, late],
                  key=lambda m: train.selection_key(m, max_collisions=64, rule="last"))
  assert ranked == [late, early, unbuildable]


def test_select_last_keeps_the_final_epoch(tmp_path, synthetic_vectors):
  """sid.select=last: the table comes from the last evaluated epoch's parameters (the same
  training as min_collision, which here keeps an earlier epoch)."""
  runs = {}
  for rule in ("min_collision", "last"):
    config = _config("rqvae", epochs=6)
    config.rqvae.eval_every = 1
    config.sid.select = rule
    runs[rule] = train.train_tokenizer(config, synthetic_vectors, str(tmp_path / rule))
  by_collision, last = runs["min_collision"], runs["last"]
  assert last.history == by_collision.history
  assert last.best_epoch == 6
  assert by_collision.best_epoch == min(
      by_collision.history, key=lambda m: (m["collision_rate"], m["reconstruction_mse"]))["epoch"]
  for result in (by_collision, last):  # the returned codes are the chosen epoch's
    chosen = result.history[result.best_epoch - 1]
    report = programs.evaluate(synthetic_vectors, result.codes, 0.0, K)
    assert report["collision_rate"] == pytest.approx(chosen["collision_rate"])
    assert report["usage_per_level"] == pytest.approx(chosen["usage_per_level"])


def test_warmup_raises_the_rate_linearly_then_holds_it():
  """With a constant gradient Adam's normalised step is 1, so each update is minus the rate:
  lr * k / warmup_steps at step k < warmup_steps, then lr."""
  lr, warmup = 1e-3, 4
  tx = programs.optimizer(lr, 0.0, warmup)
  params = {"w": np.ones(3, np.float32)}
  grads = {"w": np.full(3, 0.5, np.float32)}
  state, steps = tx.init(params), []
  for _ in range(6):
    updates, state = tx.update(grads, state, params)
    steps.append(float(-updates["w"][0]))
  np.testing.assert_allclose(steps, [0.0, lr / 4, lr / 2, 3 * lr / 4, lr, lr], rtol=1e-4)


def test_warmup_trains_and_resumes(tmp_path, synthetic_vectors):
  """A warm-up run is deterministic and its checkpoint (the schedule's step count in the
  optimizer state) resumes to the same table."""
  def fit(workdir, epochs):
    config = _config("rqvae", epochs=epochs)
    config.rqvae.warmup_steps = 6
    return train.train_tokenizer(config, synthetic_vectors, str(workdir))
  once = fit(tmp_path / "once", 4)
  fit(tmp_path / "twice", 2)
  resumed = fit(tmp_path / "twice", 4)
  np.testing.assert_array_equal(resumed.codes, once.codes)
  assert resumed.history == once.history


def test_fingerprint_covers_the_warmup_but_not_the_epochs():
  """A warm-up run cannot resume a run without one; more epochs extend a run."""
  config = _config("rqvae")
  vectors = np.zeros((4, 3), np.float32)
  plain = train._run_fingerprint(config, vectors)  # pylint: disable=protected-access
  config.rqvae.epochs += 10
  assert train._run_fingerprint(config, vectors) == plain  # pylint: disable=protected-access
  config.rqvae.warmup_steps = 300
  assert train._run_fingerprint(config, vectors) != plain  # pylint: disable=protected-access


def test_a_saved_table_from_the_same_vectors_and_settings_is_reused(tmp_path, synthetic_vectors,
                                                                     monkeypatch):
  config = _config("rqkmeans")
  table, metrics = api.fit_tokenizer(config, synthetic_vectors, str(tmp_path))
  fits = []
  real_fit = rqkmeans.fit_rqkmeans
  monkeypatch.setattr(rqkmeans, "fit_rqkmeans", lambda *a: fits.append(a) or real_fit(*a))
  again, again_metrics = api.fit_tokenizer(config, synthetic_vectors, str(tmp_path))
  assert not fits and again_metrics["fit_seconds"] == metrics["fit_seconds"]
  np.testing.assert_array_equal(again, table)
  config.rqkmeans.seed += 1  # other settings, or other vectors: fitted again
  api.fit_tokenizer(config, synthetic_vectors, str(tmp_path))
  api.fit_tokenizer(config, synthetic_vectors[::-1].copy(), str(tmp_path))
  assert len(fits) == 2


def test_bad_requests(tmp_path, synthetic_vectors):
  config = _config("rqkmeans")
  config.tokenizer = "vqgan"
  with pytest.raises(ValueError, match="config.tokenizer must be one of"):
    api.fit_tokenizer(config, synthetic_vectors, str(tmp_path))
  config = _config("rqkmeans")
  config.sid.max_collisions = 2  # 256 items on 8 x 8 tuples: some tuple holds more than 2
  with pytest.raises(ValueError, match="items share the code tuple"):
    api.fit_tokenizer(config, synthetic_vectors, str(tmp_path))
  diger = _config("diger")
  assert api.resolve_tokenizer(diger) == diger.diger.pretrain


@pytest.fixture(scope="module")
def beauty_slice(beauty_prefix):
  """256 real item vectors (rows of an embedding of Beauty's first 2000 items): the same shape
  as the synthetic vectors, so the compiled steps are shared."""
  return beauty_prefix(2000, 16)[1][:256]


@pytest.mark.parametrize("name", ["rqkmeans", "rqvae", "r3vae"])
def test_fit_tokenizer_on_a_real_beauty_slice(tmp_path, beauty_slice, name):
  vectors = beauty_slice
  table, metrics = api.fit_tokenizer(_config(name), vectors, str(tmp_path))
  _check_table(table, 256, str(tmp_path))
  assert metrics["usage_per_level"][0] >= 0.95, metrics
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  mean_cos = (np.sum(unit.sum(0) ** 2) - len(unit)) / (len(unit) * (len(unit) - 1))
  assert metrics["semantic_cohesion"] > mean_cos + 0.2  # groups are more alike than random pairs


def _beauty_slice_run(beauty_prefix, workdir: str, **overrides) -> tuple[list[dict], float]:
  """R3-VAE (default recipe + `overrides`) on 2,000 real Beauty items (64-d interaction
  vectors, 2 x 64 codes, 8 epochs): (its evaluations, RQ-KMeans' collision rate)."""
  vectors = beauty_prefix(2000, 64)[1]
  config = default.get_config("r3vae")
  config.sid.update(dict(levels=2, codebook_size=64, max_collisions=10**6))
  config.r3vae.update(dict(hidden=(64,), epochs=8, eval_every=4, batch_size=128,
                           kmeans_iters=10))
  config.r3vae.update(overrides)
  history = train.train_tokenizer(config, vectors, workdir).history
  _, codes, _ = rqkmeans.fit_rqkmeans(vectors, 2, 64, 10, 0)
  return history, programs.evaluate(vectors, codes, 0.0, 64)["collision_rate"]


def test_r3vae_keeps_beauty_groups_small_and_collides_less_than_rqkmeans(tmp_path, beauty_prefix):
  """Measured (CPU, epochs 4 and 8): RQ-KMeans collides 0.725; the default 0.645 -> 0.651,
  largest tuple 28 -> 28 items. The first default (R3VAE_SOFT_VARIANT with an encoder
  (64, 32) -> 16) collides less here but drifts: 0.542 -> 0.564, largest tuple 27 -> 40, failing
  both the no-rise and the group-size checks. (On full Beauty MiniLM vectors it also fails the
  collision bound: 0.21 -> 0.44 over 20 epochs and a 455-item tuple > sid.max_collisions, vs
  0.14 for the default and 0.26 for RQ-KMeans; those vectors are not available to CI.)
  """
  history, baseline = _beauty_slice_run(beauty_prefix, str(tmp_path))
  collisions = [m["collision_rate"] for m in history]
  assert max(collisions) <= baseline - 0.05, (collisions, baseline)
  assert collisions[-1] <= min(collisions) + 0.01, collisions    # not rising over training
  assert max(m["max_group_size"] for m in history) <= 32, history
  assert all(m["usage_per_level"][0] >= 0.95 for m in history)


@pytest.mark.slow
def test_r3vae_full_beauty_uses_the_first_level(tmp_path, beauty_prefix):
  """Paper-size R3-VAE (3 x 256 codes, 200 epochs) on all 12,101 Beauty items.

  Vectors: $R3VAE_BEAUTY_VECTORS or the repo's .carry/beauty_minilm.npy (MiniLM text vectors)
  when present, else 128-d interaction vectors computed here from the training events.
  Measured on the MiniLM vectors (CPU, tokenizer/README.md): collisions 0.14-0.15, largest
  tuple 13 items, every level's usage 1.0; RQ-KMeans 0.26.
  """
  default_path = os.path.join(os.path.dirname(__file__), "..", ".carry", "beauty_minilm.npy")
  path = os.environ.get("R3VAE_BEAUTY_VECTORS", default_path)
  vectors = (np.load(path) if os.path.exists(path)
             else beauty_prefix(12101, 128)[1])
  config = default.base_config()
  config.tokenizer = "r3vae"
  table, metrics = api.fit_tokenizer(config, vectors, str(tmp_path))
  assert len({tuple(r) for r in table}) == 12101
  assert min(metrics["usage_per_level"]) >= 0.95, metrics
  assert metrics["collision_rate"] <= 0.2 and metrics["max_group_size"] <= 32, metrics


def test_rqvae_centred_keeps_the_data_mean_through_training(tmp_path, synthetic_vectors):
  """The trainer sets `input_mean` to the item vectors' mean and training leaves it there."""
  config = _config("rqvae")
  config.rqvae.center_inputs = True
  config.rqvae.weight_decay = 0.1  # would move it if it were decayed
  result = train.train_tokenizer(config, synthetic_vectors, str(tmp_path))
  np.testing.assert_allclose(result.model.input_mean[...], synthetic_vectors.mean(axis=0),
                             rtol=1e-5, atol=1e-6)
  assert result.codes.shape == (synthetic_vectors.shape[0], LEVELS)
