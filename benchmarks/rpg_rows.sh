#!/usr/bin/env bash
# RPG on one GPU: the speed comparison (alone on the GPU), then Beauty/Sports/Toys x 3 seeds and
# a Beauty interactions-svd row, all concurrently (each process holds a slice of GPU memory).
#
#   OUT=/tmp/rpg BEAUTY_NPY=/path/beauty_minilm.npy bash benchmarks/rpg_rows.sh [budget s]
#
# Every row stops training `budget` seconds after the rows start (`train.stop_at`), then
# evaluates.
#
# SEEDS (default "0 1 2") picks the seeds of the three dataset rows; SVD_ROW=0 leaves the Beauty
# interactions-svd row out (it runs with seed 0).
#
# STAGGER (seconds, default 0) delays the rows of every seed but the first: they then load the
# first seed's programs from the persistent compilation cache instead of compiling them at the
# same time (nine processes compiling at once on one GPU machine took ~300 s to a first epoch).
#
# SKIP_SPEED=1 leaves the speed comparison out (when other work shares the GPU). MEM_FRACTION
# (default 0.085 of the GPU per row) must hold a Beauty row's training step, which allocates
# up to 3.9 GiB at batch 256 x 50 positions x 32 digits (0.045 of an H100 ran out of memory).
#
# Writes $OUT/rpg_speed.json (+ .log) and $OUT/rows.tar.gz (one JSON + log per row).
set -u
py=${PYTHON:-python3}
budget=${1:-160}
: "${OUT:?set OUT}" "${BEAUTY_NPY:?set BEAUTY_NPY}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ "${SKIP_SPEED:-0}" != 1 ]; then
  timeout "${SPEED_TIMEOUT:-100}" "$py" -m benchmarks.rpg_speed --out="$OUT/rpg_speed.json" \
    > "$OUT/rpg_speed.log" 2>&1
  echo "speed rc=$?"
fi
unset XLA_PYTHON_CLIENT_PREALLOCATE
export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.085}
rows=$(mktemp -d)
stop_at=$(( $(date +%s) + budget ))
launch() {  # name config-arg seed [flags...]
  local name=$1 arg=$2 seed=$3
  shift 3
  timeout "${ROW_TIMEOUT:-$((budget + 120))}" "$py" -m r3vae_jax.rpg.train \
    --config="r3vae_jax/configs/rpg.py:$arg" --config.seed="$seed" --config.train.stop_at="$stop_at" \
    --workdir="$rows/work_${name}_s$seed" --out="$rows/rpg_${name}_s$seed.json" "$@" \
    > "$rows/rpg_${name}_s$seed.log" 2>&1 &
}
read -ra seeds <<< "${SEEDS:-0 1 2}"
for i in "${!seeds[@]}"; do
  seed=${seeds[$i]}
  [ "$i" = 1 ] && sleep "${STAGGER:-0}"
  launch beauty_minilm beauty,npy "$seed" --config.vectors.path="$BEAUTY_NPY" \
    --config.vectors.label=minilm-text
  launch sports_interactions-svd sports "$seed"
  launch toys_interactions-svd toys "$seed"
done
if [ "${SVD_ROW:-1}" = 1 ]; then launch beauty_interactions-svd beauty,interactions-svd 0; fi
wait
tar -czf "$OUT/rows.tar.gz" -C "$rows" .
ls "$rows"
