#!/usr/bin/env bash
# Runs rows of the paper table (prepare -> vectors -> tokenize -> train -> evaluate), one
# results JSON per row, copied to OUTDIR as <dataset>_<tokenizer>_<vectors>_s<seed>.json.
#
#   launch/paper_rows.sh OUTDIR beauty:r3vae:0 beauty:rqvae:0 sports:r3vae:0 ... [-- --config.x=y ...]
#
# A row is dataset:tokenizer:seed[:vectors]. With $VECTORS_DIR set, text-vector rows of Beauty and
# LastFM read <dataset>_minilm.npy from there (text vectors computed on another machine, labelled
# minilm-text) instead of running the text encoder. Extra flags after `--` go to every row.
set -euo pipefail
out=$1; shift
rows=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  rows+=("$1"); shift
done
mkdir -p "$out"
for row in "${rows[@]}"; do
  IFS=: read -r dataset tokenizer seed vectors <<< "$row"
  arg=$tokenizer${vectors:+,$vectors}
  flags=(--config.seed="$seed")
  npy=${VECTORS_DIR:-}/${dataset}_minilm.npy
  if [ -z "${vectors:-}" ] && [ -n "${VECTORS_DIR:-}" ] && [ -f "$npy" ]; then
    arg=$tokenizer,npy
    flags+=(--config.vectors.path="$npy" --config.vectors.label=minilm-text)
  fi
  workdir=${WORKROOT:-/tmp/r3vae_rows}/${dataset}_${tokenizer}_${vectors:-default}_s${seed}
  echo "=== $row -> $workdir"
  python3 -m r3vae_jax.main --config="r3vae_jax/configs/$dataset.py:$arg" --workdir="$workdir" \
      --mode=all "${flags[@]}" "${extra[@]}" || { echo "row $row failed"; continue; }
  cp "$workdir/results.json" "$out/${dataset}_${tokenizer}_${vectors:-default}_s${seed}.json"
done
