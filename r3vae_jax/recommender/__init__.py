"""T5-style generative recommender over semantic IDs: model, input pipeline, trainer.

Entry points: `train.train_recommender(config, workdir, sid_table, splits)` and
`evaluation.evaluate_recommender(config, workdir, sid_table, splits, split)`; trained
parameters load with `artifacts.restore_params`; the compiled programs are
`programs.model_programs` / `programs.train_programs`; the model is `model.T5Recommender` with
`model.make_step_fn` for `r3vae_jax.decode.beam_search`.
"""
