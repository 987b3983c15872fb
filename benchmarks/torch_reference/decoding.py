"""Constrained beam search the Hugging Face way: `generate(prefix_allowed_tokens_fn=...)`.

The trie is a Python dict from every SID-token prefix (a tuple, without the decoder start
token) to the sorted list of tokens that may follow it, built once from the catalogue; the
callback looks the beam's prefix up on every beam and every step, and `generate` masks the
other tokens to -inf. As in `transformers`, the beam scores are the log-softmax over the whole
vocabulary with the invalid tokens masked afterwards (ours renormalise over the valid children:
"masked log-softmax"), so the two searches can rank the same candidates differently; both return
only valid SIDs.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np
import torch


def prefix_dict(item_tokens: np.ndarray) -> dict[tuple[int, ...], list[int]]:
  """Every prefix of every item's token row -> the sorted tokens that may follow it.

  Args:
    item_tokens: int[N, L'] vocabulary tokens of each item's SID (no PAD row).

  Returns:
    dict with keys of length 0..L'-1.
  """
  allowed: dict[tuple[int, ...], set[int]] = defaultdict(set)
  for row in np.asarray(item_tokens).tolist():
    for p in range(len(row)):
      allowed[tuple(row[:p])].add(row[p])
  return {k: sorted(v) for k, v in allowed.items()}


def item_lookup(item_tokens: np.ndarray) -> dict[tuple[int, ...], int]:
  """Full token row -> item id."""
  return {tuple(row): i for i, row in enumerate(np.asarray(item_tokens).tolist())}


def allowed_tokens_fn(prefixes: dict[tuple[int, ...], list[int]]
                      ) -> Callable[[int, torch.Tensor], list[int]]:
  """The `prefix_allowed_tokens_fn` of `generate`: drops the decoder start token, looks up."""
  def fn(batch_id: int, sent: torch.Tensor) -> list[int]:
    del batch_id
    return prefixes.get(tuple(sent.tolist()[1:]), [])
  return fn


@torch.no_grad()
def recommend(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              prefixes: dict[tuple[int, ...], list[int]], lookup: dict[tuple[int, ...], int],
              num_beams: int, sid_length: int) -> np.ndarray:
  """Top `num_beams` items per user by constrained beam search.

  Args:
    model: a `T5ForConditionalGeneration` (or one with a compiled forward), in eval mode.
    input_ids, attention_mask: int64[B, S] encoder inputs on the model's device.
    prefixes: `prefix_dict` of the catalogue; lookup: `item_lookup` of it.
    num_beams: beams per user (and items returned).
    sid_length: L', tokens per item.

  Returns:
    int64[B, num_beams] item ids, best first.
  """
  out = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                       num_return_sequences=num_beams, max_new_tokens=sid_length,
                       min_new_tokens=sid_length, do_sample=False,
                       prefix_allowed_tokens_fn=allowed_tokens_fn(prefixes))
  rows = out[:, 1:1 + sid_length].cpu().numpy().tolist()
  items = np.array([lookup.get(tuple(r), -1) for r in rows], np.int64)
  return items.reshape(input_ids.shape[0], num_beams)
