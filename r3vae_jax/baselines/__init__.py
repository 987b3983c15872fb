"""Non-generative baselines on the project's split and metrics, both protocols.

  popularity.py   training-part item counts, the same ranking for every user
  markov.py       first-order transitions from the user's last item, ties by popularity
  sasrec.py       SASRec (causal self-attention over item-ID embeddings), full-softmax loss
  sasrec_train.py its training loop on the training core and on-device ranking
  scoring.py      full-ranking Recall/NDCG@K with seen items removed and untouched
  config.py       `config.method` and `config.sasrec` (`configs/beauty.py:sasrec`)
  run.py          a row end to end (`main.py --mode=all` with a baseline config)
"""
