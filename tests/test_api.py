"""r3vae_jax.api.Recommender and FusedRecommender on tiny workdirs trained once by run_all, and
--mode=recommend."""
import copy
import dataclasses
import pathlib
import shutil

from absl import flags
import numpy as np
import pytest

from r3vae_jax import api, evaluate, io, main, parallel
from r3vae_jax.configs import default
from r3vae_jax.data import dataset, splits as splits_lib
from r3vae_jax.decode import build_trie
from r3vae_jax.recommender import artifacts as rec_artifacts, data as rec_data, fusion, ranking
from r3vae_jax.recommender.tokens import layout_from_config

REPO = pathlib.Path(__file__).resolve().parents[1]
K = 5


def tiny_config():
  c = default.get_config("rqkmeans")  # no tokenizer training: the API is tokenizer-agnostic
  c.data.synthetic.update(num_items=200, num_users=300, num_topics=8, dim=16)
  c.sid.update(codebook_size=8, max_collisions=32)
  c.rqkmeans.iters = 10
  c.recommender.update(num_encoder_layers=1, num_decoder_layers=1, d_model=16, num_heads=2,
                       d_kv=8, d_ff=32)
  c.train.update(epochs=1, batch_size=64, warmup_steps=5, log_every_steps=20)
  c.eval.update(beam_size=10, batch_size=128)
  return c


def test_recommender_on_a_trained_workdir(tmp_path, capsys, monkeypatch):
  """One test, so that pytest-xdist trains the tiny workdir once (a module fixture would be
  built again in every worker that runs one of its tests)."""
  workdir = str(tmp_path / "run")
  main.run_all(tiny_config(), workdir)
  rec = api.Recommender.load(workdir)
  _check_recommend_returns_distinct_valid_items_best_first(rec)
  _check_ranking_equals_the_evaluate_path(rec, workdir)
  _check_single_query_matches_the_batched_ranking(rec)
  _check_histories_titles_and_long_histories(rec)
  _check_seen_items_left_out_when_the_protocol_says_so(rec)
  _check_bad_queries_raise_value_error(rec)
  _check_load_errors_name_what_is_missing(tmp_path / "other", workdir, rec)
  _check_main_recommend_prints_titles(workdir, rec, capsys)
  _check_cli_from_another_directory_uses_the_saved_config(workdir, rec, capsys, monkeypatch)
  _check_tensorboard_curves_match_metrics_jsonl(workdir)
  _check_fused_recommender(tmp_path / "seed1", workdir, rec, capsys)


def _check_recommend_returns_distinct_valid_items_best_first(rec):
  assert rec.checkpoint_step > 0
  for user in range(4):
    top = rec.recommend(rec.user_history(user), K)
    items = [item for item, _ in top]
    scores = np.array([score for _, score in top])
    assert len(top) == K
    assert len(set(items)) == K
    assert all(0 <= item < rec.num_items for item in items)
    assert np.all(np.isfinite(scores)) and np.all(scores <= 0)  # log-probabilities
    assert np.all(np.diff(scores) <= 0)


def _check_ranking_equals_the_evaluate_path(rec, workdir):
  """Same best checkpoint, same tokens, same beam search: the rankings that eval.json scores."""
  config, table = rec.config, rec.sid_table
  spl = splits_lib.leave_one_out(dataset.load_prepared(workdir).sequences)
  chunk = 8  # one query's padded batch on 8 devices: no new compilation, and not eval's 128
  ids = np.concatenate([rec.rank(spl.test_history[i:i + chunk])[0]
                        for i in range(0, len(spl.test_history), chunk)])

  mesh = parallel.config_mesh(config)
  prog, params, step = rec_artifacts.restore_params(config, workdir, table, mesh)
  examples = rec_data.eval_examples(spl, "test", config.data.max_history)
  layout = layout_from_config(config)
  batch = rec_data.make_batch(examples, np.arange(len(examples)), np.ones(len(examples)),
                              layout.item_tokens(table), table)
  trie = build_trie(table, list(layout.level_sizes))
  expected = evaluate.rank_in_batches(
      lambda b: prog.generate(params, b, trie),
      {"enc_tokens": batch["enc_tokens"], "enc_mask": batch["enc_mask"]},
      config.eval.batch_size, mesh)
  assert step == rec.checkpoint_step
  np.testing.assert_array_equal(ids, expected)

  metrics = evaluate.ranking_metrics(ids, spl.test_target, config.eval.ks)
  reported = io.read_json(f"{workdir}/eval.json")["test"]
  for key, value in metrics.items():
    assert value == pytest.approx(reported[key], abs=1e-9), key


def _check_single_query_matches_the_batched_ranking(rec):
  histories = [rec.user_history(u, "test") for u in range(8)]  # the bucket of one query
  ids, scores = rec.rank(histories)
  one = rec.recommend(histories[7], K)
  assert [item for item, _ in one] == ids[7, :K].tolist()
  np.testing.assert_allclose([s for _, s in one], scores[7, :K], rtol=1e-5, atol=1e-5)
  assert rec.recommend_batch(histories[:3], K)[2] == rec.recommend(histories[2], K)


def _check_histories_titles_and_long_histories(rec):
  seq = rec.interactions.sequences[3].tolist()
  assert rec.user_history(3) == seq
  assert rec.user_history(3, "test") == seq[:-1]
  assert rec.user_history(3, "valid") == seq[:-2]
  assert rec.title(seq[0]) == rec.interactions.item_titles[seq[0]]
  recent = [(7 * i) % rec.num_items for i in range(rec.config.data.max_history)]
  older = list(range(30))  # only the last max_history items count
  assert rec.recommend(older + recent, K) == rec.recommend(recent, K)


def _check_seen_items_left_out_when_the_protocol_says_so(rec):
  histories = [rec.user_history(u, "test") for u in range(8)]
  ids, _ = rec.rank(histories)
  protocol, rec.config.eval.exclude_seen = rec.config.eval.exclude_seen, True
  try:
    got = rec.recommend_batch(histories, K)
  finally:
    rec.config.eval.exclude_seen = protocol
  for history, row, top in zip(histories, ids, got):
    expected = [int(i) for i in row if i >= 0 and i not in history][:K]
    assert [item for item, _ in top] == expected
    assert not set(expected) & set(history)


def _check_bad_queries_raise_value_error(rec):
  bad = [(lambda: rec.recommend([1, 2], rec.beam_size + 1), "beam_size"),
         (lambda: rec.recommend([], K), "empty"),
         (lambda: rec.recommend([1, rec.num_items], K), "history 0 has item id"),
         (lambda: rec.recommend_batch([[1], [2, -1]], K), "history 1 has item id -1"),
         (lambda: rec.recommend([1.5], K), "integer"),
         (lambda: rec.user_history(rec.num_users), "outside"),
         (lambda: rec.user_history(0, "train"), "split"),
         (lambda: rec.title(rec.num_items), "outside")]
  for call, message in bad:
    with pytest.raises(ValueError, match=message):
      call()


def _check_load_errors_name_what_is_missing(tmp_path, workdir, rec):
  tmp_path.mkdir()
  with pytest.raises(ValueError, match="pass the config"):
    api.Recommender.load(str(tmp_path))
  with pytest.raises(io.ArtifactError, match="sequences.npz"):
    api.Recommender.load(str(tmp_path), tiny_config())
  with pytest.raises(ValueError, match="beam_size"):
    api.Recommender.load(workdir, beam_size=0)
  copy = tmp_path / "without_config"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(*api.CONFIG_FILES))
  assert api.Recommender.load(str(copy), tiny_config()).recommend([1, 2], K) == rec.recommend(
      [1, 2], K)
  other = tiny_config()
  other.recommender.dropout = 0.2  # same shapes, another run: the checkpoint's fingerprint refuses
  with pytest.raises(io.ArtifactError, match="different config"):
    api.Recommender.load(str(copy), other)


def _main_recommend_output(workdir, capsys, *more_flags):
  """What `main --mode=recommend --user=5 --top_k=K` prints (earlier output dropped)."""
  capsys.readouterr()
  argv = ["main", f"--config={REPO / 'r3vae_jax/configs/default.py'}", f"--workdir={workdir}",
          "--mode=recommend", "--user=5", f"--top_k={K}", *more_flags]
  flags.FLAGS(argv)
  try:
    main.main(argv[:1])
  finally:
    flags.FLAGS.unparse_flags()
  return capsys.readouterr().out


def _check_main_recommend_prints_titles(workdir, rec, capsys):
  out = _main_recommend_output(workdir, capsys)
  history = rec.user_history(5)
  top = rec.recommend(history, K)
  assert f"top {K}:" in out
  for item in history[-3:]:
    assert rec.title(item) in out
  for item, score in top:
    assert f"{item:>7d}  {score:8.3f}  {rec.title(item)}" in out


def _check_cli_from_another_directory_uses_the_saved_config(workdir, rec, capsys, monkeypatch):
  """`cd /tmp && r3vae --mode=recommend --workdir=W --user=2`: no --config, the workdir's own."""
  monkeypatch.chdir(pathlib.Path(workdir).parent)
  capsys.readouterr()
  main.parse_flags(["r3vae", "--mode=recommend", f"--workdir={workdir}", "--user=2",
                    f"--top_k={K}"])
  try:
    main.main(["r3vae"])
  finally:
    flags.FLAGS.unparse_flags()
  out = capsys.readouterr().out
  for item, score in rec.recommend(rec.user_history(2), K):
    assert f"{item:>7d}  {score:8.3f}  {rec.title(item)}" in out


def _check_tensorboard_curves_match_metrics_jsonl(workdir):
  """The recommender's event file holds the loss and validation curves of metrics.jsonl."""
  import json  # pylint: disable=g-import-not-at-top
  from r3vae_jax.training import tensorboard  # pylint: disable=g-import-not-at-top
  scalars = tensorboard.read_scalars(f"{workdir}/tensorboard/recommender")
  records = [json.loads(line) for line in open(f"{workdir}/recommender/metrics.jsonl")]
  train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
  valid = [(r["step"], r["ndcg@10"]) for r in records if r["kind"] == "valid"]
  assert train and valid
  np.testing.assert_allclose(scalars["train/loss"], train, rtol=1e-6)
  np.testing.assert_allclose(scalars["valid/ndcg_10"], valid, rtol=1e-6)
  assert "train/examples_per_s" in scalars and "train/token_accuracy" in scalars


def _check_fused_recommender(other_workdir, workdir, rec, capsys):
  """Two seeds fused at query time rank the test users as `fuse` mixes their saved rankings."""
  config = tiny_config()
  config.seed = 1
  main.run_all(config, str(other_workdir))
  dirs = [workdir, str(other_workdir)]
  fused = api.FusedRecommender.load(dirs)
  spl = splits_lib.leave_one_out(dataset.load_prepared(workdir).sequences)
  seen = rec_data.eval_examples(spl, "test", rec.config.data.max_history).seen
  saved = [fusion.load_ranking(f"{d}/recommender/test_ranking.npz") for d in dirs]
  assert not rec.config.eval.exclude_seen  # the tiny runs keep seen items: saved = raw beams
  chunk = 8  # the padded batch of one query: no new compilation
  for drop in (False, True):
    for member in fused.members:
      member.config.eval.exclude_seen = drop
    ids, scores = (np.concatenate(parts) for parts in zip(
        *(fused.shown(spl.test_history[i:i + chunk])
          for i in range(0, len(spl.test_history), chunk))))
    runs = [fusion.Ranking(*ranking.drop_seen(r.items, seen, r.log_probs), r.targets)
            if drop else r for r in saved]
    expected = fusion.mixture(runs)
    np.testing.assert_array_equal(ids, expected.items)
    np.testing.assert_allclose(scores, expected.log_probs, rtol=1e-5, atol=1e-5)
  for member in fused.members:
    member.config.eval.exclude_seen = False  # as saved: what --mode=recommend loads below
  history = rec.user_history(5)
  top = fused.recommend(history, K)
  assert [i for i, _ in top] == ids_of(fused.shown([history]))[:K]

  only_first = api.FusedRecommender(fused.members, weights=[1.0, 0.0])
  assert [i for i, _ in only_first.recommend(history, K)] == [
      i for i, _ in rec.recommend(history, K)]
  with pytest.raises(ValueError, match="weights"):
    api.FusedRecommender(fused.members, weights=[1.0])
  other_data = copy.copy(fused.members[1])
  other_data.interactions = dataclasses.replace(
      rec.interactions, sequences=rec.interactions.sequences[1:])
  with pytest.raises(io.ArtifactError, match="member 1 was trained on other data"):
    api.FusedRecommender([fused.members[0], other_data])
  drops_seen = copy.copy(fused.members[1])
  drops_seen.config = copy.deepcopy(drops_seen.config)
  drops_seen.config.eval.exclude_seen = True
  with pytest.raises(ValueError, match="exclude_seen"):
    api.FusedRecommender([fused.members[0], drops_seen])

  out = _main_recommend_output(workdir, capsys, f"--fuse={other_workdir}")
  assert "late fusion of 2 runs" in out
  for item, score in top:
    assert f"{item:>7d}  {score:8.3f}  {rec.title(item)}" in out


def ids_of(shown):
  ids, _ = shown
  return [int(i) for i in ids[0] if i >= 0]


def test_bucket_size_is_a_power_of_two_times_the_data_axis_up_to_the_cap():
  assert [api.bucket_size(n, 8, 128) for n in (1, 8, 9, 100, 128, 129, 5000)] == [
      8, 8, 16, 128, 128, 128, 128]
  assert api.bucket_size(3, 1, 1000) == 4
  assert api.bucket_size(900, 1, 1000) == 1000  # the cap itself when it is not a power of two
  assert api.bucket_size(5, 8, 4) == 8          # never below the data axis


def test_saved_config_prefers_config_json_and_names_a_bad_file(tmp_path):
  assert api.saved_config(str(tmp_path)) is None
  c = tiny_config()
  io.write_json(str(tmp_path / "results.json"), {"config": c.to_dict()})
  assert api.saved_config(str(tmp_path)).recommender.d_model == 16
  c.recommender.d_model = 24
  io.write_json(str(tmp_path / "config.json"), c.to_dict())
  assert api.saved_config(str(tmp_path)).recommender.d_model == 24
  io.write_json(str(tmp_path / "config.json"), {"seed": 0})
  with pytest.raises(io.ArtifactError, match="config.json"):
    api.saved_config(str(tmp_path))
