"""The command line: every stage of the pipeline as an absl app mode.

  r3vae --config=beauty:r3vae --workdir=DIR --mode=all     # or python -m r3vae_jax.main ...

Modes (each reads and writes files in --workdir, so any stage can be rerun alone):
  prepare    read the dataset (config.data), 5-core filter, write data/ and print statistics
  vectors    item text / interactions -> vectors.npy (config.vectors.source)
  tokenize   vectors -> SID table tokenizer/sid_table.npy + sid_metrics.json (config.tokenizer)
  train      train the T5 recommender on the SID table (config.tokenizer=diger: joint training)
  evaluate   constrained beam search on validation and test; writes eval.json
  all        prepare -> vectors -> tokenize -> train -> evaluate; writes results.json and
             prints the metrics beside the popularity baseline's (a baseline config,
             `beauty:sasrec` (popularity | markov | sasrec): prepare, fit, both protocols;
             r3vae_jax/baselines)
  recommend  top-K items for --user (or --items=i1,i2,...) from a trained workdir
             (--fuse=DIR,...: mixed with other runs of the dataset, late fusion)

--config is NAME[:ARG] of r3vae_jax/configs (default, beauty, sports, toys, lastfm, ml1m) or a
config file PATH[:ARG]; without it, every mode but prepare and all uses the workdir's saved
config.json (so `r3vae --mode=recommend --workdir=DIR --user=2` works from any directory), and
prepare/all use `default`. Main config fields: dataset, tokenizer (rqkmeans|rqvae|r3vae|diger),
data.*, vectors.source, sid.levels / sid.codebook_size, <tokenizer>.* (epochs, lr, ...),
recommender.* (T5 sizes), train.* (batch_size, lr, epochs, patience), eval.beam_size / eval.ks,
mesh.data / mesh.model. Override any of them: --config.train.lr=5e-4.
Output: this package's progress lines; --verbose adds the libraries' INFO logs (orbax, JAX).
Curves: `tensorboard --logdir DIR` (event files in DIR/tensorboard/<stage>).

Every mode but recommend holds the workdir's lock (`workdir_lock.py`) and checks the lineage of
the artifacts it reads (`lineage.py`). Exit codes: 0 done; 2 a bad input, artifact or
environment problem (one `error:` line; the traceback in workdir/logs/error-<time>.log); 1 an
internal error (the same, the line says so); 130 stopped by Ctrl-C (after a checkpoint).
"""
from __future__ import annotations

import contextlib
import difflib
import glob
import logging as std_logging
import math
import os
import re
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging

_CONFIG = flags.DEFINE_string(
    "config", None, "Config NAME[:ARG] of r3vae_jax/configs (default, beauty, sports, toys, "
    "lastfm, ml1m; ARG = preset[+ablation][,vectors]) or a config file PATH[:ARG]. Default: the "
    "workdir's saved config.json for every mode but prepare and all, else `default`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every artifact of the run.")
_MODE = flags.DEFINE_enum(
    "mode", "all", ["prepare", "vectors", "tokenize", "train", "evaluate", "all", "recommend"],
    "Pipeline stage to run (see the module docstring).")
_USER = flags.DEFINE_integer("user", None, "recommend: a user index of the prepared dataset.")
_ITEMS = flags.DEFINE_list("items", None, "recommend: a history as item ids instead of --user.")
_TOP_K = flags.DEFINE_integer("top_k", 10, "recommend: how many items to print.")
_FUSE = flags.DEFINE_list("fuse", None, "recommend: other trained workdirs of the same dataset "
                          "whose beams are mixed with --workdir's (late fusion, uniform weights).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Also print the INFO logs of the libraries "
                             "(orbax, JAX) and absl's full log prefix.")
_PROFILE_STEPS = flags.DEFINE_list(
    "profile_steps", None, "train: A,B writes a jax.profiler trace of recommender (or DIGER) "
    "steps A..B-1 to WORKDIR/profile (open with TensorBoard's profile plugin or Perfetto).")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# `--config.FIELD=VALUE` overrides of this command line, in order (parse_flags fills it).
_OVERRIDES: list[tuple[str, str]] = []


def _stage_prepare(config, workdir):
  from r3vae_jax import lineage  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data import dataset, pipeline  # pylint: disable=g-import-not-at-top
  inter = pipeline.prepare(config)
  # Refuse data that later stages cannot split before writing anything.
  dataset.check_splittable(inter, config.data.path or config.data.format)
  dataset.save_prepared(workdir, inter)
  lineage.record(workdir, "data", _data_fingerprint(inter), {})
  stats = dataset.stats(inter)
  print(f"{inter.name}: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions")
  return stats


def _load_data(workdir):
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data import dataset, splits  # pylint: disable=g-import-not-at-top
  inter = dataset.load_prepared(workdir)
  try:
    return inter, splits.leave_one_out(inter.sequences)
  except ValueError as e:
    raise io.ArtifactError(f"{os.path.join(workdir, 'data', 'sequences.npz')}: {e}") from None


def _data_fingerprint(inter) -> str:
  from r3vae_jax import lineage  # pylint: disable=g-import-not-at-top
  return lineage.data_fingerprint(inter.sequences, inter.num_items, inter.item_titles,
                                  inter.item_text)


def _fingerprint(array) -> str:
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  return io.fingerprint_array(array)


def _stage_vectors(config, workdir):
  from r3vae_jax import io, lineage  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data.vectors import npy  # pylint: disable=g-import-not-at-top
  inter, spl = _load_data(workdir)
  data = {"data": _data_fingerprint(inter)}
  lineage.check(workdir, data)
  vectors = npy.check_vectors(pipeline.item_vectors(config, inter, spl), inter.num_items,
                              f"vectors ({config.vectors.source})")
  io.write_npy(os.path.join(workdir, "vectors.npy"), vectors)
  meta = {"source": pipeline.vectors_label(config), "shape": list(vectors.shape),
          "fingerprint": io.fingerprint_array(vectors)}
  io.write_json(os.path.join(workdir, "vectors.json"), meta)
  lineage.record(workdir, "vectors", meta["fingerprint"], data)
  print(f"vectors: {vectors.shape[0]:,} x {vectors.shape[1]} from {config.vectors.source}")
  return meta


def _load_vectors(workdir, num_items):
  """(vectors.npy checked for shape and finiteness, and against vectors.json's fingerprint;
  its fingerprint)."""
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data.vectors import npy  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "vectors.npy")
  vectors = npy.check_vectors(io.read_npy(path), num_items, path)
  fingerprint = io.fingerprint_array(vectors)
  meta_path = os.path.join(workdir, "vectors.json")
  if io.exists(meta_path):
    meta = io.read_json(meta_path)
    expected = meta.get("fingerprint") if isinstance(meta, dict) else None
    if not isinstance(expected, str):
      raise io.ArtifactError(f"{meta_path}: expected a JSON object with a string field "
                             "fingerprint (rerun --mode=vectors)")
    if expected != fingerprint:
      raise io.ArtifactError(f"{path}: fingerprint {fingerprint} does not match "
                             f"{meta_path} ({expected}); the two files come from different runs "
                             "(rerun --mode=vectors)")
  return vectors, fingerprint


def _load_sid_table(workdir, num_items):
  """The SID table, checked against the item count and the vectors it was made from."""
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.tokenizer import sid_table  # pylint: disable=g-import-not-at-top
  table, metrics = sid_table.load_sid_table(workdir)
  source = os.path.join(workdir, sid_table.SID_DIR, sid_table.TABLE_FILE)
  if table.shape[0] != num_items:
    raise io.ArtifactError(f"{source}: {table.shape[0]} rows, but the prepared data has "
                           f"{num_items} items (rerun --mode=tokenize)")
  meta = metrics.get("meta") if isinstance(metrics.get("meta"), dict) else {}
  made_from = meta.get("vectors_fingerprint")
  vectors_path = os.path.join(workdir, "vectors.json")
  if made_from and io.exists(vectors_path):
    vectors_meta = io.read_json(vectors_path)
    current = vectors_meta.get("fingerprint") if isinstance(vectors_meta, dict) else None
    if current != made_from:
      raise io.ArtifactError(f"{source}: made from vectors with fingerprint {made_from}, but "
                             f"{vectors_path} says {current}; rerun --mode=tokenize")
  return table


def _stage_tokenize(config, workdir):
  from r3vae_jax import lineage, quantize  # pylint: disable=g-import-not-at-top
  from r3vae_jax.tokenizer import api  # pylint: disable=g-import-not-at-top
  inter, spl = _load_data(workdir)
  vectors, vectors_fingerprint = _load_vectors(workdir, inter.num_items)
  inputs = {"data": _data_fingerprint(inter), "vectors": vectors_fingerprint}
  lineage.check(workdir, inputs)
  if config.tokenizer == "diger":  # DIGER starts from a pretrained RQ-VAE tokenizer.
    config = _with_tokenizer(config, config.diger.pretrain)
  table, metrics = api.fit_tokenizer(config, vectors, workdir, vectors_fingerprint)
  lineage.record(workdir, "sid_table", _fingerprint(table), inputs)
  # Per prefix length: how much more often consecutive training items share the prefix than
  # independent items do; the table statistic that tracked the recommenders' test NDCG@10 best
  # in a screen of 15 tables (docs/experiments.md).
  lift = quantize.transition_lift(table[:, :config.sid.levels], spl.train)
  return {**metrics, "transition_lift": [None if math.isnan(v) else float(v) for v in lift]}


def _with_tokenizer(config, name):
  config = config.copy_and_resolve_references()
  config.unlock()
  config.tokenizer = name
  return config


def _stage_train(config, workdir):
  from r3vae_jax import io, lineage  # pylint: disable=g-import-not-at-top
  from r3vae_jax.training import profile  # pylint: disable=g-import-not-at-top
  inter, spl = _load_data(workdir)
  if config.tokenizer == "diger":
    from r3vae_jax.diger import train as diger_train  # pylint: disable=g-import-not-at-top
    from r3vae_jax.tokenizer import sid_table  # pylint: disable=g-import-not-at-top
    vectors, vectors_fingerprint = _load_vectors(workdir, inter.num_items)
    inputs = {"data": _data_fingerprint(inter), "vectors": vectors_fingerprint}
    lineage.check(workdir, inputs)
    out = diger_train.train_diger(config, workdir, vectors, spl, step_hook=profile.hook())
    table = _fingerprint(sid_table.load_sid_table(workdir)[0])
    lineage.record(workdir, "sid_table", table, inputs, stage="train")
    inputs = {**inputs, "sid_table": table}
  else:
    from r3vae_jax.recommender import artifacts, train  # pylint: disable=g-import-not-at-top
    checkpoints = artifacts.paths(workdir).checkpoints
    if io.exists(checkpoints) and not io.isdir(checkpoints):
      raise io.ArtifactError(f"{checkpoints}: not a folder (the recommender's checkpoints go "
                             "there); move it away or use another --workdir")
    table = _load_sid_table(workdir, inter.num_items)
    inputs = {"data": _data_fingerprint(inter), "sid_table": _fingerprint(table)}
    lineage.check(workdir, inputs)
    out = train.train_recommender(config, workdir, table, spl, step_hook=profile.hook())
  lineage.record(workdir, "recommender",
                 io.fingerprint_json({**inputs, "config": config.recommender.to_dict(),
                                      "step": out.get("step"), "best": out.get("best_step")}),
                 inputs)
  return out


def _check_trained(workdir, inter, table) -> dict:
  """The lineage of a trained workdir's inputs, checked; returns them ({artifact: fp})."""
  from r3vae_jax import lineage  # pylint: disable=g-import-not-at-top
  inputs = {"data": _data_fingerprint(inter), "sid_table": _fingerprint(table)}
  lineage.check(workdir, inputs, uses=("recommender",))
  recommender = lineage.fingerprint_of(workdir, "recommender")
  return {**inputs, **({"recommender": recommender} if recommender else {})}


def _stage_evaluate(config, workdir):
  from r3vae_jax import io, lineage  # pylint: disable=g-import-not-at-top
  from r3vae_jax.recommender import evaluation  # pylint: disable=g-import-not-at-top
  inter, spl = _load_data(workdir)
  table = _load_sid_table(workdir, inter.num_items)
  inputs = _check_trained(workdir, inter, table)
  metrics = {split: evaluation.evaluate_recommender(config, workdir, table, spl, split=split)
             for split in ("valid", "test")}
  for split in ("valid", "test"):  # both protocols: seen items removed and untouched
    metrics[f"{split}_full_ranking"] = metrics[split].pop("full_ranking")
  rankings = sorted(glob.glob(os.path.join(workdir, "recommender", "*_ranking.npz")))
  lineage.record(workdir, "rankings", lineage.files_fingerprint(rankings), inputs)
  io.write_json(os.path.join(workdir, "eval.json"), metrics)
  lineage.record(workdir, "eval", io.fingerprint_json(metrics), inputs)
  for split, m in metrics.items():
    if not isinstance(m, dict):
      continue
    print(split, format_metrics(m))
  return metrics


def _items_flag() -> list[int] | None:
  """--items as item ids, None without it."""
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  if not _ITEMS.value:
    return None
  bad = next((i for i in _ITEMS.value if not i.strip().lstrip("-").isdigit()), None)
  if bad is not None:
    raise io.ArtifactError(f"--items: {bad!r} is not an item id (expected integers, e.g. "
                           "--items=3,17,42)")
  return [int(i) for i in _ITEMS.value]


def format_metrics(metrics: dict) -> str:
  """`k=v` pairs, sorted: counts (users, step) as ints, measurements with 4 decimals."""
  from r3vae_jax.training import progress  # pylint: disable=g-import-not-at-top
  return progress.format_metrics(metrics)


def _stage_recommend(config, workdir):
  from r3vae_jax import api  # pylint: disable=g-import-not-at-top
  from r3vae_jax.tokenizer import sid_table  # pylint: disable=g-import-not-at-top
  history = _items_flag()
  if history is None and _USER.value is None:
    raise app.UsageError("--mode=recommend needs --user or --items")
  for run in [workdir] + list(_FUSE.value or []):
    inter, _ = _load_data(run)
    _check_trained(run, inter, sid_table.load_sid_table(run)[0])
  rec = api.Recommender.load(workdir, config)
  if _FUSE.value:
    rec = api.FusedRecommender([rec] + [api.Recommender.load(w) for w in _FUSE.value])
    print(f"late fusion of {len(rec.members)} runs: {', '.join([workdir] + _FUSE.value)}")
  if history is None:
    history = rec.user_history(_USER.value)
  print("history:")
  for item in history[-10:]:
    print(f"  {item:>7d}  {rec.title(item)}")
  print(f"top {_TOP_K.value}:")
  for item, score in rec.recommend(history, _TOP_K.value):
    print(f"  {item:>7d}  {score:8.3f}  {rec.title(item)}")


_STAGES = {"prepare": _stage_prepare, "vectors": _stage_vectors, "tokenize": _stage_tokenize,
           "train": _stage_train, "evaluate": _stage_evaluate}


# Per-stage wall times of every `--mode=all` launch in a workdir, so that a run stopped by
# time, or killed, and launched again reports the time of all its launches.
_WALL_TIME_FILE = "wall_time.json"
_WALL_TIME_EVERY_S = 30.0  # how often the stage under way is written (a killed launch's record)


class _StageClock:
  """This launch's per-stage wall times ({stage: seconds}), written to `path` with the earlier
  launches' each time a stage ends, and every `every` seconds with the stage under way, so that a
  launch that is killed (SIGKILL, the OOM killer) or dies in a stage still counts its time up to
  the last write."""

  def __init__(self, path: str, earlier: list[dict], every: float):
    self.path, self.wall = path, {}
    self.launches = earlier + [self.wall]  # `wall` fills in stage by stage
    self._lock = threading.Lock()
    self._stage, self._start = None, 0.0
    self._stop = threading.Event()
    self._beat = threading.Thread(target=self._write_every, args=(every,), daemon=True)

  def __enter__(self) -> "_StageClock":
    self._beat.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._beat.join()

  @contextlib.contextmanager
  def stage(self, name: str):
    with self._lock:
      self._stage, self._start = name, time.perf_counter()
    try:
      yield
    finally:
      with self._lock:
        self._write()
        self._stage = None

  def _write(self) -> None:  # with the lock held
    from r3vae_jax import io  # pylint: disable=g-import-not-at-top
    self.wall[self._stage] = round(time.perf_counter() - self._start, 2)
    io.write_json(self.path, {"launches": self.launches})

  def _write_every(self, every: float) -> None:
    while not self._stop.wait(every):
      with self._lock:
        if self._stage is not None:
          self._write()


def _earlier_launches(workdir) -> list[dict]:
  """The per-stage wall times ({stage: seconds}) of earlier launches in `workdir`, oldest first."""
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, _WALL_TIME_FILE)
  if not io.exists(path):
    return []
  record = io.read_json(path)
  launches = record.get("launches") if isinstance(record, dict) else None
  if not isinstance(launches, list) or not all(
      isinstance(w, dict) and all(isinstance(s, (int, float)) for s in w.values())
      for w in launches):
    raise io.ArtifactError(f"{path}: expected {{\"launches\": [{{stage: seconds}}, ...]}}")
  return launches


def _summed(launches: list[dict]) -> dict:
  """{stage: seconds} summed over launches."""
  total = {}
  for wall in launches:
    for stage, seconds in wall.items():
      total[stage] = round(total.get(stage, 0.0) + seconds, 2)
  return total


# Environment variables that change how XLA runs a row, recorded in results.json: XLA_FLAGS (e.g.
# --xla_gpu_deterministic_ops=true) and the share of GPU memory (launch/paper_rows.sh sets it when
# rows share a GPU, so it marks wall times measured beside other rows).
_XLA_ENVIRONMENT = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def run_all(config, workdir) -> dict:
  """Runs every stage in order and writes workdir/results.json (docs/results.md shape).

  `wall_time_s` is summed over every launch in `workdir` (a run stopped by time and launched
  again trains on); with more than one, `wall_time_s_per_launch` lists each.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from r3vae_jax import io, lineage, parallel  # pylint: disable=g-import-not-at-top
  from r3vae_jax.training import preemption  # pylint: disable=g-import-not-at-top
  commit = io.source_commit()  # at the start: the code that runs, not a later checkout's
  out = {}
  launches = _earlier_launches(workdir)
  with _StageClock(os.path.join(workdir, _WALL_TIME_FILE), launches,
                   _WALL_TIME_EVERY_S) as clock:
    for name in ("prepare", "vectors", "tokenize", "train", "evaluate"):
      logging.info("==== stage %s ====", name)
      with clock.stage(name):
        out[name] = _STAGES[name](config, workdir)
      parallel.sync_processes(f"stage {name}")  # its files written before the next reads them
      if preemption.interrupted():  # Ctrl-C: training saved; the later stages do not run.
        return {}
  wall, every_launch = clock.wall, clock.launches
  versions = {}
  for mod in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint"):
    try:
      versions[mod] = __import__(mod, fromlist=["_"]).__version__
    except (ImportError, AttributeError):
      pass
  # sid_metrics describe the table the recommender was tested on: DIGER's own (its train
  # summary), the tokenize stage's otherwise; DIGER's pretrained table stays beside them.
  trained_sid = out["train"].get("sid_metrics")
  sid = {"sid_metrics": trained_sid, "pretrained_sid_metrics": out["tokenize"]} if trained_sid \
      else {"sid_metrics": out["tokenize"]}
  results = {
      "kind": "experiment", "dataset": config.dataset, "tokenizer": config.tokenizer,
      "preset": config.preset, "variant": config.variant, "vectors": out["vectors"]["source"],
      "vectors_fingerprint": out["vectors"]["fingerprint"], "seed": config.seed,
      "config": config.to_dict(),
      "data_stats": out["prepare"], "metrics": out["evaluate"], **sid,
      "train": out["train"], "wall_time_s": _summed(every_launch),
      **({"wall_time_s_per_launch": every_launch} if launches else {}),
      "device": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
      "commit": commit, "versions": versions, "command": " ".join(sys.argv),
      "xla_environment": {name: os.environ[name] for name in _XLA_ENVIRONMENT
                          if name in os.environ},
      "lineage": {name: entry for name, entry in (lineage.read(workdir) or {}).items()
                  if name != "results"},
  }
  io.write_json(os.path.join(workdir, "results.json"), results)
  lineage.record(workdir, "results", io.fingerprint_json(results),
                 {name: entry["fingerprint"] for name, entry in results["lineage"].items()})
  print(f"results: {os.path.join(workdir, 'results.json')}  wall time {sum(wall.values()):.1f}s"
        + (f" ({sum(results['wall_time_s'].values()):.1f}s over {len(every_launch)} launches)"
           if launches else ""))
  return results


class _TracebacksToLog(std_logging.Filter):
  """Keeps the tracebacks that libraries log (orbax's background threads log every failed
  write with one) off the terminal; `_error_log` writes them to the error log instead."""

  def __init__(self):
    super().__init__()
    self.tracebacks: list[str] = []

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.exc_info:
      import traceback  # pylint: disable=g-import-not-at-top
      self.tracebacks.append(f"{record.getMessage()}\n"
                             + "".join(traceback.format_exception(*record.exc_info)))
      record.exc_info, record.exc_text = None, None
    return True


_LOGGED_TRACEBACKS = _TracebacksToLog()


def _unraisable_to_log(unraisable) -> None:
  """sys.unraisablehook: an exception nobody can catch (orbax's coroutines and event loops,
  collected after a failed restore) goes to the error log, not the terminal."""
  import traceback  # pylint: disable=g-import-not-at-top
  trace = "".join(traceback.format_exception(unraisable.exc_type, unraisable.exc_value,
                                             unraisable.exc_traceback))
  _LOGGED_TRACEBACKS.tracebacks.append(
      f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}\n{trace}")


def _install_quiet_hooks() -> None:
  """Library tracebacks (logged, or raised where nothing catches them) go to the error log."""
  std_logging.getLogger("absl").addFilter(_LOGGED_TRACEBACKS)
  sys.unraisablehook = _unraisable_to_log


def print_summary(config, workdir, results) -> None:
  """The metrics of `results` beside the popularity baseline's, the SIDs and the files."""
  from r3vae_jax import summary  # pylint: disable=g-import-not-at-top
  _, spl = _load_data(workdir)
  ks = tuple(config.eval.ks)
  popularity = {split: summary.popularity_metrics(spl, split, ks, config.eval.exclude_seen)
                for split in ("valid", "test")}
  summary.print_summary(results, workdir, popularity, ks)


def _usage(message: str) -> None:
  """A usage mistake: one `error:` line (advice first), no help dump, exit 2."""
  _fail(message)


def _workdir_config(workdir: str):
  """The config a run in `workdir` saved (config.json, else results.json), or None."""
  from r3vae_jax import api  # pylint: disable=g-import-not-at-top
  return api.saved_config(workdir)


def resolve_config(spec: str | None, overrides, workdir: str, mode: str):
  """The run's config: `spec` (configs.load), else the workdir's saved config for every mode
  but prepare and all, else `default`; then the `--config.FIELD=VALUE` overrides."""
  from r3vae_jax import configs  # pylint: disable=g-import-not-at-top
  config = None
  if spec is None and mode not in ("prepare", "all"):
    config = _workdir_config(workdir)
    if config is None and mode in ("evaluate", "recommend"):
      raise configs.ConfigError(
          f"give --config=NAME or train in this workdir first: {workdir} holds no config.json "
          "(--mode=all writes it)")
  if config is None:
    config = configs.load(spec or "default")
  configs.apply_overrides(config, overrides)
  return config


class _LibraryFilter(std_logging.Filter):
  """Passes this package's records and every warning; hides other libraries' INFO (orbax, JAX)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


def setup_logging(verbose: bool) -> None:
  """Quiet output unless `verbose`: this package's INFO lines with a short time prefix, other
  libraries' warnings and errors only."""
  handler = logging.get_absl_handler()
  if verbose or any(isinstance(f, _LibraryFilter) for f in handler.filters):
    return
  handler.addFilter(_LibraryFilter())
  handler.python_handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s",
                                                            "%H:%M:%S"))


def _run_mode(config, workdir) -> None:
  from r3vae_jax import io, parallel, workdir_lock  # pylint: disable=g-import-not-at-top
  from r3vae_jax.configs import validate  # pylint: disable=g-import-not-at-top
  from r3vae_jax import compile_cache  # pylint: disable=g-import-not-at-top
  _install_quiet_hooks()
  compile_cache.enable()  # a relaunch, another seed or a later stage reuses compiled programs
  validate.validate(config)
  parallel.initialize_distributed()
  if _MODE.value == "recommend":  # reads only: no lock
    _stage_recommend(config, workdir)
    return
  import jax  # pylint: disable=g-import-not-at-top
  io.makedirs(workdir)
  with workdir_lock.hold(workdir, _MODE.value, chief=jax.process_index() == 0), \
      _profiler(workdir):
    if config.get("method"):  # a baseline row (`dataset:popularity|markov|sasrec`)
      if _MODE.value != "all":
        raise ValueError(f"config.method={config.method}: baseline rows run with --mode=all")
      from r3vae_jax.baselines import run as baseline_run  # pylint: disable=g-import-not-at-top
      baseline_run.run_all(config, workdir)
    elif _MODE.value == "all":
      results = run_all(config, workdir)
      if results:  # empty when Ctrl-C stopped the run
        print_summary(config, workdir, results)
    else:
      _STAGES[_MODE.value](config, workdir)
      parallel.sync_processes(f"stage {_MODE.value}")
    # The config of the run, for later stages and the API.
    io.write_json(os.path.join(workdir, "config.json"), config.to_dict())


# Exit codes: 2 an input, artifact or environment problem (one `error:` line); 1 an internal
# error (one `error:` line too, the traceback in the log); 130 interrupted (SIGINT).
EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 1, 130


def main(argv):
  if len(argv) > 1:
    _usage(f"pass every option as --flag=value; unexpected arguments: {' '.join(argv[1:])}")
  from r3vae_jax import configs, io, workdir_lock  # pylint: disable=g-import-not-at-top
  from r3vae_jax.training import preemption  # pylint: disable=g-import-not-at-top
  if not _WORKDIR.value:
    _usage("add --workdir=DIR, the folder of the run's files (e.g. --workdir=/tmp/r3vae)")
  if _MODE.value == "recommend" and _USER.value is None and not _ITEMS.value:
    _usage("add --user=N (a user index) or --items=i1,i2,... to --mode=recommend")
  setup_logging(_VERBOSE.value)
  workdir = _WORKDIR.value
  try:
    config = resolve_config(_CONFIG.value, _OVERRIDES, workdir, _MODE.value)
  except configs.ConfigError as e:
    _fail(f"flags: {e}")
  try:
    _run_mode(config, workdir)
  except workdir_lock.LockedError as e:  # another process's workdir: nothing written there
    _fail(f"{_MODE.value}: {e}")
  except (io.ArtifactError, ValueError, OSError, FloatingPointError, OverflowError) as e:
    # One clear line and a non-zero exit, no traceback from deep inside JAX; a failed stage
    # leaves the files already in the workdir as they were (a checkpoint it failed to write,
    # e.g. on a full disk, is removed).
    _fail(f"{_MODE.value}: {_message(e)}", workdir, EXIT_INPUT)
  except app.UsageError:
    raise
  except KeyboardInterrupt:
    _fail(f"{_MODE.value}: interrupted (SIGINT)", workdir, EXIT_INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except  # a bug: still one line, trace logged
    _fail(f"{_MODE.value}: internal error {type(e).__name__}: {_message(e)}", workdir,
          EXIT_INTERNAL)
  if preemption.interrupted():
    print(f"interrupted (SIGINT): {_MODE.value} stopped after saving a checkpoint; run the same "
          "command again to resume", file=sys.stderr)
    _close_checkpoint_managers()
    sys.exit(EXIT_INTERRUPTED)


def _message(e: BaseException) -> str:
  if isinstance(e, OSError) and e.filename and str(e.filename) not in str(e.strerror or ""):
    return f"{e.filename}: {e.strerror or e}"
  return str(e) or type(e).__name__


def _close_checkpoint_managers() -> None:
  """Closes the orbax checkpoint managers still open, so that their background threads end
  before the interpreter does (else they print "Event loop is closed" tracebacks)."""
  checkpoint = sys.modules.get("r3vae_jax.checkpoint")
  if checkpoint is not None:
    checkpoint.close_all()


def _error_log(workdir: str) -> str | None:
  """Writes the traceback being handled to workdir/logs/error-<time>.log; its path, or None."""
  import traceback  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "logs", time.strftime("error-%Y%m%d-%H%M%S.log"))
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
      f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {' '.join(sys.argv)}\n")
      f.write(traceback.format_exc())
      for logged in _LOGGED_TRACEBACKS.tracebacks:
        f.write("\nlogged earlier: " + logged)
    return path
  except OSError:
    return None


def _remove_partial_checkpoints(workdir: str) -> None:
  """Deletes orbax's temporary folders of checkpoints that failed to save (this process held
  the workdir's lock, so no other writer is saving one)."""
  import shutil  # pylint: disable=g-import-not-at-top
  for root, dirs, _ in os.walk(workdir):
    for name in list(dirs):
      if ".orbax-checkpoint-tmp" in name:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
      if ".orbax-checkpoint-tmp" in name or name.isdigit():
        dirs.remove(name)  # nothing of ours inside a step folder


def _fail(message: str, workdir: str | None = None, code: int = EXIT_INPUT) -> None:
  """Prints one `error:` line (with the path of the traceback log when `workdir`) and exits."""
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  _close_checkpoint_managers()
  if workdir and os.path.isdir(workdir):
    _remove_partial_checkpoints(workdir)
  log = _error_log(workdir) if workdir and io.is_local(workdir) else None
  print("error: " + " ".join(message.split()) + (f" (traceback in {log})" if log else ""),
        file=sys.stderr)
  sys.exit(code)


def _profiler(workdir: str):
  """`--profile_steps=A,B`: a jax.profiler trace of training steps A..B-1 (training.profile)."""
  if not _PROFILE_STEPS.value:
    return contextlib.nullcontext()
  from r3vae_jax.training import profile  # pylint: disable=g-import-not-at-top
  try:
    start, stop = (int(v) for v in _PROFILE_STEPS.value)
  except ValueError:
    start = stop = -1
  if not 0 <= start < stop:
    _usage(f"write --profile_steps=A,B with 0 <= A < B (training steps); got "
           f"{','.join(_PROFILE_STEPS.value)}")
  return profile.StepTrace(os.path.join(workdir, "profile"), start, stop)


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """(argv without them, [(field, value)]) of the `--config.FIELD=VALUE` (or
  `--config.FIELD VALUE`) arguments, in order."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config.") and i > 0:
      field, sep, value = arg[len("--config."):].partition("=")
      if not sep:
        if i + 1 >= len(argv):
          _usage(f"write {arg}=VALUE: {arg} has no value")
        value, i = argv[i + 1], i + 1
      overrides.append((field, value))
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; `--config.*` overrides are kept for `resolve_config`. A bad flag is one
  error line, without the help text."""
  rest, overrides = split_overrides(argv)
  _OVERRIDES[:] = overrides
  try:
    return flags.FLAGS(rest)
  except flags.Error as e:
    names = re.findall(r"flag '-*([\w.-]+)'", str(e))
    near = difflib.get_close_matches(names[0], list(flags.FLAGS), n=1) if names else []
    hint = f"did you mean --{near[0]}? " if near else ""
    _fail(f"{hint}{str(e).split('. Did you mean')[0]} (r3vae --help lists the flags)")
    return []


def run() -> None:
  """The command line entry point (`python -m r3vae_jax.main`, `r3vae`)."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
