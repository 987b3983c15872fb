"""The command line: every stage of the pipeline as an absl app mode.

  python -m r3vae_jax.main --config=r3vae_jax/configs/beauty.py:r3vae --workdir=DIR --mode=all

Modes (each reads and writes files in --workdir, so any stage can be rerun alone):
  prepare    read the dataset (config.data), 5-core filter, write data/ and print statistics
  vectors    item text / interactions -> vectors.npy (config.vectors.source)
  tokenize   vectors -> SID table tokenizer/sid_table.npy + sid_metrics.json (config.tokenizer)
  train      train the T5 recommender on the SID table (config.tokenizer=diger: joint training)
  evaluate   constrained beam search on validation and test; writes eval.json
  all        prepare -> vectors -> tokenize -> train -> evaluate; writes results.json
             (a baseline config, `beauty.py:sasrec` (popularity | markov | sasrec): prepare,
             fit, both protocols; r3vae_jax/baselines)
  recommend  top-K items for --user (or --items=i1,i2,...) from a trained workdir
             (--fuse=DIR,...: mixed with other runs of the dataset, late fusion)

Main config fields: dataset, tokenizer (rqkmeans|rqvae|r3vae|diger), data.*, vectors.source,
sid.levels / sid.codebook_size, <tokenizer>.* (epochs, lr, ...), recommender.* (T5 sizes),
train.* (batch_size, lr, epochs, patience), eval.beam_size / eval.ks, mesh.data / mesh.model.
Override any of them: --config.train.lr=5e-4.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", "r3vae_jax/configs/default.py", "Config file, optionally `path:tokenizer`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every artifact of the run.")
_MODE = flags.DEFINE_enum(
    "mode", "all", ["prepare", "vectors", "tokenize", "train", "evaluate", "all", "recommend"],
    "Pipeline stage to run (see the module docstring).")
_USER = flags.DEFINE_integer("user", None, "recommend: a user index of the prepared dataset.")
_ITEMS = flags.DEFINE_list("items", None, "recommend: a history as item ids instead of --user.")
_TOP_K = flags.DEFINE_integer("top_k", 10, "recommend: how many items to print.")
_FUSE = flags.DEFINE_list("fuse", None, "recommend: other trained workdirs of the same dataset "
                          "whose beams are mixed with --workdir's (late fusion, uniform weights).")


def _stage_prepare(config, workdir):
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data import dataset, pipeline, splits  # pylint: disable=g-import-not-at-top
  inter = pipeline.prepare(config)
  try:  # Refuse data that later stages cannot split before writing anything.
    splits.leave_one_out(inter.sequences)
  except ValueError as e:
    raise io.ArtifactError(f"{config.data.path or config.data.format}: {e}") from None
  dataset.save_prepared(workdir, inter)
  stats = dataset.stats(inter)
  print(f"{inter.name}: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions")
  return stats


def _load_data(workdir):
  from r3vae_jax.data import dataset, splits  # pylint: disable=g-import-not-at-top
  inter = dataset.load_prepared(workdir)
  return inter, splits.leave_one_out(inter.sequences)


def _stage_vectors(config, workdir):
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  inter, spl = _load_data(workdir)
  vectors = pipeline.item_vectors(config, inter, spl)
  io.write_npy(os.path.join(workdir, "vectors.npy"), vectors)
  meta = {"source": pipeline.vectors_label(config), "shape": list(vectors.shape),
          "fingerprint": io.fingerprint_array(vectors)}
  io.write_json(os.path.join(workdir, "vectors.json"), meta)
  print(f"vectors: {vectors.shape[0]:,} x {vectors.shape[1]} from {config.vectors.source}")
  return meta


def _load_vectors(workdir, num_items):
  """vectors.npy checked for shape and finiteness, and against vectors.json's fingerprint."""
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data.vectors import npy  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "vectors.npy")
  vectors = npy.check_vectors(io.read_npy(path), num_items, path)
  meta_path = os.path.join(workdir, "vectors.json")
  if os.path.exists(meta_path):
    expected = io.read_json(meta_path).get("fingerprint")
    if expected != io.fingerprint_array(vectors):
      raise io.ArtifactError(f"{path}: fingerprint {io.fingerprint_array(vectors)} does not match "
                             f"{meta_path} ({expected}); the two files come from different runs "
                             "(rerun --mode=vectors)")
  return vectors


def _load_sid_table(workdir, num_items):
  """The SID table, checked against the item count and the vectors it was made from."""
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.tokenizer import sid_table  # pylint: disable=g-import-not-at-top
  table, metrics = sid_table.load_sid_table(workdir)
  source = os.path.join(workdir, sid_table.SID_DIR, sid_table.TABLE_FILE)
  if table.shape[0] != num_items:
    raise io.ArtifactError(f"{source}: {table.shape[0]} rows, but the prepared data has "
                           f"{num_items} items (rerun --mode=tokenize)")
  made_from = metrics.get("meta", {}).get("vectors_fingerprint")
  vectors_path = os.path.join(workdir, "vectors.json")
  if made_from and os.path.exists(vectors_path):
    current = io.read_json(vectors_path).get("fingerprint")
    if current != made_from:
      raise io.ArtifactError(f"{source}: made from vectors with fingerprint {made_from}, but "
                             f"{vectors_path} says {current}; rerun --mode=tokenize")
  return table


def _stage_tokenize(config, workdir):
  from r3vae_jax import quantize  # pylint: disable=g-import-not-at-top
  from r3vae_jax.tokenizer import api  # pylint: disable=g-import-not-at-top
  inter, spl = _load_data(workdir)
  vectors = _load_vectors(workdir, inter.num_items)
  if config.tokenizer == "diger":  # DIGER starts from a pretrained RQ-VAE tokenizer.
    config = _with_tokenizer(config, config.diger.pretrain)
  table, metrics = api.fit_tokenizer(config, vectors, workdir)
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
  inter, spl = _load_data(workdir)
  if config.tokenizer == "diger":
    from r3vae_jax.diger import train as diger_train  # pylint: disable=g-import-not-at-top
    return diger_train.train_diger(config, workdir, _load_vectors(workdir, inter.num_items), spl)
  from r3vae_jax.recommender import train  # pylint: disable=g-import-not-at-top
  return train.train_recommender(config, workdir, _load_sid_table(workdir, inter.num_items), spl)


def _stage_evaluate(config, workdir):
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  from r3vae_jax.recommender import evaluation  # pylint: disable=g-import-not-at-top
  inter, spl = _load_data(workdir)
  table = _load_sid_table(workdir, inter.num_items)
  metrics = {split: evaluation.evaluate_recommender(config, workdir, table, spl, split=split)
             for split in ("valid", "test")}
  for split in ("valid", "test"):  # both protocols: seen items removed and untouched
    metrics[f"{split}_full_ranking"] = metrics[split].pop("full_ranking")
  io.write_json(os.path.join(workdir, "eval.json"), metrics)
  for split, m in metrics.items():
    if not isinstance(m, dict):
      continue
    print(split, " ".join(f"{k}={v:.4f}" for k, v in sorted(m.items())
                          if isinstance(v, (int, float))))
  return metrics


def _stage_recommend(config, workdir):
  from r3vae_jax import api  # pylint: disable=g-import-not-at-top
  rec = api.Recommender.load(workdir, config)
  if _FUSE.value:
    rec = api.FusedRecommender([rec] + [api.Recommender.load(w) for w in _FUSE.value])
    print(f"late fusion of {len(rec.members)} runs: {', '.join([workdir] + _FUSE.value)}")
  if _ITEMS.value:
    history = [int(i) for i in _ITEMS.value]
  elif _USER.value is not None:
    history = rec.user_history(_USER.value)
  else:
    raise app.UsageError("--mode=recommend needs --user or --items")
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
  if not os.path.exists(path):
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
  from r3vae_jax import io  # pylint: disable=g-import-not-at-top
  commit = io.source_commit()  # at the start: the code that runs, not a later checkout's
  out = {}
  launches = _earlier_launches(workdir)
  with _StageClock(os.path.join(workdir, _WALL_TIME_FILE), launches,
                   _WALL_TIME_EVERY_S) as clock:
    for name in ("prepare", "vectors", "tokenize", "train", "evaluate"):
      logging.info("==== stage %s ====", name)
      with clock.stage(name):
        out[name] = _STAGES[name](config, workdir)
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
  }
  io.write_json(os.path.join(workdir, "results.json"), results)
  print(f"results: {os.path.join(workdir, 'results.json')}  wall time {sum(wall.values()):.1f}s"
        + (f" ({sum(results['wall_time_s'].values()):.1f}s over {len(every_launch)} launches)"
           if launches else ""))
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from r3vae_jax import io, parallel  # pylint: disable=g-import-not-at-top
  from r3vae_jax.configs import validate  # pylint: disable=g-import-not-at-top
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    validate.validate(config)
    parallel.initialize_distributed()
    os.makedirs(workdir, exist_ok=True)
    if config.get("method"):  # a baseline row (`dataset.py:popularity|markov|sasrec`)
      if _MODE.value != "all":
        raise ValueError(f"config.method={config.method}: baseline rows run with --mode=all")
      from r3vae_jax.baselines import run as baseline_run  # pylint: disable=g-import-not-at-top
      baseline_run.run_all(config, workdir)
    elif _MODE.value == "all":
      run_all(config, workdir)
    elif _MODE.value == "recommend":
      _stage_recommend(config, workdir)
    else:
      _STAGES[_MODE.value](config, workdir)
    if _MODE.value != "recommend":  # The config of the run, for later stages and the API.
      io.write_json(os.path.join(workdir, "config.json"), config.to_dict())
  except (io.ArtifactError, ValueError, OSError, FloatingPointError) as e:
    # One clear line and a non-zero exit, no traceback from deep inside JAX; a failed stage
    # leaves the files already in the workdir as they were.
    logging.error("%s failed: %s", _MODE.value, e)
    _fail(f"{_MODE.value}: {e}")


def _fail(message: str) -> None:
  print("error: " + " ".join(message.split()), file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a bad flag, config file or `--config.*` override is one error line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:  # ml_collections: an override of no config field.
    while e.args and isinstance(e.args[0], BaseException):
      e = e.args[0]
    _fail(f"flags: no such config field {e.args[0] if e.args else e}")
  except Exception as e:  # pylint: disable=broad-except  # a config file may raise anything.
    # ml_collections puts a config file's traceback in the message: keep only its last line.
    head, _, trace = str(e).partition("Traceback (most recent call last):")
    message = head + (trace.strip().splitlines()[-1] if trace.strip() else "")
    _fail(f"flags: {type(e).__name__ + ': ' if not isinstance(e, flags.Error) else ''}{message}")


def run() -> None:
  """The command line entry point (`python -m r3vae_jax.main`)."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
