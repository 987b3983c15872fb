"""Data layer: readers of public formats, k-core, leave-one-out splits, item vectors.

Entry points: `pipeline.prepare(config) -> Interactions` and
`pipeline.item_vectors(config, inter, splits) -> float32[N, D]`.
"""
