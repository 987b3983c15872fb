"""Parity of the PyTorch references (benchmarks/torch_reference) with our JAX models.

Given the same weights (copied by `torch_reference.weights`), the references must compute the
same losses, gradients and logits as ours. Tolerance: relative L2 error `||a - b|| / ||b||`
below `RTOL = 1e-4` in float32 on the CPU (measured ~1e-6; the rest is summation order).
Marked slow: torch and transformers are not installed in CI
(`pip install torch==2.13.0 transformers`, then
`python -m pytest -m slow tests/test_torch_parity.py`).
"""
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from r3vae_jax.configs import default
from r3vae_jax.recommender import loss as rec_loss
from r3vae_jax.recommender import state as rec_state
from r3vae_jax.recommender.model import make_step_fn
from r3vae_jax.tokenizer import programs as tok_programs

RTOL = 1e-4
pytestmark = pytest.mark.slow


def rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def ref():
  """The torch_reference package (imported here: torch is absent from CI)."""
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  import torch
  from benchmarks.torch_reference import decoding, recommender, tokenizer, weights
  torch.manual_seed(0)
  return dict(torch=torch, tokenizer=tokenizer, recommender=recommender, decoding=decoding,
              weights=weights)


# ---- tokenizer -----------------------------------------------------------------------------

def _tokenizer_pair(ref, name, rating, dim):
  config = default.base_config()
  config.tokenizer = name
  config.sid.codebook_size = 64
  config.r3vae.update(default.R3VAE_SOFT_VARIANT)  # the variant the torch twin implements
  if rating:
    config.r3vae.rating = rating
  ours = tok_programs.build_model(config, dim, seed=1)
  graphdef, params = nnx.split(ours)
  theirs = ref["tokenizer"].build(name, config[name], config.sid, dim)
  ref["weights"].load_tokenizer(theirs, nnx.to_pure_dict(params))
  return graphdef, params, theirs


CASES = [("rqvae", None), ("r3vae", "soft"), ("r3vae", "hard")]


@pytest.mark.parametrize("name,rating", CASES)
def test_tokenizer_forward_matches_in_float32(ref, name, rating):
  torch = ref["torch"]
  graphdef, params, theirs = _tokenizer_pair(ref, name, rating, dim=48)
  x = np.random.default_rng(3).normal(size=(200, 48)).astype(np.float32)
  out = nnx.merge(graphdef, params)(jnp.asarray(x))
  with torch.no_grad():
    t_out = theirs(torch.from_numpy(x))
  assert rel_err(t_out.loss.item(), out.loss) < RTOL
  for term, value in out.terms.items():
    assert rel_err(t_out.terms[term].item(), value) < RTOL, term
  np.testing.assert_array_equal(t_out.codes.numpy(), np.asarray(out.codes))
  assert rel_err(t_out.x_hat.numpy(), out.x_hat) < RTOL


@pytest.mark.parametrize("name,rating", CASES)
def test_tokenizer_gradients_match_in_float64(ref, name, rating):
  """In float32 the R3-VAE codebook gradient at random init moves ~1e-3 for a 4e-7 change of
  the latent (cosine ratings of a near-uniform softmax), in either framework; so gradients are
  compared in float64, where the two implementations agree to ~1e-9."""
  torch = ref["torch"]
  graphdef, params, theirs = _tokenizer_pair(ref, name, rating, dim=48)
  theirs.double()
  x = np.random.default_rng(3).normal(size=(200, 48))
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
    grads = jax.grad(lambda p: nnx.merge(graphdef, p)(jnp.asarray(x)).loss)(p64)
    g = jax.tree.map(np.asarray, nnx.to_pure_dict(grads))
  theirs(torch.from_numpy(x)).loss.backward()
  tol = 1e-7
  assert rel_err(theirs.codebooks.grad.numpy(), g["codebooks"]) < tol
  assert rel_err(theirs.encoder[0].weight.grad.numpy().T, g["encoder"]["layers"][0]["kernel"]) < tol
  assert rel_err(theirs.decoder[-1].bias.grad.numpy(), g["decoder"]["layers"][3]["bias"]) < tol
  if name == "r3vae":
    assert rel_err(theirs.reference.grad.numpy(), g["reference"]) < tol


# ---- recommender -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def t5_pair(ref):
  """Our T5Recommender (paper size, dropout off) and HF T5 with the same weights, plus a batch."""
  config = default.base_config()
  config.recommender.dropout = 0.0
  mdef = rec_state.model_def(config)
  params = mdef.init_params()
  layout = mdef.layout
  hf = ref["recommender"].build(config.recommender, layout.vocab_size)
  item_position = ref["weights"].load_t5(hf, params)
  rng = np.random.default_rng(0)
  n_items, batch, hist_len = 500, 6, config.data.max_history
  table = np.unique(np.stack([rng.integers(0, k, n_items) for k in layout.level_sizes], 1), axis=0)
  item_tokens = layout.item_tokens(table)
  history = np.full((batch, hist_len), -1)
  for b in range(batch):
    length = rng.integers(1, hist_len + 1)
    history[b, hist_len - length:] = rng.integers(0, len(table), length)
  target = rng.integers(0, len(table), batch)
  tensors = ref["recommender"].example_tensors(history, target, item_tokens)
  return dict(config=config, mdef=mdef, params=params, layout=layout, hf=hf,
              item_position=item_position, table=table, item_tokens=item_tokens,
              history=history, target=target, tensors=tensors)


def _ours_inputs(p):
  enc = jnp.asarray(p["tensors"]["input_ids"].numpy(), jnp.int32)
  mask = jnp.asarray(p["tensors"]["attention_mask"].numpy() > 0)
  return enc, mask, jnp.asarray(p["table"][p["target"]], jnp.int32)


def _hf_forward(ref, p):
  hf, t = p["hf"], p["tensors"]
  embeds = ref["weights"].t5_inputs_embeds(hf, t["input_ids"], p["item_position"])
  return hf(inputs_embeds=embeds, attention_mask=t["attention_mask"], labels=t["labels"])


def test_t5_logits_and_loss_match(ref, t5_pair):
  p, torch = t5_pair, ref["torch"]
  enc, mask, targets = _ours_inputs(p)
  model = p["mdef"].bind(p["params"])
  logits = model(enc, mask, targets)
  loss, _ = rec_loss.sid_loss(logits, targets, p["layout"].level_sizes)
  p["hf"].eval()
  with torch.no_grad():
    out = _hf_forward(ref, p)
  layout = p["layout"]
  for level, (start, k) in enumerate(zip(layout.offsets, layout.level_sizes)):
    assert rel_err(out.logits[:, level, start:start + k].numpy(), logits[:, level, :k]) < RTOL
  t_loss = ref["recommender"].sid_loss(out.logits, p["tensors"]["labels"], list(layout.offsets),
                                       list(layout.level_sizes))
  assert rel_err(t_loss.item(), loss) < RTOL


def test_t5_gradients_match(ref, t5_pair):
  p = t5_pair
  enc, mask, targets = _ours_inputs(p)
  sizes = p["layout"].level_sizes

  def loss_fn(params):
    return rec_loss.sid_loss(p["mdef"].bind(params)(enc, mask, targets), targets, sizes)[0]
  grads = jax.grad(loss_fn)(p["params"])
  hf = p["hf"]
  hf.eval()
  hf.zero_grad()
  out = _hf_forward(ref, p)
  ref["recommender"].sid_loss(out.logits, p["tensors"]["labels"], list(p["layout"].offsets),
                              list(sizes)).backward()
  assert rel_err(hf.shared.weight.grad.numpy(), grads["embed"]) < RTOL
  enc0 = hf.encoder.block[0]
  assert rel_err(enc0.layer[0].SelfAttention.relative_attention_bias.weight.grad.numpy(),
                 grads["enc_bias"]) < RTOL
  assert rel_err(enc0.layer[1].DenseReluDense.wi.weight.grad.numpy().T,
                 grads["encoder"][0]["ffn"]["wi"]) < RTOL
  dec5 = hf.decoder.block[5]
  assert rel_err(dec5.layer[1].EncDecAttention.v.weight.grad.numpy().T,
                 np.asarray(grads["decoder"][5]["cross_attn"]["kv"][1]).reshape(128, -1)) < RTOL


def test_incremental_decoding_matches_hf_teacher_forcing(ref, t5_pair):
  """Our cached decode steps (what beam search calls) give HF's logits on the level slices."""
  p, torch = t5_pair, ref["torch"]
  enc, mask, targets = _ours_inputs(p)
  model = p["mdef"].bind(p["params"])
  step_fn, cache = make_step_fn(model, model.encode(enc, mask), mask, beam_size=1)
  p["hf"].eval()
  with torch.no_grad():
    hf_logits = _hf_forward(ref, p).logits.numpy()
  layout, prev = p["layout"], jnp.full((enc.shape[0],), -1, jnp.int32)
  for level, (start, k) in enumerate(zip(layout.offsets, layout.level_sizes)):
    logits, cache = step_fn(prev, level, cache)
    assert rel_err(hf_logits[:, level, start:start + k], logits) < RTOL
    prev = targets[:, level]


def test_hf_constrained_generate_returns_distinct_catalogue_items(ref, t5_pair):
  p, dec = t5_pair, ref["decoding"]
  catalogue = p["item_tokens"][:-1]
  p["hf"].eval()
  items = dec.recommend(p["hf"], p["tensors"]["input_ids"][:2], p["tensors"]["attention_mask"][:2],
                        dec.prefix_dict(catalogue), dec.item_lookup(catalogue), num_beams=5,
                        sid_length=catalogue.shape[1])
  assert items.shape == (2, 5)
  assert (items >= 0).all() and (items < len(catalogue)).all()
  assert all(len(set(row)) == 5 for row in items.tolist())
