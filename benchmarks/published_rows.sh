#!/usr/bin/env bash
# The results table's generative rows (the presets of configs/presets.py) on one GPU: one
# `python -m r3vae_jax.main --mode=all` process per dataset x method x seed, all at once, each
# holding a slice of GPU memory. Every row's results.json carries both protocols (seen items
# removed and the full ranking).
#
#   OUT=/tmp/rows BEAUTY_NPY=/path/beauty_minilm.npy bash benchmarks/published_rows.sh [budget s]
#
# DATASETS (default "beauty sports toys"), METHODS (default "r3vae rqvae diger") and SEEDS
# (default "0 1 2") pick the rows; Beauty reads the MiniLM vectors of BEAUTY_NPY, Sports and Toys
# their interactions-svd default. Every row stops training `budget` seconds (default 480) after
# the rows start (`train.stop_at`), then evaluates.
#
# STAGGER (seconds, default 0) delays the rows of every seed but the first, so they load the
# first seed's programs from the persistent compilation cache (on by default in `main`) instead
# of compiling them at the same time. MEM_FRACTION (default 0.09 of the GPU per row: nine rows,
# e.g. one method on three datasets x three seeds, at once) must hold one row's training (a T5
# step at batch 512 peaks at 3.9 GB on an H100) and decoding.
#
# Writes $OUT/rows.tar.gz: <dataset>_<method>_s<seed>.json (the row's results.json) and .log.
set -u
py=${PYTHON:-python3}
budget=${1:-480}
: "${OUT:?set OUT}" "${BEAUTY_NPY:?set BEAUTY_NPY}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.09}
rows=$(mktemp -d)
stop_at=$(( $(date +%s) + budget ))
launch() {  # dataset method seed
  local name="$1_$2_s$3" vectors=""
  [ "$1" = beauty ] && vectors=",npy --config.vectors.path=$BEAUTY_NPY --config.vectors.label=minilm-text"
  # shellcheck disable=SC2086
  ( timeout "${ROW_TIMEOUT:-$((budget + 150))}" "$py" -m r3vae_jax.main \
      --config="r3vae_jax/configs/$1.py:$2"$vectors --config.seed="$3" \
      --config.train.stop_at="$stop_at" --workdir="$rows/work_$name" --mode=all \
      > "$rows/$name.log" 2>&1
    cp "$rows/work_$name/results.json" "$rows/$name.json" 2>/dev/null ) &
}
first=1
for seed in ${SEEDS:-0 1 2}; do
  if [ "$first" = 0 ] && [ "${STAGGER:-0}" != 0 ]; then sleep "$STAGGER"; STAGGER=0; fi
  first=0
  for dataset in ${DATASETS:-beauty sports toys}; do
    for method in ${METHODS:-r3vae rqvae diger}; do launch "$dataset" "$method" "$seed"; done
  done
done
wait
tar -czf "$OUT/rows.tar.gz" -C "$rows" --exclude='work_*' .
ls "$rows"
