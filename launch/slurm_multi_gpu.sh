#!/usr/bin/env bash
# Several GPU nodes under SLURM, one process per GPU; jax.distributed.initialize() in main picks
# up the SLURM environment. The workdir must be on a filesystem every node sees.
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 launch/slurm_multi_gpu.sh \
#       r3vae_jax/configs/beauty.py:r3vae /shared/runs/beauty_r3vae [--config.x=y ...]
#SBATCH --job-name=r3vae_jax
#SBATCH --time=04:00:00
set -euo pipefail
config=$1; workdir=$2; shift 2
srun python -m r3vae_jax.main --config="$config" --workdir="$workdir" --mode=all "$@"
