"""RPG (parallel long semantic IDs, OPQ + graph decoding) on one dataset, with its presets.

  python -m r3vae_jax.rpg.train --config=r3vae_jax/configs/rpg.py:beauty --out=/tmp/rpg.json

The argument is `dataset[,vector_source]`: dataset beauty | sports | toys (the dataset config
gives data paths, vectors and evaluation settings); vectors as that config (Beauty minilm-text,
Sports/Toys interactions-svd by default). Presets per dataset follow RPG's released settings
(codes per item, temperature, beams, graph out-degree, propagation steps, learning rate);
the `train` section holds the optimiser and epochs (`train.stop_at` bounds the training in time).
"""
import ml_collections

from r3vae_jax.configs import beauty, sports, toys

DATASETS = {"beauty": beauty, "sports": sports, "toys": toys}

# dataset -> (codes per item, learning rate, temperature, beams, graph edges, propagation steps)
PRESETS = {
    "beauty": (32, 0.01, 0.03, 20, 200, 3),
    "sports": (16, 0.003, 0.03, 100, 30, 5),
    "toys": (16, 0.003, 0.03, 200, 20, 3),
}


def rpg_section(dataset: str) -> ml_collections.ConfigDict:
  m, lr, temperature, beams, edges, steps = PRESETS[dataset]
  return ml_collections.ConfigDict({
      # tokenizer: PCA-whitened vectors -> OPQ with m codebooks of K codes
      "pca_dim": 128, "num_digits": m, "codebook_size": 256,
      "opq_outer_iters": 20, "opq_inner_iters": 4, "opq_final_iters": 25,
      # model (GPT-2 style)
      "d_model": 448, "num_layers": 2, "num_heads": 4, "d_ff": 1024, "max_len": 50,
      "temperature": temperature, "embed_dropout": 0.5, "attn_dropout": 0.5,
      # decoding
      "num_beams": beams, "num_edges": edges, "propagation_steps": steps, "graph_block": 1024,
      "eval_batch_size": 1024,
  })


def get_config(arg=None):
  parts = [p for p in (arg or "beauty").split(",") if p]
  if not parts or parts[0] not in DATASETS or len(parts) > 2:
    raise ValueError(f"configs/rpg.py: argument {arg!r}; expected 'dataset[,vector_source]' "
                     f"with dataset one of {sorted(DATASETS)}")
  c = DATASETS[parts[0]].get_config(",".join(["rqkmeans"] + parts[1:]))
  c.tokenizer = "rpg"
  c.rpg = rpg_section(parts[0])
  t = c.train
  # The released runs train up to 150 epochs with 10,000 warm-up steps and patience 20; 50
  # epochs with a shorter warm-up is what one shared GPU fits for nine rows at once.
  t.epochs, t.lr, t.warmup_steps = 50, PRESETS[parts[0]][1], 1500
  t.weight_decay, t.clip_norm = 0.0, 1.0
  t.batch_size, t.eval_every_epochs, t.patience, t.length_buckets = 256, 5, 4, (8, 16, 32)
  t.example_window = 0  # whole training sequences, cut into windows of max_len + 1 items
  return c
