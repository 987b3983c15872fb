"""RPG the way its released PyTorch code runs it: Hugging Face `GPT2Model`, eager, AdamW.

Token layout as there: 0 = padding, digit j's code c = 1 + j*K + c, last row = end token; item
ids are 1-based with 0 = padding, `sids1 [N+1, m]` holds each item's token ids (row 0 unused).
An item enters as the mean of its tokens' rows of `wte`; each digit has a residual SiLU head
(zero-initialised linear); logits are cosines to the digit's token rows over a temperature; the
loss is the digits' mean cross-entropy at labelled positions.

Decoding, as released:
* `exact_top_k`: log-softmax per digit, then a gather over the expanded [B, N, m*K] view and a
  top-k over all items.
* `graph_top_k`: a Python loop over users and propagation steps; each step takes the beams'
  neighbours, `torch.unique`, scores them, keeps the best `num_beams` (the released loop also
  records the visited nodes in Python sets, a statistic only; it is left out here, so this
  loop is if anything faster than the released one).
* `build_graph`: the item-item similarity filled in 1024 x 1024 blocks with a loop over digits,
  then `topk` per row.
"""
from __future__ import annotations

import torch
import transformers
from torch import nn
from torch.nn import functional as F


class ResidualSiLU(nn.Module):
  def __init__(self, d: int):
    super().__init__()
    self.linear = nn.Linear(d, d)
    nn.init.zeros_(self.linear.weight)

  def forward(self, x):
    return x + F.silu(self.linear(x))


class TorchRPG(nn.Module):
  """GPT-2 backbone + one residual head per digit."""

  def __init__(self, num_digits: int, codebook_size: int, d_model: int, num_layers: int,
               num_heads: int, d_ff: int, max_len: int, temperature: float,
               embed_dropout: float = 0.5, attn_dropout: float = 0.5):
    super().__init__()
    self.m, self.k, self.temperature = num_digits, codebook_size, temperature
    cfg = transformers.GPT2Config(
        vocab_size=num_digits * codebook_size + 2, n_positions=max_len, n_embd=d_model,
        n_layer=num_layers, n_head=num_heads, n_inner=d_ff, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=embed_dropout, attn_pdrop=attn_dropout,
        layer_norm_epsilon=1e-12, initializer_range=0.02)
    self.gpt2 = transformers.GPT2Model(cfg)
    self.heads = nn.ModuleList([ResidualSiLU(d_model) for _ in range(num_digits)])

  def states(self, sids1: torch.Tensor, items: torch.Tensor, mask: torch.Tensor):
    """items long[B, T] 1-based (0 pad), mask [B, T] -> [B, T, m, d]."""
    emb = self.gpt2.wte(sids1[items]).mean(dim=-2)
    h = self.gpt2(inputs_embeds=emb, attention_mask=mask).last_hidden_state
    return torch.stack([head(h) for head in self.heads], dim=-2)

  def _unit_tokens(self):
    return F.normalize(self.gpt2.wte.weight[1:-1], dim=-1).view(self.m, self.k, -1)

  def loss(self, sids1, items, mask, labels):
    """labels long[B, T] 1-based next items, 0 = unlabelled."""
    states = self.states(sids1, items, mask)
    keep = labels.view(-1) > 0
    s = F.normalize(states.view(-1, self.m, states.shape[-1])[keep], dim=-1)
    tokens = self._unit_tokens()
    target = sids1[labels.view(-1)[keep]] - 1 - torch.arange(self.m, device=s.device) * self.k
    losses = [F.cross_entropy(s[:, j] @ tokens[j].T / self.temperature, target[:, j])
              for j in range(self.m)]
    return torch.stack(losses).mean()

  def log_probs(self, sids1, items, mask):
    """[B, m*K] per-digit log-softmax at each row's last valid position."""
    states = self.states(sids1, items, mask)
    last = mask.sum(1) - 1
    s = F.normalize(states[torch.arange(states.shape[0], device=states.device), last], dim=-1)
    tokens = self._unit_tokens()
    return torch.cat([F.log_softmax(s[:, j] @ tokens[j].T / self.temperature, dim=-1)
                      for j in range(self.m)], dim=-1)


def exact_top_k(token_logp: torch.Tensor, sids1: torch.Tensor, k: int) -> torch.Tensor:
  """token_logp [B, m*K] -> long[B, k] 1-based item ids."""
  n = sids1.shape[0] - 1
  scores = torch.gather(token_logp.unsqueeze(-2).expand(-1, n, -1), -1,
                        (sids1[1:] - 1).unsqueeze(0).expand(token_logp.shape[0], -1, -1)
                        ).mean(-1)
  return scores.topk(k, dim=-1).indices + 1


def build_graph(token_table: torch.Tensor, sids1: torch.Tensor, num_edges: int,
                chunk: int = 1024) -> torch.Tensor:
  """token_table [m*K, d] (code rows only), sids1 [N+1, m] -> long[N+1, E] adjacency over
  1-based ids (row and column 0 stay at similarity 0)."""
  n1, m = sids1.shape
  k = token_table.shape[0] // m
  unit = F.normalize(token_table.view(m, k, -1), dim=-1)
  sim01 = 0.5 * (torch.bmm(unit, unit.transpose(1, 2)) + 1.0)
  full = torch.zeros((n1, n1), device=token_table.device)
  offsets = torch.arange(m, device=sids1.device) * k + 1
  for i in range(1, n1, chunk):
    rows = sids1[i:i + chunk] - offsets
    for j in range(1, n1, chunk):
      cols = sids1[j:j + chunk] - offsets
      block = torch.zeros((rows.shape[0], cols.shape[0]), device=token_table.device)
      for d in range(m):
        block += sim01[d].index_select(0, rows[:, d]).index_select(1, cols[:, d])
      full[i:i + chunk, j:j + chunk] = block / m
  return torch.topk(full, k=num_edges, dim=-1).indices


def graph_top_k(token_logp: torch.Tensor, sids1: torch.Tensor, adjacency: torch.Tensor,
                num_beams: int, steps: int, k: int, generator: torch.Generator | None = None
                ) -> torch.Tensor:
  """Per-user propagation loop (module docstring) -> long[B, k] 1-based item ids."""
  b = token_logp.shape[0]
  n1 = sids1.shape[0]
  beams = torch.randint(1, n1, (b, num_beams), device=token_logp.device, generator=generator)
  for _ in range(steps):
    neighbours = adjacency[beams].view(b, -1)
    kept = []
    for u in range(b):
      cand = torch.unique(neighbours[u])
      scores = torch.gather(token_logp[u].unsqueeze(0).expand(cand.shape[0], -1), -1,
                            sids1[cand] - 1).mean(-1)
      kept.append(cand[torch.topk(scores, num_beams).indices])
    beams = torch.stack(kept)
  return beams[:, :k]
