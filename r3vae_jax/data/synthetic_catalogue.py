"""An industrial-size synthetic catalogue, written as the files a real dataset comes in.

  write_catalogue(out_dir, CatalogueSpec(num_items=1_000_000, num_users=2_000_000, dim=768))
    -> out_dir/sequences.txt   ICLRec `uid i1 i2 ...` lines (1-based ids, chronological)
       out_dir/vectors.npy     float32[num_items, dim], row i = item id i + 1 of the file
       out_dir/catalogue.json  the spec and the statistics of what was written

so that the normal stages read it: `data.format=iclrec`, `data.path=.../sequences.txt`,
`data.min_core=0`, `vectors.source=npy`, `vectors.path=.../vectors.npy`.

The model: items belong to `num_topics` topics and, inside a topic, to one of `subtopics`
sub-topics; an item's vector is `topic centre + sub-topic offset + noise`, L2-normalised (text
encoders' vectors are unit-norm too). Topics have Zipf popularity (`topic_skew`) and items a Zipf
popularity inside their topic (`item_skew`, rank by a random order). A user has a home topic
drawn by topic popularity; each interaction stays in it or, with probability `drift`, comes
from a topic drawn by popularity; the item is then drawn by its popularity in that topic. History
lengths are `min_len + floor(scale * Lomax(tail))`, capped at `max_len`: most users have a few
items, some have many (Lomax shape 1.5 has a heavy tail). Every item appears at least once (an
item nobody touched takes a random slot of an item seen before), so the file's ids are exactly 1..num_items.

Everything is vectorised numpy over chunks (vectors in parallel threads, one seeded generator
per chunk, so the output does not depend on the thread count); text is formatted with digit
arithmetic, never a Python loop over interactions.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import time

import numpy as np

_VECTOR_CHUNK = 65536     # rows generated per task
_USER_CHUNK = 262144      # users formatted per write


@dataclasses.dataclass(frozen=True)
class CatalogueSpec:
  """Sizes and shape of the synthetic catalogue (module docstring)."""
  num_items: int = 1_000_000
  num_users: int = 2_000_000
  dim: int = 768
  num_topics: int = 2048
  subtopics: int = 16
  topic_skew: float = 0.8
  item_skew: float = 1.0
  drift: float = 0.2
  min_len: int = 5
  max_len: int = 50
  tail: float = 1.5
  scale: float = 1.0
  subtopic_weight: float = 0.6
  noise_weight: float = 0.8
  seed: int = 0


def check_spec(spec: CatalogueSpec) -> None:
  """Raises ValueError naming the first field out of range."""
  if spec.num_items < 1 or spec.num_users < 1 or spec.dim < 1:
    raise ValueError(f"synthetic catalogue: num_items, num_users, dim must be >= 1, got "
                     f"{spec.num_items}, {spec.num_users}, {spec.dim}")
  if not 1 <= spec.num_topics <= spec.num_items or spec.subtopics < 1:
    raise ValueError(f"synthetic catalogue: need 1 <= num_topics <= num_items and subtopics >= 1,"
                     f" got num_topics={spec.num_topics}, subtopics={spec.subtopics}")
  if not 3 <= spec.min_len <= spec.max_len:
    raise ValueError(f"synthetic catalogue: need 3 <= min_len <= max_len, got {spec.min_len}, "
                     f"{spec.max_len}")
  if spec.num_users * spec.min_len < spec.num_items:
    raise ValueError(f"synthetic catalogue: {spec.num_users} users x min_len {spec.min_len} "
                     f"interactions cannot cover num_items={spec.num_items}")
  if not 0.0 <= spec.drift <= 1.0 or spec.tail <= 0 or spec.scale < 0:
    raise ValueError(f"synthetic catalogue: need drift in [0, 1], tail > 0, scale >= 0; got "
                     f"{spec.drift}, {spec.tail}, {spec.scale}")


def _zipf_cdf(n: int, skew: float) -> np.ndarray:
  w = (np.arange(n) + 1.0) ** -skew
  return np.cumsum(w) / w.sum()


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Item -> topic / sub-topic and the per-topic popularity order."""
  topic: np.ndarray         # int32[N] topic of each item (0-based item index)
  subtopic: np.ndarray      # int32[N] sub-topic inside the topic
  members: np.ndarray       # int64[N] items grouped by topic, most popular first in each
  start: np.ndarray         # int64[T + 1] members[start[t]:start[t+1]] are topic t's items


def _layout(spec: CatalogueSpec, rng: np.random.Generator) -> _Layout:
  n, t = spec.num_items, spec.num_topics
  topic = rng.permutation(np.arange(n) % t).astype(np.int32)
  subtopic = rng.integers(0, spec.subtopics, n).astype(np.int32)
  # Sorting by (topic, random key) puts each topic's items together in a random popularity order.
  members = np.lexsort((rng.random(n), topic))
  start = np.searchsorted(topic[members], np.arange(t + 1))
  return _Layout(topic, subtopic, members, start)


def _vector_rows(spec: CatalogueSpec, layout: _Layout, centres: np.ndarray, offsets: np.ndarray,
                 lo: int, hi: int, seed: np.random.SeedSequence) -> np.ndarray:
  """float32[hi - lo, dim] unit vectors of items lo..hi-1."""
  rng = np.random.default_rng(seed)
  topic, sub = layout.topic[lo:hi], layout.subtopic[lo:hi]
  x = rng.standard_normal((hi - lo, spec.dim), dtype=np.float32)
  x *= spec.noise_weight / np.sqrt(spec.dim, dtype=np.float32)
  x += centres[topic]
  x += spec.subtopic_weight * offsets[topic * spec.subtopics + sub]
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  return x


def write_vectors(path: str, spec: CatalogueSpec, layout: _Layout, workers: int) -> None:
  """Writes `path` (.npy float32[N, dim]) chunk by chunk, `workers` threads."""
  rng = np.random.default_rng([spec.seed, 1])
  unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
  centres = unit(rng.standard_normal((spec.num_topics, spec.dim), dtype=np.float32))
  offsets = unit(rng.standard_normal((spec.num_topics * spec.subtopics, spec.dim),
                                     dtype=np.float32))
  out = np.lib.format.open_memmap(path + ".tmp", mode="w+", dtype=np.float32,
                                  shape=(spec.num_items, spec.dim))
  bounds = list(range(0, spec.num_items, _VECTOR_CHUNK))
  seeds = np.random.SeedSequence([spec.seed, 2]).spawn(len(bounds))

  def fill(i):
    lo = bounds[i]
    hi = min(lo + _VECTOR_CHUNK, spec.num_items)
    out[lo:hi] = _vector_rows(spec, layout, centres, offsets, lo, hi, seeds[i])

  with concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool:
    list(pool.map(fill, range(len(bounds))))
  out.flush()
  del out
  os.replace(path + ".tmp", path)


def history_lengths(spec: CatalogueSpec, rng: np.random.Generator) -> np.ndarray:
  """int64[U] history lengths: min_len + floor(scale * Lomax(tail)), at most max_len."""
  extra = np.floor(spec.scale * rng.pareto(spec.tail, spec.num_users))
  return np.minimum(spec.min_len + extra, spec.max_len).astype(np.int64)


def interactions(spec: CatalogueSpec, layout: _Layout, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(lengths int64[U], items int64[sum(lengths)]: 0-based item indices, users in order)."""
  lengths = history_lengths(spec, rng)
  total = int(lengths.sum())
  topic_cdf = _zipf_cdf(spec.num_topics, spec.topic_skew)
  draw_topic = lambda size: np.minimum(np.searchsorted(topic_cdf, rng.random(size)),
                                       spec.num_topics - 1)
  home = draw_topic(spec.num_users)
  topic = np.repeat(home, lengths)
  moved = rng.random(total) < spec.drift
  topic[moved] = draw_topic(int(moved.sum()))
  size = layout.start[topic + 1] - layout.start[topic]
  longest = int(np.max(layout.start[1:] - layout.start[:-1]))
  rank = np.searchsorted(_zipf_cdf(longest, spec.item_skew), rng.random(total))
  items = layout.members[layout.start[topic] + rank % size]
  unseen = np.flatnonzero(np.bincount(items, minlength=spec.num_items) == 0)
  if unseen.size:  # every item appears once at least: they take repeated items' later slots
    spare = np.ones(total, bool)
    spare[np.unique(items, return_index=True)[1]] = False
    items[rng.choice(np.flatnonzero(spare), unseen.size, replace=False)] = unseen
  return lengths, items


def format_lines(uids: np.ndarray, lengths: np.ndarray, items: np.ndarray) -> bytes:
  """`uid i1 i2 ...\\n` lines as bytes (non-negative ints), by digit arithmetic.

  Args:
    uids: int[u] first token of each line.
    lengths: int[u] items per line.
    items: int[sum(lengths)] the items, line after line.
  """
  count = lengths + 1
  tokens = np.empty(int(count.sum()), np.int64)
  first = np.cumsum(count) - count
  is_uid = np.zeros(tokens.size, bool)
  is_uid[first] = True
  tokens[is_uid] = uids
  tokens[~is_uid] = items
  digits = np.ones(tokens.size, np.int64)
  for power in range(1, 19):
    digits += tokens >= 10 ** power
  end = np.cumsum(digits + 1)
  begin = end - digits - 1
  buf = np.full(int(end[-1]), ord(" "), np.uint8)
  buf[end[first[1:] - 1] - 1] = ord("\n")
  buf[-1] = ord("\n")
  value = tokens.copy()
  for k in range(int(digits.max())):
    live = np.flatnonzero(digits > k)
    buf[begin[live] + digits[live] - 1 - k] = ord("0") + value[live] % 10
    value[live] //= 10
  return buf.tobytes()


def write_sequences(path: str, lengths: np.ndarray, items: np.ndarray) -> None:
  """Writes ICLRec lines (`uid` 1-based, item ids 1-based) in chunks of users."""
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  with open(path + ".tmp", "wb") as f:
    for lo in range(0, lengths.size, _USER_CHUNK):
      hi = min(lo + _USER_CHUNK, lengths.size)
      f.write(format_lines(np.arange(lo + 1, hi + 1), lengths[lo:hi],
                           items[offsets[lo]:offsets[hi]] + 1))
  os.replace(path + ".tmp", path)


def write_catalogue(out_dir: str, spec: CatalogueSpec, workers: int | None = None) -> dict:
  """Writes sequences.txt, vectors.npy and catalogue.json into `out_dir`; returns the JSON.

  The JSON holds the spec, the sizes written (users, items, interactions, mean and max history
  length) and the seconds each file took.
  """
  check_spec(spec)
  os.makedirs(out_dir, exist_ok=True)
  workers = workers or os.cpu_count() or 1
  rng = np.random.default_rng([spec.seed, 0])
  began = time.time()
  layout = _layout(spec, rng)
  lengths, items = interactions(spec, layout, rng)
  write_sequences(os.path.join(out_dir, "sequences.txt"), lengths, items)
  sequences_s = time.time() - began
  began = time.time()
  write_vectors(os.path.join(out_dir, "vectors.npy"), spec, layout, workers)
  vectors_s = time.time() - began
  summary = {"spec": dataclasses.asdict(spec), "users": int(lengths.size),
             "items": int(spec.num_items), "interactions": int(lengths.sum()),
             "avg_len": float(lengths.mean()), "max_len": int(lengths.max()),
             "sequences_s": sequences_s, "vectors_s": vectors_s,
             "files": {"sequences": "sequences.txt", "vectors": "vectors.npy"}}
  with open(os.path.join(out_dir, "catalogue.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return summary
