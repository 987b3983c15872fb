"""Early stopping and best-checkpoint selection on a validation metric (higher is better)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Progress:
  """What a train loop has decided so far; saved in every checkpoint's meta (`asdict`).

  Attributes:
    validated_epochs: epochs whose end-of-epoch bookkeeping (validation, checkpoint) is done.
    best: the best validation value of the selection metric so far (-1 before any).
    best_epoch, best_step: where it was reached (-1 before any).
    best_metrics: every validation metric of that epoch.
    bad_validations: validations in a row without improvement.
    finished: "" while training; "early_stop" | "epochs" once done.
  """
  validated_epochs: int = 0
  best: float = -1.0
  best_epoch: int = -1
  best_step: int = -1
  best_metrics: dict = dataclasses.field(default_factory=dict)
  bad_validations: int = 0
  finished: str = ""

  def record_validation(self, metrics: dict[str, float] | None, metric: str, epoch: int,
                        step: int, patience: int) -> bool:
    """Counts one validation; returns whether it is the new best.

    Args:
      metrics: the validation's metrics, or None for a validation that could not be scored
        (it counts as one without improvement).
      metric: the key of `metrics` to select on (`train.select_metric`).
      epoch, step: where the validation ran.
      patience: validations in a row without improvement after which `finished` becomes
        "early_stop".
    """
    improved = metrics is not None and metrics[metric] > self.best
    if improved:
      self.best, self.best_epoch, self.best_step = metrics[metric], epoch, step
      self.best_metrics, self.bad_validations = dict(metrics), 0
    else:
      self.bad_validations += 1
    if self.bad_validations >= patience:
      self.finished = "early_stop"
    return improved

  def end_epoch(self, epoch: int, epochs: int) -> None:
    """Marks `epoch` (1-based) done; `finished` becomes "epochs" at the last one."""
    self.validated_epochs = epoch
    if epoch >= epochs:
      self.finished = self.finished or "epochs"

  def extend_to(self, epochs: int) -> None:
    """A run relaunched with more epochs than it finished trains on."""
    if self.finished == "epochs" and self.validated_epochs < epochs:
      self.finished = ""
