"""Does choosing a fused pair's mixture weight on validation beat uniform weights on test?

  python results/fusion_weights.py OUT.json RUN_A+RUN_B [RUN_C+RUN_D ...]

RUN is a ranking prefix `<dir>/<row>` with `<row>.valid_ranking.npz` and `<row>.test_ranking.npz`
(`launch/paper_rows.sh` output). For each pair, the weight w of B (1 - w of A) runs over
0, 0.1, ..., 1; per w, NDCG@10 of the mixture (`fusion.mixture`) on validation and on test. The
weight validation picks (ties: the one nearest 0.5) is scored on test beside the uniform
mixture's 0.5 and the best weight in hindsight. At w = 0 the mixture is A's ranking with B's
items after it at mass 0 (they fill places that A's seen-item filtering left empty), so it may
score a little above A alone.
"""
import sys

import numpy as np

from r3vae_jax import io
from r3vae_jax.recommender import fusion
from r3vae_jax.recommender import ranking

GRID = np.round(np.linspace(0.0, 1.0, 11), 2)


def ndcg_curve(prefixes: list[str], split: str) -> list[float]:
  """NDCG@10 of the pair's mixture at each weight of GRID on `split`."""
  runs = [fusion.load_ranking(f"{p}.{split}_ranking.npz") for p in prefixes]
  curve = []
  for w in GRID:
    fused = fusion.mixture(runs, [1.0 - w, w])
    curve.append(ranking.metrics_of(fused.items, fused.targets, None, (10,))["ndcg@10"])
  return curve


def study_pair(pair: str) -> dict:
  """The validation and test curves of one `A+B` pair and what validation's choice gives."""
  prefixes = pair.split("+")
  if len(prefixes) != 2:
    raise SystemExit(f"{pair}: expected RUN_A+RUN_B (two ranking prefixes)")
  valid, test = ndcg_curve(prefixes, "valid"), ndcg_curve(prefixes, "test")
  best = max(valid)
  chosen = min((i for i, v in enumerate(valid) if v == best), key=lambda i: abs(GRID[i] - 0.5))
  uniform = int(np.flatnonzero(GRID == 0.5)[0])
  return {"runs": prefixes, "weights_of_b": GRID.tolist(), "valid_ndcg@10": valid,
          "test_ndcg@10": test, "chosen_weight": float(GRID[chosen]),
          "test_at_chosen": test[chosen], "test_at_uniform": test[uniform],
          "test_best": max(test), "test_best_weight": float(GRID[int(np.argmax(test))])}


def main(out: str, pairs: list[str]) -> None:
  studies = [study_pair(p) for p in pairs]
  for s in studies:
    print(f"{' + '.join(s['runs'])}: validation picks w={s['chosen_weight']:.1f} -> test "
          f"{s['test_at_chosen']:.4f}; uniform {s['test_at_uniform']:.4f}; best in hindsight "
          f"{s['test_best']:.4f} (w={s['test_best_weight']:.1f})")
  io.write_json(out, {"kind": "fusion_weights", "commit": io.source_commit(),
                      "command": " ".join(["python"] + sys.argv), "pairs": studies})


if __name__ == "__main__":
  if len(sys.argv) < 3:
    raise SystemExit(__doc__)
  main(sys.argv[1], sys.argv[2:])
