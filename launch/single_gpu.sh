#!/usr/bin/env bash
# One GPU host: every local GPU on the `data` mesh axis.
#   launch/single_gpu.sh r3vae_jax/configs/beauty.py:r3vae /tmp/beauty_r3vae [--config.x=y ...]
set -euo pipefail
config=$1; workdir=$2; shift 2
exec python -m r3vae_jax.main --config="$config" --workdir="$workdir" --mode=all "$@"
