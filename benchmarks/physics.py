"""The physical view of a training step: FLOPs and bytes, achieved rates, and what bounds it.

Analytic counts (the same for ours and the PyTorch reference; backward = 2 x forward for every
matrix product that needs gradients) and XLA's own `compiled.cost_analysis()` for ours. The
verdict compares the measured step time with the two floors `flops / peak` and
`bytes / bandwidth` (METHOD.md's two numbers).
"""
from __future__ import annotations

from typing import Any, Sequence

OVERHEAD_FACTOR = 4.0   # measured > 4 x the larger floor: neither compute nor memory bounds it


def xla_cost(compiled: Any) -> dict[str, float]:
  """{"flops", "bytes"} of a compiled XLA executable (`jit(f).lower(...).compile()`).

  `cost_analysis()` is a dict in current JAX and a one-element list in older versions; a while
  loop's body is counted once, so call this on a single step, not a scan over steps.
  """
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return {"flops": float(cost.get("flops", 0.0)),
          "bytes": float(cost.get("bytes accessed", 0.0))}


def _mlp_macs(sizes: Sequence[int]) -> int:
  return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def tokenizer_step(name: str, batch: int, input_dim: int, hidden: Sequence[int], latent: int,
                   levels: int, codes: int, rating: str = "soft", use_sc: bool = True,
                   use_pd: bool = True) -> dict[str, float]:
  """Analytic FLOPs and minimum bytes of one RQ-VAE / R3-VAE training step (float32).

  FLOPs: encoder + decoder MLP (forward 2 MACs, training x3); per level the code scores
  `[B, K] = e C^T` (RQ-VAE: forward only, under stop-gradient; R3-VAE: x3), R3-VAE's soft
  output `w C` (x3) and, on the item vectors, soft SC (`W^T v`) and PD (`W^T v`, `P P^T`) (x2:
  the vectors need no gradient).
  Bytes: the batch read once; each parameter read, its gradient written and read, two Adam
  moments read and written, the parameter written (32 B); every activation written once and
  read once by the backward pass.
  """
  sizes = [input_dim, *hidden, latent]
  mlp = 2 * _mlp_macs(sizes)                     # encoder + mirrored decoder, MACs per row
  flops = 3 * 2 * batch * mlp
  if name == "rqvae":
    flops += 2 * batch * codes * latent * levels
  else:
    flops += 3 * 2 * batch * codes * latent * (2 if rating == "soft" else 1) * levels
    on_vectors = 0            # W^T v products: the vectors need no gradient (forward + 1 = x2)
    if use_sc:
      on_vectors += 2 * batch * codes * input_dim
    if use_pd:
      on_vectors += 2 * batch * codes * input_dim
      flops += 3 * 2 * codes * codes * input_dim * levels       # P P^T of the centres (x3)
    flops += 2 * on_vectors * levels
  params = (2 * _mlp_macs(sizes) + 2 * sum(hidden) + latent + input_dim
            + levels * codes * latent + latent)
  activations = batch * (2 * 2 * sum(sizes[1:]) + 2 * levels * codes + input_dim)
  nbytes = 4 * (batch * input_dim + 8 * params + 2 * activations)
  return {"flops": float(flops), "bytes": float(nbytes), "params": float(params)}


def t5_step(batch: int, enc_len: int, dec_len: int, d_model: int, heads: int, d_kv: int,
            d_ff: int, enc_layers: int, dec_layers: int, head_width: int,
            params: int) -> dict[str, float]:
  """Analytic FLOPs and minimum bytes of one T5 encoder-decoder training step (float32).

  Per example: encoder layers (QKV/O projections, the two attention products, ReLU FFN),
  decoder layers (self attention, cross attention whose keys/values span the encoder
  sequence, FFN), the output head over `head_width` logits per step (ours: one level's K codes;
  Hugging Face: the whole vocabulary). Training = 3 x forward. Bytes: parameters and Adam
  state (32 B per parameter) plus every activation written once and read once, counting the
  `[h, q, k]` attention logits and probabilities.
  """
  inner = heads * d_kv
  s, t = enc_len, dec_len
  enc = s * d_model * 3 * inner + 2 * s * s * inner + s * inner * d_model + 2 * s * d_model * d_ff
  dec = (t * d_model * 3 * inner + 2 * t * t * inner + t * inner * d_model          # self
         + t * d_model * inner + 2 * s * d_model * inner + 2 * t * s * inner         # cross
         + t * inner * d_model + 2 * t * d_model * d_ff)                             # out, FFN
  macs = enc_layers * enc + dec_layers * dec + t * d_model * head_width
  flops = 3 * 2 * batch * macs
  enc_acts = s * (6 * d_model + 4 * inner + 2 * d_ff) + 2 * heads * s * s
  dec_acts = (t * (10 * d_model + 8 * inner + 2 * d_ff) + 2 * s * inner
              + 2 * heads * (t * t + t * s))
  activations = batch * (enc_layers * enc_acts + dec_layers * dec_acts + t * head_width)
  nbytes = 4 * (8 * params + 2 * activations)
  return {"flops": float(flops), "bytes": float(nbytes), "params": float(params)}


def achieved(flops: float, nbytes: float, seconds: float, peaks: dict[str, float] | None,
             compute_peak: str) -> dict[str, Any]:
  """Achieved FLOP/s and bytes/s of one step, as fractions of the peaks, and a verdict.

  Args:
    flops, nbytes: per step.
    seconds: measured seconds per step.
    peaks: `harness.PEAKS` entry (None: fractions and verdict left out).
    compute_peak: which FLOP peak bounds this dtype ("tf32" for float32 matmuls on the
      tensor cores, "bf16").
  """
  out: dict[str, Any] = {"tflop_per_s": flops / seconds / 1e12,
                         "hbm_tb_per_s": nbytes / seconds / 1e12}
  if not peaks:
    return out
  compute_floor = flops / peaks[compute_peak]
  memory_floor = nbytes / peaks["hbm"]
  out.update({
      f"frac_peak_{compute_peak}": flops / seconds / peaks[compute_peak],
      "frac_peak_bf16": flops / seconds / peaks["bf16"],
      "frac_peak_hbm": nbytes / seconds / peaks["hbm"],
      "compute_floor_s": compute_floor, "memory_floor_s": memory_floor,
  })
  floor = max(compute_floor, memory_floor)
  if seconds > OVERHEAD_FACTOR * floor:
    out["verdict"] = (f"overhead/latency-bound: {seconds / floor:.0f}x the larger floor "
                      f"({'compute' if compute_floor >= memory_floor else 'memory'}); many "
                      f"small kernels and launches, not FLOPs or HBM bytes")
  elif compute_floor >= memory_floor:
    out["verdict"] = f"compute-bound ({seconds / compute_floor:.1f}x the compute floor)"
  else:
    out["verdict"] = f"memory-bound ({seconds / memory_floor:.1f}x the HBM floor)"
  return out


def attach(entry: dict[str, Any], peaks: dict[str, float] | None) -> None:
  """Adds `physical` (analytic counts) and, for ours, `physical_xla` to every timed variant.

  `entry["analytic_per_step"]` holds {"ours": counts, "torch": counts} (`tokenizer_step` /
  `t5_step`); `entry["compute_peak"]` names the FLOP peak of the run's matmul dtype.
  """
  analytic, compute_peak = entry["analytic_per_step"], entry["compute_peak"]
  for name, result in entry.items():
    if not isinstance(result, dict) or "seconds_per_step" not in result:
      continue
    counts = analytic["ours" if name.startswith("ours") else "torch"]
    seconds = result["seconds_per_step"]
    result["physical"] = achieved(counts["flops"], counts["bytes"], seconds, peaks,
                                  compute_peak)
    if "xla_flops_per_step" in result:
      result["physical_xla"] = achieved(result["xla_flops_per_step"],
                                        result["xla_bytes_per_step"], seconds, peaks,
                                        compute_peak)
