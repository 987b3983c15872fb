"""RPG: long, unordered semantic IDs predicted in parallel (Hou et al., KDD 2025, arXiv 2506.05781).

- `opq.py`: PCA-whitened item vectors -> m unordered codes by optimized product quantization.
  Our own JAX implementation rather than faiss: a 12k-35k x 128 fit is a few dense matrix
  products per iteration, runs on the accelerator with the rest of the pipeline, and needs no
  extra native wheel on the device machines.
- `model.py`: GPT-2-style decoder over mean-pooled item token embeddings, one residual head per
  digit, cosine logits over a temperature.
- `data.py`: training windows and evaluation histories.
- `graph.py`: item-item graph from the SIDs and the trained token embeddings.
- `decode.py`: graph-constrained decoding, and exact full-catalogue scoring as the reference.
- `train.py`: the end-to-end run (vectors -> SIDs -> training -> both decoders, both protocols);
  training is data-parallel over `config.mesh`, parameters placed as the T5 recommender's.

Presets: `configs/rpg.py:<beauty|sports|toys>`.
"""
