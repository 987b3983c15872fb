"""Bad inputs through the command line and config validation.

Every case of tests/bad_inputs/corpus.py runs `r3vae_jax.main` in its own process (forked by
tests/bad_inputs/run_main.py, all in one batch) and must exit != 0 with exactly one `error:`
line naming the file or field, no traceback, and the workdir's files as they were.
"""
import importlib
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "bad_inputs"))
import corpus  # pylint: disable=g-import-not-at-top,wrong-import-position
import reliability_harness as rh  # pylint: disable=g-import-not-at-top,wrong-import-position

from conftest import REPO  # pylint: disable=wrong-import-position
from r3vae_jax.configs import ablations, default, presets, validate  # pylint: disable=wrong-import-position

_NAMES = [case.name for case in corpus.CASES]

# One xdist worker runs the corpus (pytest.ini: --dist loadgroup): it is run once, and no worker
# waits on the other's lock while it runs.
pytestmark = pytest.mark.xdist_group("reliability_inputs")


def _argv(case: corpus.Case, workdir: pathlib.Path) -> list[str]:
  flags = [f.replace("{corpus}", str(corpus.HERE)).replace("{workdir}", str(workdir))
           for f in case.flags]
  if not any(f.startswith("--config=") for f in flags):
    flags = rh.tiny_flags() + flags
  if not any(f.startswith("--workdir=") for f in flags):
    flags.append(f"--workdir={workdir}")
  return flags + [f"--mode={case.mode}"]


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory):
  """{case name: {"rc", "output", "seconds", "before", "after", "workdir"}} (run once)."""
  shared = rh.shared_dir(tmp_path_factory, "corpus")
  with rh.once(shared) as fresh:
    if fresh:
      bases = rh.shared_bases(tmp_path_factory)
      jobs, before = [], {}
      for case in corpus.CASES:
        workdir = shared / "cases" / case.name
        if case.base == "empty":
          workdir.mkdir(parents=True)
        else:
          shutil.copytree(bases[case.base], workdir)
        for target, source in case.place:
          (workdir / target).write_bytes(corpus.source_bytes(source))
        for target, content in case.write:
          (workdir / target).parent.mkdir(parents=True, exist_ok=True)
          if isinstance(content, str):
            (workdir / target).write_text(content, encoding="utf-8")
          else:
            (workdir / target).write_bytes(content)
        for target in case.remove:
          (workdir / target).unlink()
        if case.setup is not None:
          case.setup(workdir)
        before[case.name] = rh.tree_hashes(workdir)
        jobs.append({"name": case.name, "argv": _argv(case, workdir),
                     "fsize_limit": case.fsize_limit})
      env = rh.cache_env()
      results = rh.run_jobs(jobs, shared / "logs", env)
      (shared / "runs.json").write_text(json.dumps({
          name: {"rc": r.rc, "output": r.output, "seconds": r.seconds, "before": before[name],
                 "after": rh.tree_hashes(shared / "cases" / name),
                 "workdir": str(shared / "cases" / name)}
          for name, r in results.items()}))
  return json.loads((shared / "runs.json").read_text())


@pytest.mark.parametrize("name", _NAMES)
def test_bad_input_fails_cleanly(corpus_runs, name):
  case = next(c for c in corpus.CASES if c.name == name)
  run = corpus_runs[name]
  result = rh.Result(run["rc"], run["output"], run["seconds"])
  if case.ok:
    assert result.rc == 0, run["output"][-3000:]
    assert "Traceback" not in run["output"] and not result.error_lines, run["output"][-3000:]
    return
  rh.assert_clean_failure(result, case.expect, run["before"], run["after"])


# Flag errors (before any workdir), another writer's workdir, a workdir that is a file, a full
# disk (the log may not fit): no log.
_NO_LOG = {"string_for_int", "unknown_field", "config_file_type_error",
           "config_file_syntax_error", "lock_held_by_live_process", "lock_of_another_host",
           "workdir_is_a_file", "disk_full_prepare", "disk_full_vectors"}


def test_error_line_names_a_log_with_the_traceback(corpus_runs):
  """Every failure that got to its workdir leaves the full traceback in workdir/logs/ and says
  where; the terminal shows none."""
  named = 0
  for case in corpus.CASES:
    run = corpus_runs[case.name]
    line = next((l for l in run["output"].splitlines() if l.startswith("error:")), "")
    match = re.search(r"\(traceback in (\S+\.log)\)$", line)
    if case.ok or case.name in _NO_LOG:
      continue
    assert match, (case.name, line)
    log = pathlib.Path(match.group(1))
    assert log.is_file() and log.parent == pathlib.Path(run["workdir"]) / "logs", line
    assert "Traceback (most recent call last)" in log.read_text(), case.name
    named += 1
  assert named >= 90


def test_duplicate_timestamps_keep_file_order(corpus_runs):
  """Tied timestamps are legal: file order decides, a repeated (user, item, time) row is one
  event."""
  from r3vae_jax.data import dataset  # pylint: disable=g-import-not-at-top
  inter = dataset.load_prepared(corpus_runs["duplicate_timestamps"]["workdir"])
  assert [s.tolist() for s in inter.sequences] == [[0, 1, 2], [2, 0, 1]]


def test_corpus_is_complete_and_current():
  failing = [c for c in corpus.CASES if not c.ok]
  assert len(failing) >= 100 and len(set(_NAMES)) == len(_NAMES)
  for name, content in corpus.generated_files().items():
    if name not in corpus.UNTRACKED:
      assert (corpus.HERE / name).read_bytes() == content, f"{name}: rerun corpus.py"
  used = {p for c in corpus.CASES for p in [s for _, s in c.place]
          + [f.split("{corpus}/")[1].split("/")[0] for f in c.flags if "{corpus}/" in f]}
  files = {p.name for p in corpus.HERE.iterdir()
           if not p.name.endswith(".py") or p.name.startswith("config_")}
  files = (files - {"__pycache__", "README.md"}) | corpus.UNTRACKED
  assert files - used == set(), f"corpus files no case uses: {files - used}"


@pytest.mark.parametrize("module", ["default", "beauty", "sports", "toys", "lastfm", "ml1m"])
def test_validate_accepts_shipped_configs(module):
  get_config = importlib.import_module(f"r3vae_jax.configs.{module}").get_config
  for tokenizer in default.TOKENIZERS:
    validate.validate(get_config(tokenizer))


@pytest.mark.parametrize("variant", sorted(ablations.ABLATIONS))
def test_config_ablations_set_their_fields_and_validate(variant):
  applies_to, fields = ablations.ABLATIONS[variant]
  tokenizer = applies_to[-1]
  config = importlib.import_module("r3vae_jax.configs.sports").get_config(
      f"{tokenizer}+{variant},npy")
  validate.validate(config)
  assert (config.tokenizer, config.preset, config.variant, config.vectors.source) == (
      tokenizer, tokenizer, variant, "npy")
  plain = importlib.import_module("r3vae_jax.configs.sports").get_config(f"{tokenizer},npy")
  for path, value in fields.items():
    section, leaf = path.split(".")
    assert config[section][leaf] == value, path
    if path not in presets.PRESETS["sports"][tokenizer]:
      assert value != plain[section][leaf], path


@pytest.mark.parametrize("arg,message", [
    ("r3vae+no_such", r"config variant 'no_such': expected one of"),
    ("rqvae+no_sc", r"config variant 'no_sc' applies to tokenizers \('r3vae',\), not 'rqvae'"),
    ("diger+recboard_schedule", r"config variant 'recboard_schedule' applies to tokenizers .*, "
                                r"not 'diger'"),
    ("vqgan", r"config preset 'vqgan' of synthetic: expected one of"),
    ("r3vae,npy,extra", r"expected 'preset\[\+ablation\.\.\.\]\[,vector_source\]'"),
])
def test_bad_config_argument_is_named(arg, message):
  with pytest.raises(ValueError, match=message):
    default.get_config(arg)


@pytest.mark.parametrize("field,value,message", [
    ("sid.levels", 0, r"config\.sid\.levels: expected an int >= 1, got 0"),
    ("sid.codebook_size", 1, r"config\.sid\.codebook_size: expected an int >= 2"),
    ("train.batch_size", True, r"config\.train\.batch_size: expected an int >= 1, got True"),
    ("train.lr", float("inf"), r"config\.train\.lr: expected a finite number > 0"),
    ("recommender.dropout", 1.0, r"config\.recommender\.dropout: .* < 1"),
    ("tokenizer", "vqvae", r"config\.tokenizer: expected one of \('rqkmeans'"),
    ("mesh.data", 0, r"config\.mesh\.data: expected an int >= 1 \(or -1\), got 0"),
    ("eval.ks", (5, "10"), r"config\.eval\.ks: expected a list of ints >= 1"),
    ("train.select_metric", "mrr@10", r"config\.train\.select_metric: expected ndcg@K"),
    ("train.select_metric", "ndcg@20", r"config\.train\.select_metric: expected K in"),
    ("rqvae.hidden", (64, 0), r"config\.rqvae\.hidden: expected a list of ints >= 1"),
    ("train.stop_at", -1.0, r"config\.train\.stop_at: expected a finite number >= 0"),
])
def test_validate_names_the_field(field, value, message):
  config = default.get_config()
  *path, last = field.split(".")
  node = config
  for part in path:
    node = node[part]
  with node.ignore_type():
    node[last] = value
  with pytest.raises(ValueError, match=message):
    validate.validate(config)


def test_validate_choices_match_the_modules():
  from r3vae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from r3vae_jax.diger import noise  # pylint: disable=g-import-not-at-top
  assert validate.DATA_FORMATS == pipeline.FORMATS
  assert validate.VECTOR_SOURCES == pipeline.VECTOR_SOURCES
  assert validate.DIGER_DECAYS == noise.DECAYS
  assert validate.DIGER_ANNEAL_SCHEDULES == noise.ANNEAL_SCHEDULES
  from r3vae_jax.tokenizer import quantizers  # pylint: disable=g-import-not-at-top
  assert validate.RQVAE_ESTIMATORS == quantizers.ESTIMATORS


def test_config_variants_compose():
  """`+`-joined variants apply in turn; two that set one field are refused."""
  config = default.get_config("diger+detached_follow+sinkhorn")
  validate.validate(config)
  assert config.variant == "detached_follow+sinkhorn"
  assert config.diger.tokenizer_schedule == "follow" and config.diger.detach_codes
  assert config.rqvae.balance_epsilon == 0.003
  with pytest.raises(ValueError, match="config variants 'detached' and 'detached_follow' both set"):
    default.get_config("diger+detached+detached_follow")


_RESULTS = REPO / "results"


# Config fields that were measured not to help and left the package (docs/experiments.md).
_REMOVED_FIELDS = {("train", "ema_decay"), ("train", "ensemble_size"),
                   ("train", "label_smoothing"), ("train", "smoothing_support"),
                   ("eval", "popularity_alphas")}


@pytest.mark.parametrize("row,arg", [
    ("beauty_diger-detached_follow-warmup-last_table-tokenizer_lr_1e-7_minilm_60ep_s0", "npy"),
    ("sports_diger-detached_follow-tokenizer_lr_1e-7_svd_30ep_s0",
     "interactions-svd"),
    ("toys_diger-detached_follow-last_table-tokenizer_lr_1e-7_svd_30ep_s0",
     "interactions-svd")])
def test_published_diger_rows_rebuild_from_their_preset(row, arg):
  """`<dataset>.py:diger` rebuilds the recorded rows' training, DIGER, tokenizer, SID and
  evaluation settings, leaving out the deadline, which a command passes."""
  recorded = json.loads((_RESULTS / f"{row}.json").read_text())
  module = importlib.import_module(f"r3vae_jax.configs.{recorded['dataset']}")
  built = json.loads(json.dumps(module.get_config(f"diger,{arg}").to_dict()))
  for section in ("train", "diger", "rqvae", "sid", "recommender", "eval"):
    for field, value in recorded["config"][section].items():
      if (section, field) in _REMOVED_FIELDS:
        assert field not in built[section], (section, field)
      elif (section, field) != ("train", "stop_at"):
        assert built[section][field] == value, (row, section, field)


@pytest.mark.parametrize("status,want", [("", "abc1234"), (" M r3vae_jax/main.py", "abc1234+dirty")])
def test_source_commit_marks_a_tree_that_differs_from_its_commit(monkeypatch, status, want):
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("R3VAE_COMMIT", raising=False)
  answers = {"rev-parse": "abc1234\n", "status": status}
  monkeypatch.setattr(io.subprocess, "run", lambda cmd, **_: subprocess.CompletedProcess(
      cmd, 0, stdout=answers[cmd[1]]))
  assert io.source_commit() == want
  monkeypatch.setenv("R3VAE_COMMIT", "given")
  assert io.source_commit() == "given"
