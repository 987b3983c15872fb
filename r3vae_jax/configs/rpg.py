"""RPG (parallel long semantic IDs, OPQ + graph decoding) on one dataset, with its presets.

  python -m r3vae_jax.rpg.train --config=r3vae_jax/configs/rpg.py:beauty --out=/tmp/rpg.json

The argument is `dataset[,vector_source]`: dataset beauty | sports | toys (the dataset config
gives data paths, vectors and evaluation settings); vectors as that config (Beauty minilm-text,
Sports/Toys interactions-svd by default). Presets per dataset follow RPG's released settings
(codes per item, temperature, beams, graph out-degree, propagation steps, learning rate);
`rpg.max_epochs` and `rpg.time_budget_s` bound the training.
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
      # training
      "lr": lr, "weight_decay": 0.0, "warmup_steps": 1000, "clip_norm": 1.0,
      "batch_size": 256, "max_epochs": 150, "time_budget_s": 0.0, "eval_every": 5,
      "patience": 4, "length_buckets": (8, 16, 32),
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
  return c
