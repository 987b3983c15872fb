"""r3vae_jax: semantic-ID generative recommendation in JAX/Flax.

Items -> dense vectors -> tokenizer (RQ-KMeans, RQ-VAE, R3-VAE, DIGER) -> semantic IDs ->
T5-style generative recommender -> trie-constrained beam search -> Recall@K / NDCG@K.
"""

__version__ = "0.1.0"
