"""The compiled programs of the recommender: the update step and constrained generation.

Each is ONE `jax.jit` with explicit in/out shardings over the mesh; the update step donates the
train state and returns `(state, measurements)`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from r3vae_jax import parallel
from r3vae_jax.decode import DeviceTrie, beam_search
from r3vae_jax.recommender.loss import sid_loss
from r3vae_jax.recommender.model import make_step_fn
from r3vae_jax.recommender.state import ModelDef, batch_shardings, step_key


NONFINITE_NAMES = ("loss",)  # then "grad <param path>" per parameter


def train_step_fn(mdef: ModelDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                  rng_impl: str) -> Callable[[dict, dict], tuple[dict, dict]]:
  """The (unjitted) update step.

  Dropout is keyed by `fold_in(state["rng"], step)` (`state["rng"]`: the key data of
  `key(seed, impl=rng_impl)`), so a resumed run draws the same masks, and the seed is an input
  rather than a constant of the program: runs that differ only in their seed compile one program
  (and share the persistent compilation cache). `rng_impl` "rbg" draws the masks with XLA's
  RngBitGenerator (cheaper to compile and run than "threefry2x32"). When
  the loss or any gradient is non-finite (a gradient whose squared norm overflows float32
  counts as non-finite) the update is not applied (`lax.cond`: params and optimizer state are
  kept, the step counter advances) and `state["nonfinite"]` records the step and which tensors
  were bad (`NONFINITE_NAMES` + one flag per parameter gradient); the host reads that when it
  next logs (no extra sync).

  Returns:
    step(state, batch) -> (state, {"loss", "accuracy", "grad_norm", "lr", "examples",
    "finite", "loss_per_level"}).
  """
  sizes = mdef.layout.level_sizes

  def loss_fn(params, batch, key):
    model = mdef.bind(params)
    logits = model(batch["enc_tokens"], batch["enc_mask"], batch["targets"],
                   deterministic=False, rng=key)
    return sid_loss(logits, batch["targets"], sizes, batch["weight"])

  def step(state: dict, batch: dict) -> tuple[dict, dict]:
    # The key is built inside the trace: a closed-over key array is a host transfer on GPU.
    key = step_key(state["rng"], state["step"], rng_impl)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, key)
    grad_sq = jnp.stack([jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)])
    leaf_finite = jnp.concatenate([jnp.isfinite(loss)[None], jnp.isfinite(grad_sq)])
    finite = jnp.all(leaf_finite)

    def apply(params_opt):
      updates, opt = tx.update(grads, params_opt[1], params_opt[0])
      return optax.apply_updates(params_opt[0], updates), opt

    params, opt = jax.lax.cond(finite, apply, lambda params_opt: params_opt,
                               (state["params"], state["opt"]))
    bad = state["nonfinite"]
    first = (bad["first_step"] < 0) & ~finite
    new_state = {
        "params": params, "opt": opt, "step": state["step"] + 1, "rng": state["rng"],
        "nonfinite": {"first_step": jnp.where(first, state["step"], bad["first_step"]),
                      "count": bad["count"] + (~finite).astype(jnp.int32),
                      "which": jnp.where(first, ~leaf_finite, bad["which"])},
    }
    measurements = {"loss": loss, "accuracy": aux["accuracy"],
                    "token_accuracy": aux["token_accuracy"], "examples": aux["weight"],
                    "grad_norm": jnp.sqrt(jnp.sum(grad_sq)), "lr": schedule(state["step"]),
                    "finite": finite, "loss_per_level": aux["loss_per_level"]}
    return new_state, measurements

  return step


def make_train_step(mdef: ModelDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    rng_impl: str, state_shardings: Any, mesh: Mesh):
  """`train_step_fn` under one `jax.jit`: state donated, batch split over `data`."""
  return jax.jit(train_step_fn(mdef, tx, schedule, rng_impl),
                 in_shardings=(state_shardings, batch_shardings(mesh)),
                 out_shardings=(state_shardings, parallel.replicated(mesh)),
                 donate_argnums=(0,))


def _decoder(mdef: ModelDef, params: dict, batch: dict, beam_size: int):
  """One model's (step_fn, cache) for `beam_search` over `batch`'s encoded histories."""
  model = mdef.bind(params)
  enc_out = model.encode(batch["enc_tokens"], batch["enc_mask"])
  return make_step_fn(model, enc_out, batch["enc_mask"], beam_size)


def _jit_generate(generate: Callable, param_shardings: Any, mesh: Mesh):
  data = batch_shardings(mesh)
  return jax.jit(generate, in_shardings=(param_shardings, data, parallel.replicated(mesh)),
                 out_shardings=(data, data))


def make_generate(mdef: ModelDef, beam_size: int, param_shardings: Any, mesh: Mesh):
  """Constrained beam search under one `jax.jit`.

  Returns:
    generate(params, batch {"enc_tokens" int32[B, S], "enc_mask" bool[B, S]}, trie) ->
    (item_ids int32[B, beam_size] best first, -1 = empty slot; scores float32[B, beam_size],
    the SIDs' summed log-probabilities), split over `data`.
  """
  def generate(params: dict, batch: dict, trie: DeviceTrie) -> tuple[jax.Array, jax.Array]:
    step_fn, cache = _decoder(mdef, params, batch, beam_size)
    result = beam_search(step_fn, cache, trie, batch["enc_tokens"].shape[0], beam_size)
    return result.item_ids, result.scores

  return _jit_generate(generate, param_shardings, mesh)
