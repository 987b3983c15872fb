"""Item vectors: MiniLM parity, BERT layer vs numpy, PPMI-SVD from training only."""
import math

import jax
import numpy as np
import pytest

from r3vae_jax.configs.default import base_config
from r3vae_jax.data import dataset, pipeline, splits
from r3vae_jax.data.vectors import bert, interactions, text_encoder


@pytest.fixture(scope="module")
def encoder():
  return text_encoder.load_encoder()


def test_minilm_matches_sentence_transformers(encoder):
  """Cosines that the sentence-transformers documentation prints for all-MiniLM-L6-v2."""
  model, tok = encoder
  a = ["The cat sits outside", "A man is playing guitar", "The new movie is awesome"]
  b = ["The dog plays in the garden", "A woman watches TV", "The new movie is so great"]
  extra = ["red lipstick", "lip colour", "tent stakes"]
  v = text_encoder.embed_tokens(model, text_encoder.tokenize(tok, a + b + extra, 128), 16, 128,
                                progress=False)
  assert v.shape == (9, 384) and v.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.sum(v[:3] * v[3:6], 1), [0.2838, -0.0327, 0.8939], atol=6e-4)
  lipstick, lip, tent = v[6:]
  assert lipstick @ lip > lipstick @ tent + 0.3


def test_padding_and_bucketing_do_not_change_vectors(encoder):
  model, tok = encoder
  ids = text_encoder.tokenize(tok, ["a short one", "word " * 20], 128)
  both = text_encoder.embed_tokens(model, ids, 16, 128, progress=False)     # one batch, width 32
  alone = text_encoder.embed_tokens(model, ids[:1], 16, 128, progress=False)  # width 16
  np.testing.assert_allclose(both[0], alone[0], atol=1e-5)


def _numpy_layer(x, mask, p, heads, eps):
  """Independent float64 reference of one post-LN BERT layer (exact erf GELU)."""
  def ln(y, g, b):
    mu = y.mean(-1, keepdims=True)
    return (y - mu) / np.sqrt(((y - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b
  b_, s, h = x.shape
  d = h // heads
  out = np.zeros_like(x)
  for bi in range(b_):
    for n in range(heads):
      sl = slice(n * d, (n + 1) * d)
      q = (x[bi] @ p["q_w"] + p["q_b"])[:, sl]
      k = (x[bi] @ p["k_w"] + p["k_b"])[:, sl]
      v = (x[bi] @ p["v_w"] + p["v_b"])[:, sl]
      att = q @ k.T / math.sqrt(d)
      att[:, ~mask[bi]] = -np.inf
      att = np.exp(att - att.max(1, keepdims=True))
      out[bi, :, sl] = (att / att.sum(1, keepdims=True)) @ v
  y = ln(x + out @ p["o_w"] + p["o_b"], p["ln1_g"], p["ln1_b"])
  pre = y @ p["ff1_w"] + p["ff1_b"]
  erf = np.vectorize(math.erf)
  gelu = 0.5 * pre * (1 + erf(pre / math.sqrt(2)))
  return ln(y + gelu @ p["ff2_w"] + p["ff2_b"], p["ln2_g"], p["ln2_b"])


def test_bert_layer_matches_numpy_reference():
  rng = np.random.default_rng(0)
  h, f, heads = 16, 32, 4
  shapes = {"q_w": (h, h), "k_w": (h, h), "v_w": (h, h), "o_w": (h, h), "ff1_w": (h, f),
            "ff2_w": (f, h), "q_b": (h,), "k_b": (h,), "v_b": (h,), "o_b": (h,), "ff1_b": (f,),
            "ff2_b": (h,), "ln1_g": (h,), "ln1_b": (h,), "ln2_g": (h,), "ln2_b": (h,)}
  p = {k: rng.normal(scale=0.3, size=s) for k, s in shapes.items()}
  x = rng.normal(size=(2, 5, h))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  layer = jax.jit(bert.bert_layer, static_argnums=(3, 4))
  got = layer(x.astype(np.float32), mask, {k: v.astype(np.float32) for k, v in p.items()}, heads,
              1e-12)
  np.testing.assert_allclose(np.asarray(got), _numpy_layer(x, mask, p, heads, 1e-12), atol=2e-4)


def _two_communities(rng, users=200):
  seqs = []
  for u in range(users):
    pool = np.arange(0, 20) if u % 2 else np.arange(20, 40)
    seqs.append(rng.choice(pool, size=rng.integers(5, 12)).astype(np.int32))
  return seqs


def test_ppmi_svd_learns_structure_from_training_only():
  rng = np.random.default_rng(0)
  seqs = _two_communities(rng)
  s = splits.leave_one_out(seqs)
  v = interactions.ppmi_svd(s.train, 41, dim=8, window=3)
  assert v.shape == (41, 8) and v.dtype == np.float32 and np.isfinite(v).all()
  np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
  within = np.mean(v[:20] @ v[:20].T)
  across = np.mean(v[:20] @ v[20:40].T)
  assert within > across + 0.5
  # item 40 appears only as a test target: it gets no training signal, and changing the test
  # targets does not change any vector
  leaked = [np.append(x, 40).astype(np.int32) for x in seqs]
  s2 = splits.leave_one_out(leaked)
  v2 = interactions.ppmi_svd(s2.train, 41, dim=8, window=3)
  config = base_config()
  config.vectors.update(dict(source="interactions-svd", svd_dim=8, svd_window=3))
  inter = dataset.Interactions("x", 41, leaked, None, None)
  v3 = pipeline.item_vectors(config, inter, s2)
  assert not np.allclose(v2, v)            # train differs (the shift moved one item per user)
  np.testing.assert_allclose(v3, v2, atol=1e-6)
  assert "train-only" in pipeline.vectors_label(config)


def test_randomized_svd_matches_exact():
  rng = np.random.default_rng(1)
  counts = interactions.cooccurrence(_two_communities(rng, 300), 40, 4)
  m = interactions.ppmi(counts)
  _, s = interactions.randomized_svd(m, 5, seed=0)
  exact = np.linalg.svd(m.toarray(), compute_uv=False)[:5]
  np.testing.assert_allclose(s[:2], exact[:2], rtol=1e-6)   # well separated: exact
  np.testing.assert_allclose(s, exact, rtol=1e-2)           # a near-flat tail: approximate
  assert (m.toarray() >= 0).all() and np.allclose(counts.toarray(), counts.toarray().T)
