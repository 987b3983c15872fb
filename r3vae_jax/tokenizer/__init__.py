"""Tokenizers (RQ-KMeans, RQ-VAE, R3-VAE): item vectors -> semantic-ID table."""
