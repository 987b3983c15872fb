"""Item-text encoder throughput (all-MiniLM-L6-v2 in our Flax BERT) and the cached item vectors.

CPU, real weights and text (writes the vectors that the GPU runs load with vectors.source=npy):
  python -m benchmarks.text_encoder_bench --dataset=beauty --out_vectors=/tmp/beauty_minilm.npy
  python -m benchmarks.text_encoder_bench --dataset=lastfm --out_vectors=/tmp/lastfm_minilm.npy
GPU (the 83 MB weights do not travel there): same shapes with random weights and token ids whose
lengths follow a histogram measured on Beauty (--lengths, one count per token length):
  python -m benchmarks.text_encoder_bench --random_weights --num_texts=100000 --batch_size=1024
Throughput does not depend on the weight values; random mode also times a second, fully
compiled pass (steady_items_per_second). Prints one JSON line (and writes it to --out).
"""
import json
import os
import time

from absl import app
from absl import flags
import jax
import numpy as np

from r3vae_jax import io
from r3vae_jax.configs import beauty, lastfm
from r3vae_jax.data import pipeline
from r3vae_jax.data.vectors import bert, text_encoder

_CONFIGS = {"beauty": beauty, "lastfm": lastfm}   # the dataset configs, so ids match the runs

# MiniLM-L6-H384 shapes (config.json of all-MiniLM-L6-v2)
_MINILM = dict(layers=6, heads=12, hidden=384, ffn=1536, vocab=30522, positions=512)

flags.DEFINE_enum("dataset", "beauty", list(_CONFIGS), "real item text (paths: configs/paths.py)")
flags.DEFINE_string("out_vectors", "", "write the vectors here (.npy)")
flags.DEFINE_bool("random_weights", False, "random weights and token ids (no files needed)")
flags.DEFINE_integer("num_texts", 50000, "random_weights: number of texts")
flags.DEFINE_string("lengths", "", "random_weights: JSON {token_length: count}; '' = Beauty's")
flags.DEFINE_integer("batch_size", 256, "texts per jitted call")
flags.DEFINE_integer("max_tokens", 128, "truncation length")
flags.DEFINE_string("out", "", "also write the JSON line here")
FLAGS = flags.FLAGS

# Token-length histogram of the Beauty item texts (title. Brand. Categories.), 10-token bins.
_BEAUTY_LENGTHS = {16: 54, 26: 1633, 36: 6086, 46: 3382, 56: 551, 66: 110, 76: 78, 86: 59, 96: 44,
                   106: 31, 116: 26, 126: 47}


def _random_model(seed: int) -> bert.SentenceBert:
  m = _MINILM
  rng = np.random.default_rng(seed)
  def w(*shape):
    return (0.02 * rng.standard_normal(shape)).astype(np.float32)
  h, f, n = m["hidden"], m["ffn"], m["layers"]
  params = {"word": w(m["vocab"], h), "position": w(m["positions"], h), "token_type": w(2, h),
            "emb_ln_g": np.ones(h, np.float32), "emb_ln_b": np.zeros(h, np.float32)}
  for name, shape in {"q": (h, h), "k": (h, h), "v": (h, h), "o": (h, h), "ff1": (h, f),
                      "ff2": (f, h)}.items():
    params[name + "_w"] = w(n, *shape)
    params[name + "_b"] = np.zeros((n, shape[1]), np.float32)
  for name in ("ln1", "ln2"):
    params[name + "_g"] = np.ones((n, h), np.float32)
    params[name + "_b"] = np.zeros((n, h), np.float32)
  return bert.SentenceBert(params, bert.BertConfig(n, m["heads"], h))


def _random_tokens(num: int, histogram: dict, seed: int) -> list:
  rng = np.random.default_rng(seed)
  lengths = np.array([int(k) for k in histogram])
  probs = np.array(list(histogram.values()), float)
  picked = rng.choice(lengths, size=num, p=probs / probs.sum())
  return [rng.integers(1000, _MINILM["vocab"], size=int(l)).astype(np.int32) for l in picked]


def main(argv):
  del argv
  if FLAGS.random_weights:
    model = _random_model(0)
    hist = json.loads(FLAGS.lengths) if FLAGS.lengths else _BEAUTY_LENGTHS
    tokens, what = _random_tokens(FLAGS.num_texts, hist, 1), "random weights, Beauty-like lengths"
  else:
    inter = pipeline.prepare(_CONFIGS[FLAGS.dataset].get_config())
    model, tok = text_encoder.load_encoder()
    t0 = time.perf_counter()
    tokens = text_encoder.tokenize(tok, inter.item_text, FLAGS.max_tokens)
    tokenize_s = time.perf_counter() - t0
    what = f"{FLAGS.dataset} item text"
  t0, c0 = time.perf_counter(), time.process_time()
  vecs = text_encoder.embed_tokens(model, tokens, FLAGS.batch_size, FLAGS.max_tokens)
  embed_s, embed_cpu_s = time.perf_counter() - t0, time.process_time() - c0
  result = {
      "bench": "text_encoder", "encoder": "all-MiniLM-L6-v2 (Flax BERT)", "dim": int(vecs.shape[1]),
      "texts": what, "num_texts": len(tokens), "backend": jax.default_backend(),
      "device": str(jax.devices()[0].device_kind), "batch_size": FLAGS.batch_size,
      "mean_tokens": float(np.mean([len(t) for t in tokens])),
      "embed_seconds_incl_compile": round(embed_s, 2),
      "items_per_second": round(len(tokens) / embed_s, 1),
      # on a shared CPU machine wall time depends on others' load: CPU-seconds are steadier
      "cpu_seconds": round(embed_cpu_s, 1), "cpus": os.cpu_count(),
      "load_average_1min": round(os.getloadavg()[0], 2),
  }
  if FLAGS.random_weights:   # second pass: every bucket already compiled
    t0 = time.perf_counter()
    text_encoder.embed_tokens(model, tokens, FLAGS.batch_size, FLAGS.max_tokens, progress=False)
    result["steady_items_per_second"] = round(len(tokens) / (time.perf_counter() - t0), 1)
  else:
    result["tokenize_seconds"] = round(tokenize_s, 2)
  if FLAGS.out_vectors:
    io.write_npy(FLAGS.out_vectors, vecs)
    result["vectors"] = FLAGS.out_vectors
    result["vectors_fingerprint"] = io.fingerprint_array(vecs)
  line = json.dumps(result)
  print(line)
  if FLAGS.out:
    with io.atomic_open(FLAGS.out, "w") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  app.run(main)
