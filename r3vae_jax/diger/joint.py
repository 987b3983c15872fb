"""DIGER's joint loss: the tokenizer codes a batch's items, the recommender reads the codes.

For a batch of training examples (history item ids `[B, H]`, target item ids `[B]`):

1. every history and target item's vector goes through the tokenizer encoder; its code
   indicators come from the Gumbel straight-through estimator (`assign.gumbel_residual`) with
   the per-item noise of the chosen decay (`noise.noise_scales`);
2. the recommender's encoder input is `onehot @ level table` for every SID position of every
   history item (`T5Recommender.embed_history_onehot`), its decoder input and its soft
   cross-entropy targets are the target item's indicators, so the recommendation loss reaches
   the encoder and every codeword through the indicators (the noisy ones, or noiseless ones
   under `JointConfig.reader_codes="greedy"`);
3. the collision token (last SID position) is read from the epoch's SID table: a constant one-hot
   with no gradient;
4. total = rec (sigma-reweighted under "learned_sigma") + recon_weight * recon
   + vq_weight * VQ/commitment (beta from the tokenizer), the last two on the chosen or the
   greedy codes (`JointConfig.vq_codes`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from r3vae_jax import quantize
from r3vae_jax.diger import assign
from r3vae_jax.diger import noise
from r3vae_jax.recommender import loss as rec_loss_lib


@dataclasses.dataclass(frozen=True)
class JointConfig:
  """Static hyperparameters of the joint loss (from `config.diger` and the tokenizer's beta).

  Attributes:
    decay: one of `noise.DECAYS`.
    tau: Gumbel-softmax temperature.
    noise_scale: Gumbel noise scale of "frequency" (hot items) and "gumbel".
    hot_factor: hot-code threshold relative to the average usage.
    sigma_lambda: lambda of the SDUD loss.
    beta: commitment weight.
    recon_weight: weight of the reconstruction loss.
    vq_weight: weight of the VQ/commitment loss.
    detach: cut the indicators' gradient (the released code's detached SID table; ablation).
    normalize_logits: map each level's logits to [-1, 1] before the Gumbel noise
      (`assign.range_normalize`, as the released code), so `noise_scale` is relative to the spread
      of the distances.
    vq_codes: "chosen" (VQ/commitment and reconstruction on the codes the recommender sees,
      noisy ones included, as the released code) or "greedy" (on the noiseless residual
      codes: the noise then only changes what the recommender sees). Measured on Beauty
      (MiniLM, 60-epoch RQ-VAE, the tokenizer losses alone under the frequency decay, 256 steps
      per epoch): "chosen" revives cold codes (level-1 usage 0.32 -> 0.72) but pulls codewords
      towards randomly assigned residuals, and the collision rate climbs 0.13 -> 0.31 -> 0.36;
      "greedy" keeps both flat (0.13). Noisy codes are near-uniform draws: the RQ-VAE's
      best-vs-second logit gap (median 3e-3, 3e-4, 1e-4 per level) is tiny beside Gumbel noise.
    noisy_targets: the target items' codes get the noise too (True) or are greedy (False: the
      noise only perturbs the history the recommender reads; gradients reach the target codes
      through the straight-through softmax either way).
    reader_codes: what the recommender reads (history and targets): "noisy" = the Gumbel-chosen
      indicators above; "greedy" = noiseless straight-through indicators (forward: each item's
      greedy residual codes, what the epoch's SID table holds; backward: the gradient of
      softmax(logits / tau)). With "greedy" the noise acts only through the tokenizer losses
      (on the chosen codes under vq_codes="chosen", as in the released code, where the
      recommender reads the epoch's table), while the recommendation loss still reaches the
      encoder and every codeword through the indicators.
  """
  decay: str
  tau: float
  noise_scale: float
  hot_factor: float
  sigma_lambda: float
  beta: float
  recon_weight: float
  vq_weight: float
  detach: bool = False
  vq_codes: str = "chosen"
  normalize_logits: bool = False
  noisy_targets: bool = True
  reader_codes: str = "noisy"


def history_onehots(indicators: jax.Array, collision: jax.Array, valid: jax.Array,
                    max_collisions: int) -> list[jax.Array]:
  """The recommender's per-position one-hots of a batch of histories.

  Args:
    indicators: float[B, H, L, K] code indicators.
    collision: int32[B, H] collision tokens.
    valid: bool[B, H], False on history padding (its one-hots become all zero).
    max_collisions: size of the collision level.

  Returns:
    L + 1 arrays: float[B, H, K] for each code level, then float[B, H, max_collisions].
  """
  mask = valid[..., None].astype(indicators.dtype)
  levels = [indicators[:, :, l] * mask for l in range(indicators.shape[2])]
  return levels + [jax.nn.one_hot(collision, max_collisions, dtype=indicators.dtype) * mask]


def target_onehots(indicators: jax.Array, collision: jax.Array, kmax: int) -> jax.Array:
  """Soft targets (and decoder inputs) of the target items: float[B, L+1, kmax].

  Args:
    indicators: float[B, L, K] code indicators (K <= kmax).
    collision: int32[B] collision tokens (< kmax).
    kmax: width of the recommender's padded logits.
  """
  k = indicators.shape[-1]
  codes = jnp.pad(indicators, ((0, 0), (0, 0), (0, kmax - k)))
  last = jax.nn.one_hot(collision, kmax, dtype=indicators.dtype)[:, None, :]
  return jnp.concatenate([codes, last], axis=1)


def joint_loss(tokenizer: Any, recommender: Any, sigma: jax.Array, histories: jax.Array,
               targets: jax.Array, row_weights: jax.Array, vectors: jax.Array, table: jax.Array,
               usage: jax.Array, key: jax.Array, cfg: JointConfig,
               decay_id: jax.Array | None = None, noise_factor: jax.Array | float = 1.0
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The joint DIGER loss of one batch (module docstring).

  Args:
    tokenizer: an RQ-VAE (`encoder`, `decoder`, `codebooks [L, K, Dz]`).
    recommender: a `T5Recommender`.
    sigma: float[L] learnable noise scales ("learned_sigma"; unused otherwise).
    histories: int32[B, H] item ids, -1 = padding (every row has at least one item).
    targets: int32[B] item ids.
    row_weights: float32[B] example weights (0 = filler row of a last batch).
    vectors: float[N, D] item vectors.
    table: int32[N, L+1] the epoch's SID table (its last column gives collision tokens).
    usage: float[L, K] usage EMA of the greedy codes.
    key: PRNG key (Gumbel noise and dropout).
    cfg: `JointConfig`.
    decay_id: int32[] index of the decay in `noise.DECAYS`, used instead of `cfg.decay` (an
      argument of the trainer's step, so every decay runs the same compiled program).
    noise_factor: float[] multiplier of every item's noise scale (`noise.anneal_factor` of the
      step under `diger.noise_anneal_fraction`; 1 = no annealing).

  Returns:
    (total loss, aux): aux holds the scalar terms "rec", "rec_ce", "recon", "vq", "accuracy",
    "noisy_fraction", "noise_factor", "ce_per_level" float[L+1], and "target_greedy"
    int32[B, L] (for the usage EMA update).
  """
  batch, hist_len = histories.shape
  books = tokenizer.codebooks[...]
  levels = books.shape[0]
  layout = recommender.layout
  decay = cfg.decay if decay_id is None else decay_id
  gumbel_key, dropout_key = jax.random.split(key)

  # ---- tokenizer: codes of every history and target item ---------------------------------
  items = jnp.concatenate([histories.reshape(-1), targets])
  valid = items >= 0
  safe = jnp.maximum(items, 0)
  row_of_item = jnp.concatenate([jnp.repeat(row_weights, hist_len), row_weights])
  weights = valid.astype(jnp.float32) * row_of_item
  x = vectors[safe]
  z = tokenizer.encode(x)
  greedy_level1, _ = quantize.nearest_code(jax.lax.stop_gradient(z),
                                           jax.lax.stop_gradient(books[0]))
  is_target = jnp.arange(items.shape[0]) >= batch * hist_len
  scales = noise.noise_scales(decay, greedy_level1, usage[0], sigma, cfg.noise_scale,
                              cfg.hot_factor) * jnp.where(is_target, float(cfg.noisy_targets),
                                                          1.0)[:, None]
  scales = scales * jnp.asarray(noise_factor, jnp.float32)
  a = assign.gumbel_residual(z, books, gumbel_key, cfg.tau, scales, cfg.detach,
                             cfg.normalize_logits)
  read = a if cfg.reader_codes == "noisy" else assign.gumbel_residual(
      z, books, gumbel_key, cfg.tau, jnp.zeros_like(scales), cfg.detach, cfg.normalize_logits)
  vq_codes = a.codes if cfg.vq_codes == "chosen" else quantize.residual_quantize(
      jax.lax.stop_gradient(z), jax.lax.stop_gradient(books))[0]
  vq, decoder_in = assign.tokenizer_losses(z, books, vq_codes, cfg.beta, weights)
  x_hat = tokenizer.decode(decoder_in)
  recon = jnp.sum(weights[:, None] * jnp.square(x - x_hat)) / (
      jnp.maximum(weights.sum(), 1.0) * x.shape[-1])

  # ---- recommender: inputs and targets built from the indicators ---------------------------
  collision = table[safe, levels]
  n_hist = batch * hist_len
  hist_valid = valid[:n_hist].reshape(batch, hist_len)
  enc_onehots = history_onehots(read.indicators[:n_hist].reshape(batch, hist_len, levels, -1),
                                collision[:n_hist].reshape(batch, hist_len), hist_valid,
                                layout.level_sizes[-1])
  enc_embeddings = recommender.embed_history_onehot(enc_onehots)
  enc_mask = jnp.repeat(hist_valid, layout.num_levels, axis=1)
  dec_targets = target_onehots(read.indicators[n_hist:], collision[n_hist:], layout.max_level_size)
  logits = recommender(None, enc_mask, dec_targets, deterministic=False, rng=dropout_key,
                       enc_embeddings=enc_embeddings)
  ce = rec_loss_lib.sid_cross_entropy(logits, dec_targets, layout.level_sizes)
  total_rows = jnp.maximum(row_weights.sum(), 1.0)
  ce_per_level = jnp.sum(row_weights[:, None] * ce, axis=0) / total_rows
  rec = noise.rec_loss_with_sigma(ce_per_level[:levels], ce_per_level[levels], decay,
                                  sigma, cfg.sigma_lambda)
  total = rec + cfg.recon_weight * recon + cfg.vq_weight * vq

  codes = jnp.argmax(dec_targets, axis=-1)
  correct = jnp.all(jnp.argmax(logits, axis=-1) == codes, axis=1)
  noisy = (scales[:, 0] > 0).astype(jnp.float32)
  return total, {
      "loss": total, "rec": rec, "rec_ce": ce_per_level.mean(), "recon": recon, "vq": vq,
      "accuracy": jnp.sum(row_weights * correct) / total_rows, "ce_per_level": ce_per_level,
      "noisy_fraction": jnp.sum(noisy * weights) / jnp.maximum(weights.sum(), 1.0),
      "noise_factor": jnp.asarray(noise_factor, jnp.float32),
      "target_greedy": a.greedy[n_hist:],
  }
