"""The whole pipeline at industrial size on one device: time and peak memory of every stage.

  python -m benchmarks.scale_run --scale=1m --out=benchmarks/results/scale_1m_h100.json
  python -m benchmarks.scale_run --scale=small --out=/tmp/scale_small.json   # CPU, < 1 minute

Stages (the command line's own stage functions, `r3vae_jax.main`, on one workdir):
  generate  the synthetic catalogue (`r3vae_jax.data.synthetic_catalogue`): ICLRec sequences +
            npy vectors
  prepare   data.format=iclrec reads the sequences (min_core 0: every user has >= 5 items)
  vectors   vectors.source=npy
  tokenize  R3-VAE (the default recipe) with `levels x codebook_size` codes + the collision level
  train     the T5 recommender, one epoch, stopped early at a deadline (`train.stop_at`) if the
            epoch does not fit: the JSON says how many examples were trained
  evaluate  trie-constrained beam search on validation and test, `eval.max_users` users each

For every stage the JSON records seconds, peak host RSS during the stage (VmHWM after
/proc/self/clear_refs), peak device memory (the largest `bytes_in_use` sampled every 0.1 s, and
the allocator's `peak_bytes_in_use` so far) and a throughput. The JSON is rewritten after every
stage; a stage that passes its time cap (`SCALES[...]["caps"]`, or the overall `--budget_s`) is
recorded as "timed_out" with what was measured so far, and the process exits.
"""
from __future__ import annotations

import json
import os
import resource
import shlex
import sys
import threading
import time
from typing import Any, Callable

from absl import app
from absl import flags
import numpy as np


def _define_flags():
  """The command line's flags, defined when run as a script (the tests import this module next
  to others that define `--out`)."""
  return (flags.DEFINE_enum("scale", "small", ["1m", "small", "tiny"], "Catalogue size preset."),
          flags.DEFINE_string("out", "", "Result JSON (default: <run_dir>/scale_<scale>.json)."),
          flags.DEFINE_string("run_dir", "", "Catalogue and workdir (default: a temp folder)."),
          flags.DEFINE_float("budget_s", 0.0, "Overall wall-clock cap (0: the scale's)."))

STAGES = ("generate", "prepare", "vectors", "tokenize", "train", "evaluate")

# Sizes and caps per scale. `train_s`: training steps stop at this many seconds after the train
# stage starts (the rest of its cap covers compilation, validation and the checkpoint).
SCALES: dict[str, dict[str, Any]] = {
    "1m": dict(
        catalogue=dict(num_items=1_000_000, num_users=2_000_000, dim=768, num_topics=2048),
        levels=3, codebook_size=1024, max_collisions=256, tokenizer_epochs=5,
        batch_size=2048, eval_users=100_000, eval_batch=4096, paper_model=True,
        compute_dtype="bfloat16", budget_s=560.0, train_s=240.0,
        caps=dict(generate=150, prepare=120, vectors=60, tokenize=150, train=290, evaluate=150)),
    "small": dict(
        catalogue=dict(num_items=20_000, num_users=40_000, dim=64, num_topics=128),
        levels=3, codebook_size=64, max_collisions=64, tokenizer_epochs=1,
        batch_size=512, eval_users=4096, eval_batch=1024, paper_model=False,
        budget_s=500.0, train_s=60.0,
        caps=dict(generate=30, prepare=30, vectors=30, tokenize=120, train=180, evaluate=120)),
    "tiny": dict(  # the test's
        catalogue=dict(num_items=600, num_users=1200, dim=16, num_topics=8),
        levels=2, codebook_size=16, max_collisions=64, tokenizer_epochs=1,
        batch_size=256, eval_users=256, eval_batch=256, paper_model=False,
        budget_s=300.0, train_s=30.0,
        caps=dict(generate=30, prepare=30, vectors=30, tokenize=90, train=90, evaluate=60)),
}


def scale_config(scale: dict[str, Any], run_dir: str):
  """The default base config pointed at the catalogue files, sized by `scale`."""
  from r3vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  c = default.base_config()
  c.dataset = "synthetic_catalogue"
  c.tokenizer = "r3vae"
  c.data.format = "iclrec"
  c.data.path = os.path.join(run_dir, "catalogue", "sequences.txt")
  c.data.min_core = 0
  c.vectors.source = "npy"
  c.vectors.path = os.path.join(run_dir, "catalogue", "vectors.npy")
  c.vectors.label = "synthetic catalogue (topic + sub-topic centres + noise)"
  c.sid.levels, c.sid.codebook_size = scale["levels"], scale["codebook_size"]
  c.sid.max_collisions = scale["max_collisions"]
  c.sid.spill_overflow = True
  c.r3vae.epochs = c.r3vae.eval_every = scale["tokenizer_epochs"]
  if not scale["paper_model"]:
    c.r3vae.hidden = (128,)
    c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32,
                              num_heads=2, d_kv=16, d_ff=64))
    c.train.length_buckets = ()  # one compiled shape: CPU compile time dominates small runs
  c.recommender.dtype = scale.get("compute_dtype", "float32")
  c.train.update(dict(epochs=1, batch_size=scale["batch_size"], eval_every_epochs=1,
                      log_every_steps=50))
  # Synthetic users may meet an item twice: the target is never removed from the ranking.
  c.eval.update(dict(max_users=scale["eval_users"], batch_size=scale["eval_batch"],
                     exclude_seen=False))
  return c


# ---- measurements ------------------------------------------------------------------------------

def _reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (VmHWM) of this process; False where unsupported."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _status_kib(field: str) -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def _device_stats() -> dict[str, int] | None:
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.local_devices()[0].memory_stats()
  return stats or None


class StageMeter:
  """Wall time, peak host RSS and sampled peak device memory of one stage."""

  def __init__(self):
    self.began = time.time()
    self.rss_reset = _reset_peak_rss()
    self.device_max = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._sample, daemon=True)
    self._thread.start()

  def _sample(self) -> None:
    while True:
      stats = _device_stats()
      if stats:
        self.device_max = max(self.device_max, int(stats.get("bytes_in_use", 0)))
      if self._stop.wait(0.1):
        return

  def read(self) -> dict[str, Any]:
    """The stage's measurements so far."""
    hwm = _status_kib("VmHWM")
    peak_host = (hwm * 1024 if hwm is not None and self.rss_reset
                 else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    stats = _device_stats()
    return {"seconds": round(time.time() - self.began, 2),
            "peak_host_bytes": peak_host,
            "peak_host_is_stage_only": bool(self.rss_reset and hwm is not None),
            "peak_device_bytes_sampled": self.device_max if stats else None,
            "device_peak_bytes_in_use_so_far": int(stats["peak_bytes_in_use"])
                                               if stats and "peak_bytes_in_use" in stats
                                               else None}

  def stop(self) -> dict[str, Any]:
    self._stop.set()
    self._thread.join()
    return self.read()


class Record:
  """The result JSON, rewritten after every stage (and by the watchdog on a timeout)."""

  def __init__(self, path: str, head: dict[str, Any]):
    self.path, self.data = path, {**head, "stages": {}, "completed": False}
    self.lock = threading.Lock()

  def stage(self, name: str, entry: dict[str, Any]) -> None:
    with self.lock:
      self.data["stages"][name] = entry
      self._write()

  def finish(self, **fields) -> None:
    with self.lock:
      self.data.update(fields)
      self._write()

  def _write(self) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(self.data, f, indent=1, default=_jsonable)
    os.replace(tmp, self.path)


def _jsonable(x: Any) -> Any:
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


class Watchdog:
  """Ends the process with a "timed_out" record when the running stage passes its deadline."""

  def __init__(self, record: Record):
    self.record, self.stage, self.deadline, self.meter = record, None, 0.0, None
    threading.Thread(target=self._watch, daemon=True).start()

  def arm(self, stage: str, deadline: float, meter: StageMeter) -> None:
    self.stage, self.deadline, self.meter = stage, deadline, meter

  def disarm(self) -> None:
    self.stage = None

  def _watch(self) -> None:
    while True:
      time.sleep(0.5)
      if self.stage is not None and time.time() > self.deadline:
        entry = {**self.meter.read(), "status": "timed_out",
                 "cap_s": round(self.deadline - self.meter.began, 1)}
        self.record.stage(self.stage, entry)
        self.record.finish(completed=False, stopped_in=self.stage)
        print(f"scale_run: stage {self.stage} passed its cap; partial record in "
              f"{self.record.path}", flush=True)
        os._exit(3)


# ---- stages ------------------------------------------------------------------------------------

def _training_examples(workdir: str, window: int) -> int:
  """How many training examples one epoch has (`recommender.data.train_examples`'s count)."""
  with np.load(os.path.join(workdir, "data", "sequences.npz")) as z:
    lengths = np.diff(z["offsets"])
  train = np.minimum(lengths - 2, window) if window else lengths - 2
  return int(np.maximum(train - 1, 0).sum())


def run_stages(scale_name: str, run_dir: str, out: str, budget_s: float) -> dict[str, Any]:
  """Runs every stage; returns the record (also written to `out`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from r3vae_jax import io, main  # pylint: disable=g-import-not-at-top
  from r3vae_jax.data import synthetic_catalogue  # pylint: disable=g-import-not-at-top

  scale = SCALES[scale_name]
  start = time.time()
  budget_s = budget_s or scale["budget_s"]
  config = scale_config(scale, run_dir)
  workdir = os.path.join(run_dir, "work")
  spec = synthetic_catalogue.CatalogueSpec(**scale["catalogue"])
  device = jax.devices()[0]
  record = Record(out, {
      "benchmark": "scale_run", "scale": scale_name,
      "device": getattr(device, "device_kind", str(device)), "platform": device.platform,
      "num_devices": jax.device_count(), "host_cpus": os.cpu_count(),
      "commit": io.source_commit(), "command": " ".join(shlex.quote(a) for a in sys.argv),
      "versions": {"jax": jax.__version__, "numpy": np.__version__},
      "budget_s": budget_s,
      "sizes": {"items": spec.num_items, "users": spec.num_users, "dim": spec.dim,
                "sid": f"{config.sid.levels} x {config.sid.codebook_size} + collision level "
                       f"of {config.sid.max_collisions}",
                "recommender": config.recommender.to_dict(),
                "train_batch": config.train.batch_size, "eval_users_per_split":
                    config.eval.max_users, "beam": config.eval.beam_size}})
  watchdog = Watchdog(record)

  def stage(name: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    print(f"scale_run: {name} ...", flush=True)
    meter = StageMeter()
    watchdog.arm(name, min(meter.began + scale["caps"][name], start + budget_s), meter)
    info = body()
    watchdog.disarm()
    entry = {**meter.stop(), "status": "done", **info}
    record.stage(name, entry)
    print(f"scale_run: {name} done in {entry['seconds']:.1f}s, peak host "
          f"{entry['peak_host_bytes'] / 2**30:.2f} GiB", flush=True)
    return entry

  def generate():
    summary = synthetic_catalogue.write_catalogue(os.path.join(run_dir, "catalogue"), spec)
    return {"interactions": summary["interactions"], "avg_len": summary["avg_len"],
            "max_len": summary["max_len"], "sequences_s": summary["sequences_s"],
            "vectors_s": summary["vectors_s"]}

  def prepare():
    stats = main._stage_prepare(config, workdir)  # pylint: disable=protected-access
    return {"stats": stats}

  def vectors():
    meta = main._stage_vectors(config, workdir)  # pylint: disable=protected-access
    return {"shape": meta["shape"]}

  def tokenize():
    metrics = main._stage_tokenize(config, workdir)  # pylint: disable=protected-access
    keep = ("collision_rate", "max_group_size", "num_groups", "spilled_items", "usage_per_level",
            "reconstruction_mse", "best_epoch", "fit_seconds", "transition_lift")
    return {k: metrics.get(k) for k in keep}

  def train():
    config.train.stop_at = time.time() + scale["train_s"]
    result = main._stage_train(config, workdir)  # pylint: disable=protected-access
    per_epoch = _training_examples(workdir, config.train.example_window)
    trained = min(result["step"] * config.train.batch_size, per_epoch)
    return {"finished": result["finished"], "steps": result["step"],
            "examples_per_epoch": per_epoch, "examples_trained": trained,
            "epochs_trained": trained / per_epoch, "train_time_s": result["train_time_s"],
            "best_valid": result["best_valid"]}

  def evaluate():
    metrics = main._stage_evaluate(config, workdir)  # pylint: disable=protected-access
    return {"metrics": metrics}

  bodies = {"generate": generate, "prepare": prepare, "vectors": vectors, "tokenize": tokenize,
            "train": train, "evaluate": evaluate}
  entries = {name: stage(name, bodies[name]) for name in STAGES}
  _add_rates(entries, spec)
  for name, entry in entries.items():
    record.stage(name, entry)
  record.finish(completed=True, total_s=round(time.time() - start, 2))
  return record.data


def _add_rates(entries: dict[str, dict[str, Any]], spec) -> None:
  """items/s (users/s, examples/s) per stage, from the stage's own counts."""
  interactions = entries["generate"]["interactions"]
  rate = lambda count, name: round(count / max(entries[name]["seconds"], 1e-9), 1)
  entries["generate"]["interactions_per_s"] = rate(interactions, "generate")
  entries["prepare"]["interactions_per_s"] = rate(interactions, "prepare")
  entries["vectors"]["items_per_s"] = rate(spec.num_items, "vectors")
  entries["tokenize"]["items_per_s"] = rate(spec.num_items, "tokenize")
  train = entries["train"]
  train["examples_per_s_stage"] = rate(train["examples_trained"], "train")
  users = sum(m.get("users", 0) for m in entries["evaluate"]["metrics"].values()
              if isinstance(m, dict))
  entries["evaluate"]["users"] = users
  entries["evaluate"]["users_per_s"] = rate(users, "evaluate")


def main_(argv):
  del argv
  scale, out_flag, run_dir_flag, budget = (flags.FLAGS[n].value
                                           for n in ("scale", "out", "run_dir", "budget_s"))
  import tempfile  # pylint: disable=g-import-not-at-top
  run_dir = run_dir_flag or tempfile.mkdtemp(prefix=f"scale_{scale}_")
  out = out_flag or os.path.join(run_dir, f"scale_{scale}.json")
  data = run_stages(scale, run_dir, out, budget)
  print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk in ("seconds", "peak_host_bytes",
                                                                  "status")}
                    for k, v in data["stages"].items()}, indent=1))
  print(f"scale_run: wrote {out}")


if __name__ == "__main__":
  _define_flags()
  app.run(main_)
