#!/usr/bin/env bash
# Runs rows of the paper table (prepare -> vectors -> tokenize -> train -> evaluate), one
# results JSON per row, copied to OUTDIR as <dataset>_<tokenizer>[-<variant>]_<vectors>_s<seed>.json.
#
#   launch/paper_rows.sh OUTDIR beauty:r3vae:0 beauty:rqvae:0 sports:r3vae:0 ... [-- --config.x=y ...]
#
# A row is dataset:preset[+ablation...]:seed[:vectors] (r3vae_jax/configs/presets.py, ablations.py).
# With $VECTORS_DIR set, text-vector rows of Beauty and
# LastFM read <dataset>_minilm.npy from there (text vectors computed on another machine, labelled
# minilm-text) instead of running the text encoder. Extra flags after `--` go to every row.
#
# JOBS=N runs N rows at once on the same accelerator (each gets 1/N of its memory; compiling on
# the host overlaps with the others' device work). Each row's log goes to OUTDIR/<row>.log (with
# JOBS=1 also to the terminal). Rows share a persistent XLA compilation cache
# ($JAX_COMPILATION_CACHE_DIR, default under WORKROOT), so seeds of one configuration compile
# once, provided they do not all compile at the same time: on a cold cache, six rows
# and then three DIGER rows compiling at once on one H100 trained nothing in over
# 6 minutes, while one DIGER row alone compiles its step in ~2.5 minutes, and two first rows of
# different datasets compiling at once took ~5 minutes each. So with JOBS > 1 the
# first row of each program (dataset:tokenizer[+variant]:vectors; seeds share programs) runs
# without another row starting until its trainer has logged its first epoch (or it ended): one
# cold compilation at a time, while the seeds of compiled programs start from the cache
# (STAGGER=0: all at once). ROW_TIMEOUT=S: S seconds after a row starts (for the
# rows of the first batch, after the first row starts), its
# trainer saves a checkpoint and stops (`config.train.stop_at`, as on SIGTERM), and `--mode=all`
# still evaluates the best one and writes results.json (relaunching the row later trains on); a
# SIGTERM instead would also cut an evaluation under way. Each row's validation and test rankings
# are copied beside its JSON as <row>.{valid,test}_ranking.npz, for `python -m r3vae_jax.fuse`.
set -euo pipefail
out=$1; shift
rows=(); extra=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--" ]; then shift; extra=("$@"); break; fi
  rows+=("$1"); shift
done
mkdir -p "$out"
jobs_max=${JOBS:-1}
started=0
compiled="|"  # |-separated programs whose first row has logged an epoch (or ended)
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-${WORKROOT:-/tmp/r3vae_rows}/xla_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-1}
if [ "$jobs_max" -gt 1 ]; then
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(python3 -c "print(round(0.9 / $jobs_max, 3))")}
fi

row_name() {  # dataset tokenizer seed vectors -> a file name of [A-Za-z0-9._-] ("+" -> "-")
  local tokenizer=${2//+/-}
  echo "${1}_${tokenizer}_${4:-default}_s${3}"
}

epoch_logged() {  # log -> whether the recommender or DIGER trainer has finished an epoch (of
  # this launch: a relaunch resumes at a later epoch; DIGER's "epoch 0" line comes before training)
  grep -qE "recommender: epoch [0-9]+ took|diger epoch [1-9][0-9]*:" "$1" 2>/dev/null
}

run_row() {  # dataset tokenizer seed vectors [start: Unix time ROW_TIMEOUT counts from]
  local dataset=$1 tokenizer=$2 seed=$3 vectors=$4 start=${5:-$(date +%s)}
  local arg=$tokenizer${vectors:+,$vectors}
  local flags=(--config.seed="$seed")
  local npy=${VECTORS_DIR:-}/${dataset}_minilm.npy
  if [ -z "$vectors" ] && [ -n "${VECTORS_DIR:-}" ] && [ -f "$npy" ]; then
    arg=$tokenizer,npy
    flags+=(--config.vectors.path="$npy" --config.vectors.label=minilm-text)
  fi
  local name
  name=$(row_name "$dataset" "$tokenizer" "$seed" "$vectors")
  local workdir=${WORKROOT:-/tmp/r3vae_rows}/$name
  echo "=== $dataset:$tokenizer:$seed${vectors:+:$vectors} -> $workdir"
  [ -n "${ROW_TIMEOUT:-}" ] && flags+=(--config.train.stop_at="$(( start + ROW_TIMEOUT ))")
  rm -f "$workdir/results.json"
  python3 -m r3vae_jax.main --config="r3vae_jax/configs/$dataset.py:$arg" \
      --workdir="$workdir" --mode=all "${flags[@]}" "${extra[@]}" || echo "row $name: exit $?"
  if [ -f "$workdir/results.json" ]; then
    cp "$workdir/results.json" "$out/$name.json"
    for split in valid test; do  # what `python -m r3vae_jax.fuse` combines across rows
      if [ -f "$workdir/recommender/${split}_ranking.npz" ]; then
        cp "$workdir/recommender/${split}_ranking.npz" "$out/$name.${split}_ranking.npz"
      fi
    done
  else
    echo "row $name failed (no results.json)"
  fi
}

for row in "${rows[@]}"; do
  IFS=: read -r dataset tokenizer seed vectors <<< "$row"
  if [ "$jobs_max" -le 1 ]; then  # on the terminal and in the row's log
    run_row "$dataset" "$tokenizer" "$seed" "${vectors:-}" 2>&1 \
        | tee "$out/$(row_name "$dataset" "$tokenizer" "$seed" "${vectors:-}").log"
    continue
  fi
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  log=$out/$(row_name "$dataset" "$tokenizer" "$seed" "${vectors:-}").log
  started=$((started + 1)); start=""  # the first batch's deadlines count from its first row
  if [ "$started" -le "$jobs_max" ]; then
    batch_start=${batch_start:-$(date +%s)}; start=$batch_start
  fi
  run_row "$dataset" "$tokenizer" "$seed" "${vectors:-}" "$start" > "$log" 2>&1 &
  program="$dataset:$tokenizer:${vectors:-}"
  if [[ $compiled != *"|$program|"* ]]; then
    if [ "${STAGGER:-1}" = 1 ]; then  # compiles alone
      while kill -0 $! 2>/dev/null && ! epoch_logged "$log"; do sleep 1; done
    fi
    compiled+="$program|"
  fi
done
wait
