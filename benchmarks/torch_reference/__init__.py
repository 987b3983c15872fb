"""PyTorch references of the three workloads, written the way PyTorch code of this field is.

`tokenizer` (nn.Module RQ-VAE / R3-VAE + a DataLoader training loop), `recommender` (Hugging Face
`T5ForConditionalGeneration` + AdamW loop), `decoding` (`generate` with
`prefix_allowed_tokens_fn` over a dict trie), and `weights` (copies our Flax parameters into
them for the parity tests). Needs torch and transformers; nothing in `r3vae_jax` imports this.
"""
