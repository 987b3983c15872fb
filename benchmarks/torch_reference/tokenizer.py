"""RQ-VAE (TIGER) and R3-VAE as plain `nn.Module`s, and their usual PyTorch training loop.

Same sizes and losses as `r3vae_jax.tokenizer.models` (see that module for the maths):

* `RQVAE`: MLP encoder -> L levels of nearest-code (L2) quantisation on the residual of
  detached codes, straight-through `z + (z_q - z).detach()` -> MLP decoder.
  Loss = MSE(x, x_hat) + sum_l [MSE(q_l, sg(e_l)) + beta MSE(e_l, sg(q_l))].
* `R3VAE`: reference vector split `e_0 = z - (z.r / ||r||^2) r`, per-level cosine rating
  `w = softmax(cos(e, C) / T)`, soft (`w C`) or hard (top-1 code x its rating) output, the
  residual chain, `alpha r` added back before the decoder; regulariser
  `lambda * (-mean_l softSC(x, w_l) + mean_l softPD(centres_l, usage_l))` on the item vectors.

Training is what PyTorch code of this field does: a `TensorDataset` of the item vectors on the
host, a shuffling `DataLoader` (pinned memory, `drop_last=True`), `.to(device)` per batch,
`AdamW`, `zero_grad / backward / step`. `device_batches` is the faster variant with the vectors
kept on the GPU (one `randperm` per epoch), used to report the best PyTorch number.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class TokenizerOutput(NamedTuple):
  """x_hat [B, D_in], codes int64 [B, L], scalar loss, dict of scalar terms."""
  x_hat: torch.Tensor
  codes: torch.Tensor
  loss: torch.Tensor
  terms: dict[str, torch.Tensor]


def mlp(sizes: Sequence[int]) -> nn.Sequential:
  """Linear layers with ReLU between them (none after the last); Linear i sits at index 2i."""
  layers: list[nn.Module] = []
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
    layers.append(nn.Linear(a, b))
    if i < len(sizes) - 2:
      layers.append(nn.ReLU())
  return nn.Sequential(*layers)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
  """`x / ||x||` over the last axis. `[..., D]`."""
  return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def soft_semantic_cohesion(vectors: torch.Tensor, w: torch.Tensor, eps: float = 1e-9
                           ) -> torch.Tensor:
  """Pair-weighted mean cosine, pairs weighted by `sum_k w_ak w_bk`. `[B, D], [B, K] -> []`."""
  unit = l2_normalize(vectors)
  sums = w.T @ unit
  w2 = w * w
  self_dots = w2.T @ (unit * unit).sum(-1)
  mass = w.sum(0)
  pair_cos = ((sums * sums).sum(-1) - self_dots).sum()
  pair_mass = (mass * mass - w2.sum(0)).sum()
  return pair_cos / (pair_mass + eps)


def soft_group_centres(vectors: torch.Tensor, w: torch.Tensor, eps: float = 1e-9
                       ) -> tuple[torch.Tensor, torch.Tensor]:
  """Centres `W^T v / n_k` `[K, D]` and usage `n_k / B` `[K]`."""
  mass = w.sum(0)
  return (w.T @ vectors) / (mass[:, None] + eps), mass / w.shape[0]


def soft_preference_discrimination(centres: torch.Tensor, usage: torch.Tensor, t: float
                                   ) -> torch.Tensor:
  """`log(sum_{a!=b} u_a u_b exp(-t(1 - cos)) / sum_{a!=b} u_a u_b)`. `[K, D], [K] -> []`."""
  k = centres.shape[0]
  unit = l2_normalize(centres)
  off_diag = 1.0 - torch.eye(k, dtype=centres.dtype, device=centres.device)
  pair_w = usage[:, None] * usage[None, :] * off_diag
  kernel = torch.exp(t * (unit @ unit.T - 1.0))
  return torch.log((pair_w * kernel).sum() / pair_w.sum())


class RQVAE(nn.Module):
  """TIGER's RQ-VAE (module docstring)."""

  def __init__(self, input_dim: int, hidden: Sequence[int], latent_dim: int, levels: int,
               codebook_size: int, beta: float):
    super().__init__()
    self.encoder = mlp([input_dim, *hidden, latent_dim])
    self.decoder = mlp([latent_dim, *reversed(hidden), input_dim])
    self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, latent_dim)
                                  / latent_dim ** 0.5)
    self.beta = beta

  def forward(self, x: torch.Tensor) -> TokenizerOutput:
    z = self.encoder(x)
    residual, total = z, torch.zeros_like(z)
    vq = z.new_zeros(())
    codes = []
    for book in self.codebooks:
      r, b = residual.detach(), book.detach()
      dist = ((r * r).sum(-1, keepdim=True) - 2.0 * r @ b.T + (b * b).sum(-1)).clamp_min(0.0)
      idx = dist.argmin(-1)
      q = book[idx]
      vq = vq + F.mse_loss(q, r) + self.beta * F.mse_loss(residual, q.detach())
      total = total + q.detach()
      residual = residual - q.detach()
      codes.append(idx)
    z_q = z + (total - z).detach()
    x_hat = self.decoder(z_q)
    recon = F.mse_loss(x_hat, x)
    return TokenizerOutput(x_hat, torch.stack(codes, 1), recon + vq, {"recon": recon, "vq": vq})


class R3VAE(nn.Module):
  """R3-VAE (module docstring); arguments as `r3vae_jax.tokenizer.models.R3VAE`."""

  def __init__(self, input_dim: int, hidden: Sequence[int], latent_dim: int, levels: int,
               codebook_size: int, *, reference_vector: bool, rating: str, temperature: float,
               sc_weight: float, pd_weight: float, use_sc: bool, use_pd: bool, pd_t: float):
    super().__init__()
    if rating not in ("soft", "hard"):
      raise ValueError(f"R3VAE: rating must be 'soft' or 'hard', got {rating!r}")
    self.encoder = mlp([input_dim, *hidden, latent_dim])
    self.decoder = mlp([latent_dim, *reversed(hidden), input_dim])
    self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, latent_dim)
                                  / latent_dim ** 0.5)
    self.reference = (nn.Parameter(torch.randn(latent_dim) / latent_dim ** 0.5)
                      if reference_vector else None)
    self.rating, self.temperature = rating, temperature
    self.sc_weight, self.pd_weight = sc_weight, pd_weight
    self.use_sc, self.use_pd, self.pd_t = use_sc, use_pd, pd_t

  def forward(self, x: torch.Tensor) -> TokenizerOutput:
    z = self.encoder(x)
    if self.reference is None:
      anchor, residual = torch.zeros_like(z), z
    else:
      r = self.reference
      alpha = (z @ r) / ((r * r).sum() + 1e-12)
      anchor = alpha[:, None] * r[None, :]
      residual = z - anchor
    total = torch.zeros_like(z)
    codes, weights = [], []
    for book in self.codebooks:
      w = torch.softmax(l2_normalize(residual) @ l2_normalize(book).T / self.temperature, -1)
      idx = w.argmax(-1)
      if self.rating == "soft":
        q = w @ book
      else:
        q = w.gather(1, idx[:, None]) * book[idx]
      total = total + q
      residual = residual - q
      codes.append(idx)
      weights.append(w)
    x_hat = self.decoder(anchor + total)
    recon = F.mse_loss(x_hat, x)
    loss, terms = recon, {"recon": recon}
    if self.use_sc:
      terms["soft_sc"] = sum(soft_semantic_cohesion(x, w) for w in weights) / len(weights)
      loss = loss - self.sc_weight * terms["soft_sc"]
    if self.use_pd:
      terms["soft_pd"] = sum(soft_preference_discrimination(*soft_group_centres(x, w), self.pd_t)
                             for w in weights) / len(weights)
      loss = loss + self.pd_weight * terms["soft_pd"]
    return TokenizerOutput(x_hat, torch.stack(codes, 1), loss, terms)


def build(name: str, section, sid, input_dim: int) -> nn.Module:
  """The torch twin of `r3vae_jax.tokenizer.programs.build_model` from the same config sections.

  Args:
    name: "rqvae" | "r3vae".
    section: `config.rqvae` or `config.r3vae`; sid: `config.sid`.
    input_dim: D_in of the vectors.
  """
  if name == "rqvae":
    return RQVAE(input_dim, tuple(section.hidden), section.latent_dim, sid.levels,
                 sid.codebook_size, section.beta)
  if name == "r3vae":
    twin = dict(encoder="mlp", normalize=False, recon_loss="mse", sc_form="soft_pairs",
                pd_form="soft_centres")
    if any(section[k] != v for k, v in twin.items()) or section.rating not in ("soft", "hard"):
      raise ValueError(f"torch_reference.tokenizer: the R3-VAE twin implements only {twin} with "
                       f"rating soft | hard (configs/default.py R3VAE_SOFT_VARIANT); got "
                       f"{ {k: section[k] for k in (*twin, 'rating')} }")
    return R3VAE(input_dim, tuple(section.hidden), section.latent_dim, sid.levels,
                 sid.codebook_size, reference_vector=section.reference_vector,
                 rating=section.rating, temperature=section.rating_temperature,
                 sc_weight=section.sc_weight, pd_weight=section.pd_weight, use_sc=section.use_sc,
                 use_pd=section.use_pd, pd_t=section.pd_t)
  raise ValueError(f"torch_reference.tokenizer: name must be 'rqvae' or 'r3vae', got {name!r}")


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool = False
                   ) -> torch.optim.Optimizer:
  """AdamW over every parameter (as optax.adamw: decay on all of them)."""
  return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                           fused=fused or None)


def dataloader(vectors: np.ndarray, batch_size: int, seed: int = 0,
               pin_memory: bool = False) -> torch.utils.data.DataLoader:
  """The standard input pipeline: host `TensorDataset`, shuffled, full batches only."""
  dataset = torch.utils.data.TensorDataset(torch.from_numpy(np.asarray(vectors, np.float32)))
  return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                     drop_last=True, pin_memory=pin_memory,
                                     generator=torch.Generator().manual_seed(seed))


def loader_batches(loader: torch.utils.data.DataLoader, device: torch.device
                   ) -> Iterator[torch.Tensor]:
  """Endless `[B, D]` device batches from a DataLoader (a new shuffle every epoch)."""
  while True:
    for (x,) in loader:
      yield x.to(device, non_blocking=True)


def device_batches(vectors: torch.Tensor, batch_size: int, seed: int = 0
                   ) -> Iterator[torch.Tensor]:
  """Endless `[B, D]` batches of a device tensor: a `randperm` per epoch, full batches only."""
  gen = torch.Generator(device=vectors.device).manual_seed(seed)
  n = vectors.shape[0]
  while True:
    perm = torch.randperm(n, device=vectors.device, generator=gen)
    for start in range(0, n - batch_size + 1, batch_size):
      yield vectors[perm[start:start + batch_size]]


def train_step(forward: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor
               ) -> torch.Tensor:
  """One AdamW step on a batch; returns the (device) loss without synchronising.

  `forward` is the model or its `torch.compile`d wrapper (same parameters).
  """
  loss = forward(x).loss
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  optimizer.step()
  return loss.detach()
