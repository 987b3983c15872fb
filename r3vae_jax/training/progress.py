"""The progress line of a trainer: a bar, the position, measurements and the time left.

  line("recommender", 113, 452, "step", {"loss": 3.57, "acc": 0.41}, rate="668 ex/s", eta_s=130)
  -> "recommender [#####...............]  25% step 113/452 loss 3.5700 acc 0.4100 668 ex/s ETA 2m10s"
"""
from __future__ import annotations

import math
import numbers

BAR_WIDTH = 20


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
  """`[####....]` filled in proportion to done / total."""
  filled = min(width, max(0, int(width * done / total))) if total > 0 else width
  return "[" + "#" * filled + "." * (width - filled) + "]"


def duration(seconds: float) -> str:
  """`45s`, `2m10s`, `1h05m`; `?` when unknown."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _value(v, whole: bool = False) -> str:
  """4 decimals (or 4 significant digits when tiny or huge); with `whole`, whole numbers as ints."""
  if isinstance(v, bool) or not isinstance(v, numbers.Real):
    return str(v)
  if isinstance(v, numbers.Integral) or (whole and float(v).is_integer()):
    return f"{int(v)}"
  return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}"


def format_metrics(metrics: dict) -> str:
  """`k=v` pairs sorted by name: whole numbers (users, step) as ints, others with 4 decimals."""
  return " ".join(f"{k}={_value(v, whole=True)}" for k, v in sorted(metrics.items())
                  if isinstance(v, numbers.Real))


def line(name: str, done: int, total: int, unit: str, measurements: dict,
         rate: str = "", eta_s: float | None = None) -> str:
  """One progress line (see the module docstring)."""
  pct = 100 * done / total if total > 0 else 100.0
  parts = [f"{name} {bar(done, total)} {pct:3.0f}% {unit} {done}/{total}"]
  parts += [f"{k} {_value(v)}" for k, v in measurements.items()]
  if rate:
    parts.append(rate)
  if done < total and eta_s is not None:
    parts.append(f"ETA {duration(eta_s)}")
  return " ".join(parts)
