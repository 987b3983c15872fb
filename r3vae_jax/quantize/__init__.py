"""Quantizer math as pure functions: estimators, assignment, residual quantisation, k-means,
collision tokens, SID metrics and schedules (arrays in, arrays out; jit-, vmap- and grad-safe).
"""
from r3vae_jax.quantize.assign import balanced_codes
from r3vae_jax.quantize.assign import l2_normalize
from r3vae_jax.quantize.assign import nearest_code
from r3vae_jax.quantize.assign import nearest_code_chunked
from r3vae_jax.quantize.assign import pairwise_scores
from r3vae_jax.quantize.assign import rating_quantize
from r3vae_jax.quantize.collision import append_collision_token
from r3vae_jax.quantize.collision import collision_tokens
from r3vae_jax.quantize.collision import group_ids
from r3vae_jax.quantize.collision import packed_prefix_keys
from r3vae_jax.quantize.collision import spill_overflow
from r3vae_jax.quantize.estimators import gumbel_soft_sample
from r3vae_jax.quantize.estimators import gumbel_softmax
from r3vae_jax.quantize.estimators import rotation_trick
from r3vae_jax.quantize.estimators import straight_through
from r3vae_jax.quantize.kmeans import kmeans
from r3vae_jax.quantize.kmeans import kmeans_plus_plus
from r3vae_jax.quantize.kmeans import lloyd
from r3vae_jax.quantize.kmeans import residual_kmeans
from r3vae_jax.quantize.residual import residual_quantize
from r3vae_jax.quantize.schedules import anneal_temperature
from r3vae_jax.quantize.schedules import hot_code_mask
from r3vae_jax.quantize.schedules import sigma_weighted_loss
from r3vae_jax.quantize.schedules import update_usage_ema
from r3vae_jax.quantize.sid_metrics import code_groups
from r3vae_jax.quantize.sid_metrics import collision_rate
from r3vae_jax.quantize.sid_metrics import gini
from r3vae_jax.quantize.sid_metrics import group_centres
from r3vae_jax.quantize.sid_metrics import perplexity_per_level
from r3vae_jax.quantize.sid_metrics import preference_discrimination
from r3vae_jax.quantize.sid_metrics import semantic_cohesion
from r3vae_jax.quantize.sid_metrics import sid_changes
from r3vae_jax.quantize.sid_metrics import sid_report
from r3vae_jax.quantize.sid_metrics import soft_group_centres
from r3vae_jax.quantize.sid_metrics import soft_preference_discrimination
from r3vae_jax.quantize.sid_metrics import soft_semantic_cohesion
from r3vae_jax.quantize.sid_metrics import transition_lift
from r3vae_jax.quantize.sid_metrics import usage_per_level

__all__ = [
    "anneal_temperature",
    "append_collision_token",
    "balanced_codes",
    "code_groups",
    "collision_rate",
    "collision_tokens",
    "gini",
    "group_centres",
    "group_ids",
    "gumbel_soft_sample",
    "gumbel_softmax",
    "hot_code_mask",
    "kmeans",
    "kmeans_plus_plus",
    "l2_normalize",
    "lloyd",
    "nearest_code",
    "nearest_code_chunked",
    "packed_prefix_keys",
    "pairwise_scores",
    "perplexity_per_level",
    "preference_discrimination",
    "rating_quantize",
    "residual_kmeans",
    "residual_quantize",
    "rotation_trick",
    "semantic_cohesion",
    "sid_changes",
    "sid_report",
    "sigma_weighted_loss",
    "soft_group_centres",
    "soft_preference_discrimination",
    "soft_semantic_cohesion",
    "spill_overflow",
    "straight_through",
    "transition_lift",
    "update_usage_ema",
    "usage_per_level",
]
