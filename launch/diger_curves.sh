#!/usr/bin/env bash
# DIGER usage curves: the four noise decays (frequency, learned_sigma, gumbel, none) trained
# jointly for EPOCHS epochs each from ONE pretrained RQ-VAE, each into its own workdir, then
# collected into results/diger_curves_<dataset>.json with a printed table
# (r3vae_jax/diger/curves.py).
#
#   DATASET=beauty EPOCHS=2 launch/diger_curves.sh [--config.x=y ...]
#
# Environment (all optional):
#   DATASET     config in r3vae_jax/configs/ (default synthetic = default.py)
#   EPOCHS      joint epochs per decay (default 3)
#   MODES       decays, in order (default "frequency learned_sigma gumbel none")
#   WORKROOT    one workdir per decay under it (default /tmp/diger_curves_<dataset>); use a fresh
#               one when EPOCHS or flags change (a workdir refuses another run's checkpoints)
#   PRETRAINED  a workdir holding data/, vectors.npy(+json) and tokenizer/rqvae_ckpt (e.g. a
#               finished --config=...:diger run); default: WORKROOT/pretrain, made once here
#               (prepare, vectors, tokenize = RQ-VAE pretraining) and reused on reruns
#   VECTORS_DIR as launch/paper_rows.sh: <dataset>_minilm.npy there replaces the text encoder
#   CURVES_OUT  output JSON (default results/diger_curves_<dataset>.json)
#   JAX_COMPILATION_CACHE_DIR  persistent compile cache (default WORKROOT/jax_cache): the decay
#               is an argument of the compiled step, so the first decay's programs (train step,
#               beam search) serve the other three without compiling again
#   PARALLEL    1: train the decays at the same time on the one accelerator (each process gets
#               XLA_PYTHON_CLIENT_MEM_FRACTION=MEM_FRACTION, default 0.2; logs in
#               <workdir>/train.log); the compiles then overlap and small steps share the GPU.
#               Default 0: one after another.
# Validation runs every epoch (--config.train.eval_every_epochs=1; a flag below may override it).
# Flags after the script name go to every stage (pretraining included), e.g.
# --config.rqvae.epochs=60 --config.train.batch_size=512.
set -euo pipefail
dataset=${DATASET:-synthetic}
epochs=${EPOCHS:-3}
read -r -a modes <<< "${MODES:-frequency learned_sigma gumbel none}"
root=${WORKROOT:-/tmp/diger_curves_$dataset}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$root/jax_cache}
config_file=r3vae_jax/configs/$dataset.py
[ "$dataset" = synthetic ] && config_file=r3vae_jax/configs/default.py
arg=diger; flags=(--config.train.eval_every_epochs=1 "$@")
npy=${VECTORS_DIR:-}/${dataset}_minilm.npy
if [ -n "${VECTORS_DIR:-}" ] && [ -f "$npy" ]; then
  arg=diger,npy
  flags+=(--config.vectors.path="$npy" --config.vectors.label=minilm-text)
fi
run() { python3 -m r3vae_jax.main --config="$config_file:$arg" "${flags[@]}" "$@"; }
mkdir -p "$root"
start=$SECONDS

pre=${PRETRAINED:-$root/pretrain}
if [ ! -d "$pre/tokenizer/rqvae_ckpt" ]; then
  [ -n "${PRETRAINED:-}" ] && { echo "error: $pre/tokenizer/rqvae_ckpt missing" >&2; exit 2; }
  echo "=== pretraining the RQ-VAE once -> $pre"
  for stage in prepare vectors tokenize; do run --workdir="$pre" --mode="$stage"; done
fi
echo "=== pretrained tokenizer ready ($((SECONDS - start)) s)"

train_mode() {  # mode workdir
  run --workdir="$2" --mode=train --config.diger.decay="$1" --config.train.epochs="$epochs" \
      || echo "=== $1 failed (its curve will say so)"
}
for mode in "${modes[@]}"; do
  w=$root/$mode
  mkdir -p "$w/tokenizer"
  for f in data vectors.npy vectors.json tokenizer/rqvae_ckpt; do
    [ -e "$w/$f" ] || { [ -e "$pre/$f" ] && cp -r "$pre/$f" "$w/$f"; } || true
  done
  echo "=== $mode: $epochs epochs -> $w ($((SECONDS - start)) s so far)"
  if [ "${PARALLEL:-0}" = 1 ]; then
    XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.2} train_mode "$mode" "$w" \
        > "$w/train.log" 2>&1 &
  else
    train_mode "$mode" "$w"
  fi
done
wait

python3 -m r3vae_jax.diger.curves --root="$root" --dataset="$dataset" \
    --modes="$(IFS=,; echo "${modes[*]}")" ${CURVES_OUT:+--out="$CURVES_OUT"}
echo "=== diger curves done in $((SECONDS - start)) s"
