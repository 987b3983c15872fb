"""Benchmarks of r3vae_jax against PyTorch references (see README.md)."""
