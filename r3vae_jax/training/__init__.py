"""The training core shared by every trainer (tokenizer, recommender, DIGER, and new ones).

A trainer keeps its model, its jitted step (pure: `step(state, batch) -> (state, metrics)`,
state donated) and its loop; the core gives it the rest, module by module:

  stage.begin(workdir, name, fingerprints) -> Stage
      Opens `workdir/<name>/` once at the start of a stage. `Stage.metrics` is its
      `MetricsWriter` (`metrics.jsonl` there), `Stage.fingerprints` what its checkpoints must
      agree with, `Stage.path(...)` a file of the stage, `Stage.elapsed()` seconds since begin.
      The place for workdir-wide checks (a lock, the lineage of the artifacts read).
  metrics.MetricsWriter (protocol: write(record), close()), JsonlWriter(path), MultiWriter(*w)
      Records are flat JSON dicts with "kind" and the step or epoch; pass
      `writer=MultiWriter(JsonlWriter(...), other)` to `stage.begin` to add a sink.
  resume.resume(manager, tree, version, fingerprints) -> (step, tree, meta) | None
      Restores the latest readable checkpoint of an orbax manager (`checkpoint.make_manager`)
      into `tree`'s layout and refuses one of another run (`io.ArtifactError` naming the
      differing fingerprint or meta version). Save with
      `checkpoint.save(manager, step, tree, resume.make_meta(version, fingerprints, **progress))`.
  selection.Progress
      Early stopping and best-checkpoint selection on a validation metric (higher is better):
      `record_validation(metrics | None, metric, epoch, step, patience) -> improved`,
      `end_epoch(epoch, epochs)`, `extend_to(epochs)` on a relaunch with more epochs; a
      dataclass, saved in the meta as `dataclasses.asdict(progress)`.
  eta.Eta(total, done)
      `tick(done) -> (units per second, seconds left)` for the progress log line.
  preemption.PreemptionWatch(stop_at)
      Context manager; `requested(step)` turns True on SIGTERM (one host), at JAX's preemption
      sync point (several hosts) or past the deadline `stop_at`: save and leave the loop.
  compile.precompile(compile_batch, batches, what), compile.cached_program(key, build)
      Compile every batch shape (history-length buckets: `recommender.data.bucket_batches`) on
      threads before the first step; reuse programs across runs in one process.

A new trainer, in order (`recommender/train.py` is the worked example):

  stage = stage_lib.begin(workdir, "sasrec", {"config": io.fingerprint_json(...)})
  manager = checkpoint.make_manager(stage.path("checkpoints"), keep=..., best_metric=...)
  restored = resume.resume(manager, init_tree, VERSION, stage.fingerprints)
  step, tree, progress = ... from `restored` (Progress(**meta["progress"])) or fresh
  compile.precompile(lambda b: step_fn.lower(tree, b).compile(), batches, "buckets")
  with PreemptionWatch(config.train.stop_at) as preemption:
    while not progress.finished:
      if preemption.requested(step): save, break
      tree, m = step_fn(tree, batch); step += 1; ...stage.metrics.write({"kind": "train", ...})
      at an epoch end: metrics = validate(); improved = progress.record_validation(...);
        progress.end_epoch(epoch, epochs); checkpoint.save(..., make_meta(..., progress=asdict))
  stage.close()
"""
