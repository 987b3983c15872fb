#!/usr/bin/env bash
# Several GPU nodes under SLURM, one process per GPU. jax.distributed.initialize() in main reads
# the SLURM environment of each task: process id = SLURM_PROCID, process count = SLURM_NTASKS,
# GPU = SLURM_LOCALID, coordinator = the first node of the step at port 61440 + job id % 4096.
# The workdir must be on storage every node sees (a shared filesystem or gs://...): only
# process 0 writes files, and every process reads them.
#   sbatch --nodes=2 --gpus-per-node=8 --ntasks-per-node=8 launch/slurm_multi_gpu.sh \
#       r3vae_jax/configs/beauty.py:r3vae /shared/runs/beauty_r3vae [--config.x=y ...]
# Dry run (prints each task's host, JAX process, coordinator and command; runs nothing):
#   DRY_RUN=1 NODES="gpu001 gpu002" TASKS_PER_NODE=8 launch/slurm_multi_gpu.sh CONFIG WORKDIR
#   (inside an allocation NODES, TASKS_PER_NODE and JOB_ID default to SLURM's values)
#SBATCH --job-name=r3vae_jax
#SBATCH --time=04:00:00
set -euo pipefail
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--dry-run] CONFIG WORKDIR [--config.x=y ...]" >&2; exit 2
fi
config=$1; workdir=$2; shift 2
command=(python -m r3vae_jax.main --config="$config" --workdir="$workdir" --mode=all "$@")

if [[ "${DRY_RUN:-0}" != "0" ]]; then
  if [[ -z "${NODES:-}" && -n "${SLURM_JOB_NODELIST:-}" ]]; then
    NODES=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | tr '\n' ' ')
  fi
  read -r -a nodes <<< "${NODES:-}"
  per_node=${TASKS_PER_NODE:-${SLURM_NTASKS_PER_NODE:-}}
  job=${JOB_ID:-${SLURM_JOB_ID:-0}}
  if [[ ${#nodes[@]} -eq 0 || -z "$per_node" ]]; then
    echo "error: dry run needs NODES (space-separated hostnames) and TASKS_PER_NODE" >&2; exit 2
  fi
  total=$(( ${#nodes[@]} * per_node ))
  coordinator="${nodes[0]}:$(( job % 4096 + 61440 ))"
  echo "slurm: ${#nodes[@]} nodes x $per_node tasks = $total JAX processes; coordinator $coordinator; workdir $workdir"
  case "$workdir" in
    *://*) ;;
    *) echo "note: $workdir must be a filesystem mounted on every node" ;;
  esac
  id=0
  for node in "${nodes[@]}"; do
    for (( local=0; local<per_node; local++ )); do
      echo "host=$node process_id=$id process_count=$total local_device=$local coordinator=$coordinator workdir=$workdir"
      echo "  SLURM_PROCID=$id SLURM_NTASKS=$total SLURM_LOCALID=$local ${command[*]@Q}"
      id=$(( id + 1 ))
    done
  done
  exit 0
fi
srun "${command[@]}"
