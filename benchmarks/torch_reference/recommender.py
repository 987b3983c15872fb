"""The generative recommender the Hugging Face way: `T5ForConditionalGeneration` + AdamW.

The model is a stock T5 from a `T5Config` with our sizes (6+6 layers, d_model 128, 4 heads,
d_kv 64, d_ff 256, ReLU FFN, 32 relative-position buckets, dropout 0.1) and a vocabulary of
every SID token plus the two specials, laid out exactly as `r3vae_jax.recommender.tokens`
(PAD 0, BOS 1 = `decoder_start_token_id`, then each level's codes at its offset). Inputs are
the flattened history tokens (`input_ids`, left-padded with PAD, `attention_mask`), labels the
target item's L+1 tokens; the loss is Hugging Face's cross-entropy over the whole vocabulary.

Structural differences from `r3vae_jax.recommender.model.T5Recommender` (parity is checked on
the comparable quantities, see `weights.py` and tests/test_torch_parity.py):

* ours adds a learned "position within item" embedding to the encoder input; stock T5 has
  none (the parity check feeds `inputs_embeds = shared(ids) + item_position`);
* ours gives step p logits over level p's codes only (tied to those rows of the embedding,
  scaled by d_model^-0.5) and a per-level softmax; T5's tied LM head gives logits over the whole
  vocabulary with the same scaling, so our logits equal T5's on level p's vocabulary slice,
  and our loss equals a per-level cross-entropy computed from T5's logits (`sid_loss`);
* ours scales attention logits by d_kv^-0.5; T5 folds that into the query weights (the weight
  copy multiplies q by d_kv^-0.5).

Training follows the usual loop: AdamW with weight decay on matrices only, linear warm-up then
cosine decay (`transformers.get_cosine_schedule_with_warmup`), gradient clipping at 1.0.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
import transformers
from torch.nn import functional as F

PAD, BOS = 0, 1


def t5_config(rec, vocab_size: int) -> transformers.T5Config:
  """A `T5Config` matching `config.recommender` (`rec`) over `vocab_size` tokens."""
  if rec.ffn != "relu":
    raise ValueError(f"torch_reference.recommender: only the ReLU FFN is mirrored, got "
                     f"config.recommender.ffn={rec.ffn!r}")
  return transformers.T5Config(
      vocab_size=vocab_size, d_model=rec.d_model, d_kv=rec.d_kv, d_ff=rec.d_ff,
      num_layers=rec.num_encoder_layers, num_decoder_layers=rec.num_decoder_layers,
      num_heads=rec.num_heads, relative_attention_num_buckets=rec.relative_buckets,
      relative_attention_max_distance=rec.relative_max_distance, dropout_rate=rec.dropout,
      layer_norm_epsilon=1e-6, feed_forward_proj="relu", is_encoder_decoder=True,
      tie_word_embeddings=True, pad_token_id=PAD, decoder_start_token_id=BOS,
      eos_token_id=None, use_cache=True)


def build(rec, vocab_size: int, seed: int = 0) -> transformers.T5ForConditionalGeneration:
  """A freshly initialised `T5ForConditionalGeneration`."""
  torch.manual_seed(seed)
  return transformers.T5ForConditionalGeneration(t5_config(rec, vocab_size))


def _adamw(model: torch.nn.Module, lr: float | torch.Tensor, weight_decay: float,
           fused: bool = False) -> torch.optim.AdamW:
  decay = [p for p in model.parameters() if p.ndim >= 2]
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                           fused=fused or None)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
  """The multiplier of `transformers.get_cosine_schedule_with_warmup` at `step` (linear
  warm-up, then half a cosine down to 0)."""
  if step < warmup_steps:
    return step / max(1, warmup_steps)
  progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
  return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int,
                   total_steps: int, fused: bool = False
                   ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
  """AdamW (decay on >= 2-D parameters) and the warm-up + cosine schedule."""
  opt = _adamw(model, lr, weight_decay, fused)
  schedule = transformers.get_cosine_schedule_with_warmup(opt, warmup_steps, total_steps)
  return opt, schedule


def train_step(forward: torch.nn.Module, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               schedule: torch.optim.lr_scheduler.LRScheduler, batch: dict[str, torch.Tensor],
               clip_norm: float = 1.0) -> torch.Tensor:
  """One update; returns the device loss without synchronising.

  Args:
    forward: `model` or its `torch.compile`d wrapper.
    model: the module (its parameters are clipped and updated).
    batch: {"input_ids" int64[B, S], "attention_mask" int64[B, S], "labels" int64[B, L+1]}.
  """
  loss = forward(**batch).loss
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
  optimizer.step()
  schedule.step()
  return loss.detach()


def compiled_train_step(model: torch.nn.Module, lr: float, weight_decay: float,
                        warmup_steps: int, total_steps: int, clip_norm: float = 1.0,
                        mode: str | None = None):
  """The whole update under one `torch.compile`: forward with the `labels=` loss, backward,
  gradient clipping, the AdamW step; the same optimizer and schedule as `make_optimizer`.

  Dynamo splits the function where autograd's backward is called: the forward is compiled
  with its backward (AOTAutograd), the clipping and optimizer step form a second graph. The
  learning rate is a tensor filled before each step from `warmup_cosine` (PyTorch's recipe for
  a compiled optimizer under a schedule: no recompilation as it changes; an `LRScheduler`
  object would wrap `optimizer.step` in a function Dynamo does not trace). The decoder's KV
  cache is off (`use_cache=False`), as in any training loop.

  Args:
    mode: `torch.compile` mode (None: default; "reduce-overhead": CUDA graphs).

  Returns:
    step(batch) -> device loss (no synchronisation); batch as in `train_step`.
  """
  device = next(model.parameters()).device
  lr_tensor = torch.tensor(lr, dtype=torch.float32, device=device)
  optimizer = _adamw(model, lr_tensor, weight_decay)
  params = [p for p in model.parameters() if p.requires_grad]
  done = [0]

  @torch.compile(mode=mode)
  def update(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()

  def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    lr_tensor.fill_(lr * warmup_cosine(done[0], warmup_steps, total_steps))
    if mode == "reduce-overhead":
      torch.compiler.cudagraph_mark_step_begin()
    loss = update(batch)
    done[0] += 1
    return loss

  return step


def example_tensors(history: np.ndarray, target: np.ndarray, item_tokens: np.ndarray
                    ) -> dict[str, torch.Tensor]:
  """Host tensors of a whole example set.

  Args:
    history: int[E, H] item ids, left-padded with -1.
    target: int[E] item ids.
    item_tokens: int32[N+1, L+1] vocabulary tokens per item, last row PAD (item id -1).

  Returns:
    {"input_ids": int64[E, H*(L+1)], "attention_mask": int64[E, H*(L+1)],
     "labels": int64[E, L+1]}.
  """
  ids = item_tokens[history].reshape(history.shape[0], -1)
  return {"input_ids": torch.from_numpy(ids.astype(np.int64)),
          "attention_mask": torch.from_numpy((ids != PAD).astype(np.int64)),
          "labels": torch.from_numpy(item_tokens[target].astype(np.int64))}


class ExampleDataset(torch.utils.data.Dataset):
  """Map-style dataset over `example_tensors` (what a DataLoader with default collation reads)."""

  def __init__(self, tensors: dict[str, torch.Tensor]):
    self.tensors = tensors

  def __len__(self) -> int:
    return self.tensors["labels"].shape[0]

  def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
    return {k: v[i] for k, v in self.tensors.items()}


def dataloader(tensors: dict[str, torch.Tensor], batch_size: int, seed: int = 0,
               pin_memory: bool = False) -> torch.utils.data.DataLoader:
  """The standard input pipeline: shuffled, default collation, full batches only."""
  return torch.utils.data.DataLoader(ExampleDataset(tensors), batch_size=batch_size,
                                     shuffle=True, drop_last=True, pin_memory=pin_memory,
                                     generator=torch.Generator().manual_seed(seed))


def loader_batches(loader: torch.utils.data.DataLoader, device: torch.device
                   ) -> Iterator[dict[str, torch.Tensor]]:
  """Endless device batches from a DataLoader (a new shuffle every epoch)."""
  while True:
    for batch in loader:
      yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def device_batches(tensors: dict[str, torch.Tensor], batch_size: int, seed: int = 0
                   ) -> Iterator[dict[str, torch.Tensor]]:
  """Endless batches of device-resident example tensors: a `randperm` per epoch."""
  labels = tensors["labels"]
  gen = torch.Generator(device=labels.device).manual_seed(seed)
  n = labels.shape[0]
  while True:
    perm = torch.randperm(n, device=labels.device, generator=gen)
    for start in range(0, n - batch_size + 1, batch_size):
      rows = perm[start:start + batch_size]
      yield {k: v[rows] for k, v in tensors.items()}


def sid_loss(logits: torch.Tensor, labels: torch.Tensor, offsets: list[int],
             level_sizes: list[int]) -> torch.Tensor:
  """Our loss from T5's full-vocabulary logits: per-level softmax over that level's codes.

  Args:
    logits: float[B, L+1, vocab]; labels: int64[B, L+1] vocabulary tokens.
    offsets, level_sizes: the token layout (`TokenLayout.offsets`, `.level_sizes`).

  Returns:
    Scalar mean over examples and levels (equals `r3vae_jax.recommender.loss.sid_loss`).
  """
  per_level = []
  for p, (start, k) in enumerate(zip(offsets, level_sizes)):
    logp = F.log_softmax(logits[:, p, start:start + k].float(), dim=-1)
    per_level.append(-logp.gather(1, (labels[:, p] - start)[:, None])[:, 0])
  return torch.stack(per_level, 1).mean()
