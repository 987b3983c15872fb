"""Fuses every pair of seeds of each row in a folder of `launch/paper_rows.sh` output, and all of
a row's seeds when it has three or more.

  python experiments/fuse_pairs.py ROWS_DIR [OUT_DIR]

ROWS_DIR holds `<row>_s<seed>.json` with `<row>_s<seed>.test_ranking.npz` beside it; for each row
with two or more seeds, each pair a < b is fused on test (`python -m r3vae_jax.fuse`) and written
to OUT_DIR (default ROWS_DIR) as `<row>_fused_s<a>+<b>.json`, which `results/make_tables.py`
shows as the row "<method> fused×2"; with M >= 3 seeds also `<row>_fused_s<a>+<b>+...json`
("fused×M").
"""
import collections
import itertools
import os
import re
import sys

from r3vae_jax import fuse
from r3vae_jax import io

RANKING = re.compile(r"(?P<row>.+)_s(?P<seed>\d+)\.test_ranking\.npz")


def fuse_pairs(rows_dir: str, out_dir: str) -> list[str]:
  """Writes one fusion JSON per pair of seeds of each row, and one of all its seeds when there
  are three or more; returns their paths."""
  seeds = collections.defaultdict(dict)
  for name in sorted(os.listdir(rows_dir)):
    match = RANKING.fullmatch(name)
    if match:
      seeds[match["row"]][int(match["seed"])] = os.path.join(rows_dir, name)
  written = []
  for row, files in sorted(seeds.items()):
    groups = list(itertools.combinations(sorted(files), 2))
    if len(files) >= 3:
      groups.append(tuple(sorted(files)))
    for group in groups:
      result = fuse.fuse_runs([files[s] for s in group], "test", None, (5, 10))
      path = os.path.join(out_dir, f"{row}_fused_s{'+'.join(map(str, group))}.json")
      io.write_json(path, result)
      members = " ".join(f"{m['ndcg@10']:.4f}" for m in result["members"])
      print(f"{path}: N@10 {members} -> {result['fused']['ndcg@10']:.4f}")
      written.append(path)
  return written


if __name__ == "__main__":
  if len(sys.argv) not in (2, 3):
    raise SystemExit(__doc__)
  fuse_pairs(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else sys.argv[1])
