"""RPG speed, ours (JAX) beside the released code's way (eager PyTorch + Hugging Face GPT-2).

  python -m benchmarks.rpg_speed --out=benchmarks/results/rpg_speed_h100.json

One Beauty-sized problem for both sides: the real Beauty test histories (22,363 users, last 50
items), 12,101 items with random 32-code SIDs (K 256), the released model sizes (d 448, 2
layers, 4 heads, MLP 1024), training batches of 256 windows padded to 50 positions. Timed:

* train step (forward, backward, clipped AdamW update), mean of `--steps` after warm-up;
* item graph build (200 edges);
* decoding the whole test set: graph-constrained (20 beams, 3 steps) and exact full scoring,
  untouched protocol, 10 items per user. Ours: one jitted program per batch of 1024 users over
  `evaluate.rank_in_batches` (host transfer included). PyTorch exact: batches of 32 (the
  released evaluation batch) over all users; PyTorch graph: its per-user loop on the first
  `--torch_users` users, users/s extrapolated (labelled in the JSON).

Both sides' exact top-10 from the same log-probabilities are compared (`exact_agreement`).
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from r3vae_jax import evaluate, io, parallel
from r3vae_jax.configs import rpg as rpg_config
from r3vae_jax.data import pipeline, splits as splits_lib
from r3vae_jax.rpg import data, decode, graph, model as model_lib, train

_OUT = flags.DEFINE_string("out", None, "results JSON")
_STEPS = flags.DEFINE_integer("steps", 20, "timed training steps per side")
_TORCH_USERS = flags.DEFINE_integer("torch_users", 1024, "users for the PyTorch graph loop")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "time ours only")
_TINY = flags.DEFINE_bool("tiny", False, "small sizes (CPU check of the script)")


def _timed(fn, repeats: int = 1) -> float:
  start = time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.perf_counter() - start) / repeats


def _problem(tiny: bool):
  config = rpg_config.get_config("beauty,interactions-svd")
  c = config.rpg
  inter = pipeline.prepare(config)
  spl = splits_lib.leave_one_out(inter.sequences)
  if tiny:
    c.d_model, c.d_ff, c.num_digits, c.codebook_size, c.num_edges = 32, 64, 4, 16, 20
  rng = np.random.default_rng(0)
  sids = rng.integers(0, c.codebook_size, (inter.num_items, c.num_digits)).astype(np.int32)
  windows = data.train_windows(spl.train, c.max_len)
  users = 512 if tiny else len(spl.test_history)
  history = data.eval_histories(spl.test_history[:users], c.max_len)
  return config, sids, windows, history


def _ours(config, sids_np, windows, history, steps):
  c = config.rpg
  cfg = train.model_config(c, sids_np.shape[1])
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=0.0))
  mesh = parallel.make_mesh(data=-1, model=1)
  bind, params, opt_state, step = train.init_training(cfg, 0, tx, mesh)
  batch = train.make_batch(windows, np.arange(config.train.batch_size), c.max_len,
                           config.train.batch_size, sids_np)
  batch = parallel.to_global(batch, mesh)
  key = jax.random.PRNGKey(0)
  for _ in range(3):
    params, opt_state, loss = step(params, opt_state, batch, key)
  jax.block_until_ready(loss)

  def run_steps():
    nonlocal params, opt_state
    for _ in range(steps):
      params, opt_state, value = step(params, opt_state, batch, key)
    jax.block_until_ready(value)

  step_s = _timed(run_steps) / steps
  sids = jnp.asarray(sids_np)
  table = params["tokens"].reshape(cfg.num_digits, cfg.codebook_size, -1)
  build = lambda: jax.block_until_ready(graph.build_graph(table, sids, c.num_edges,
                                                          c.graph_block))
  adjacency = build()
  graph_s = _timed(build)
  exact, graph_rank = train.rank_fns(bind, sids, adjacency, c, 10)
  inputs = {"history": history}
  out = {"train_step_s": step_s, "graph_build_s": graph_s}
  for name, fn in (("graph", lambda b: graph_rank(params, b, jax.random.PRNGKey(0))),
                   ("exact", lambda b: exact(params, b))):
    call = lambda fn=fn: evaluate.rank_in_batches(fn, inputs, c.eval_batch_size, mesh)
    first = _timed(call)
    out[f"decode_{name}_s"] = min(_timed(call) for _ in range(3))
    out[f"decode_{name}_first_call_s"] = first
  logp = jax.jit(lambda p, h: model_lib.digit_log_probs(
      bind(p), jnp.take(sids, jnp.maximum(h, 0), axis=0), h >= 0))(
          params, jnp.asarray(history[:256]))
  return out, np.asarray(logp), np.asarray(decode.exact_top_k(logp, sids, 10)[0])


def _torch(config, sids_np, windows, history, steps, torch_users, logp_ours):
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks.torch_reference import rpg as ref  # pylint: disable=g-import-not-at-top
  c = config.rpg
  dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
  m, k = sids_np.shape[1], c.codebook_size
  sids1 = np.concatenate([np.zeros((1, m), np.int64), sids_np + 1 + np.arange(m) * k])
  sids1 = torch.as_tensor(sids1, device=dev)
  model = ref.TorchRPG(m, k, c.d_model, c.num_layers, c.num_heads, c.d_ff, c.max_len,
                       c.temperature).to(dev)
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
  rows = np.arange(config.train.batch_size)
  items = torch.as_tensor(windows.inputs[rows] + 1, device=dev)      # -1 pad -> 0
  labels = torch.as_tensor(windows.labels[rows] + 1, device=dev)
  mask = (items > 0).long()

  def one_step():
    opt.zero_grad()
    loss = model.loss(sids1, items, mask, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()

  model.train()
  for _ in range(3):
    one_step()
  sync()

  def run_steps():
    for _ in range(steps):
      one_step()
    sync()

  out = {"train_step_s": _timed(run_steps) / steps}
  model.eval()
  with torch.no_grad():
    def build():
      adj = ref.build_graph(model.gpt2.wte.weight[1:-1], sids1, c.num_edges)
      sync()
      return adj
    build()
    out["graph_build_s"] = _timed(build)
    adjacency = build()
    hist = torch.as_tensor(history + 1, device=dev)
    hmask = (hist > 0).long()

    def exact_all():
      for i in range(0, hist.shape[0], 32):
        ref.exact_top_k(model.log_probs(sids1, hist[i:i + 32], hmask[i:i + 32]), sids1, 10)
      sync()

    exact_all()
    out["decode_exact_s"] = _timed(exact_all)
    gen = torch.Generator(device=dev)
    gen.manual_seed(0)
    users = min(torch_users, hist.shape[0])

    def graph_some():
      for i in range(0, users, 32):
        logp = model.log_probs(sids1, hist[i:i + 32], hmask[i:i + 32])
        ref.graph_top_k(logp, sids1, adjacency, c.num_beams, c.propagation_steps, 10, gen)
      sync()

    measured = _timed(graph_some)
    out["decode_graph_measured_users"] = users
    out["decode_graph_measured_s"] = measured
    out["decode_graph_s"] = measured * hist.shape[0] / users
    out["decode_graph_s_is_extrapolated"] = users < hist.shape[0]
    top = ref.exact_top_k(torch.as_tensor(logp_ours, device=dev).view(logp_ours.shape[0], -1),
                          sids1, 10).cpu().numpy() - 1
  return out, top


def main(argv):
  del argv
  config, sids, windows, history = _problem(_TINY.value)
  ours, logp, ours_top = _ours(config, sids, windows, history, _STEPS.value)
  result = {"kind": "speed", "workload": "rpg_beauty", "device": jax.devices()[0].device_kind,
            "commit": io.source_commit(), "command": " ".join(["python -m benchmarks.rpg_speed"]
                                                              + sys.argv[1:]),
            "sizes": {"items": int(sids.shape[0]), "digits": int(sids.shape[1]),
                      "codebook": config.rpg.codebook_size, "d_model": config.rpg.d_model,
                      "layers": config.rpg.num_layers, "batch": config.train.batch_size,
                      "positions": config.rpg.max_len, "test_users": int(history.shape[0]),
                      "beams": config.rpg.num_beams, "edges": config.rpg.num_edges,
                      "steps": config.rpg.propagation_steps},
            "ours": ours}
  _write(result)
  if not _SKIP_TORCH.value:
    try:
      theirs, torch_top = _torch(config, sids, windows, history, _STEPS.value,
                                 _TORCH_USERS.value, logp)
      result["torch_eager"] = theirs
      result["exact_agreement"] = float(np.mean(torch_top == ours_top))
      result["speedup"] = {name: theirs[name] / ours[name] for name in
                           ("train_step_s", "graph_build_s", "decode_exact_s", "decode_graph_s")}
    except Exception as e:  # pylint: disable=broad-except
      result["torch_error"] = f"{type(e).__name__}: {e}"
  _write(result)


def _write(result: dict) -> None:
  """Prints and (with --out) saves the JSON; called after each side, so a run cut short keeps
  what it measured."""
  print(json.dumps(result, indent=1), flush=True)
  if _OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    io.write_json(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
