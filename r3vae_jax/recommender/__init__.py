"""T5-style generative recommender over semantic IDs: model, input pipeline, trainer.

Entry points: `train.train_recommender(config, workdir, sid_table, splits)` and
`train.evaluate_recommender(config, workdir, sid_table, splits, split)`; the model is
`model.T5Recommender` with `model.make_step_fn` for `r3vae_jax.decode.beam_search`.
"""
