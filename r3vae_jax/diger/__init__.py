"""DIGER: differentiable semantic IDs trained jointly with the generative recommender."""
