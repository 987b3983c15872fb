"""Trie-constrained beam search on the device (model-agnostic: takes a step function)."""
from r3vae_jax.decode.beam_search import (BeamResult, beam_search, ensemble_step_fn, gather_beams,
                                          masked_log_softmax)
from r3vae_jax.decode.trie import CsrLevel, DenseLevel, DeviceTrie, build_trie

__all__ = ["BeamResult", "beam_search", "ensemble_step_fn", "gather_beams", "masked_log_softmax",
           "CsrLevel", "DenseLevel", "DeviceTrie", "build_trie"]
