#!/usr/bin/env bash
# A TPU pod slice: the same command on every worker; each host feeds its slice of every batch.
# jax.distributed.initialize() in main reads the TPU metadata of each worker: process id = the
# worker number, process count = the slice's workers, coordinator = worker 0 at port 8482.
# The workdir must be on storage every worker sees (gs://bucket/...): only process 0 writes
# files, and every process reads them.
#   TPU=my-v5e-32 ZONE=us-west4-a launch/tpu_pod.sh r3vae_jax/configs/beauty.py:r3vae gs://bucket/runs/b
# The repo must be installed on every worker first (pip install -e '.[tpu]').
# Dry run (prints each worker's JAX process, the workdir and the command; runs nothing):
#   DRY_RUN=1 TPU=my-v5e-32 ZONE=us-west4-a WORKERS=8 launch/tpu_pod.sh CONFIG gs://bucket/runs/b
set -euo pipefail
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 2 ]]; then
  echo "usage: $0 [--dry-run] CONFIG WORKDIR [--config.x=y ...]" >&2; exit 2
fi
config=$1; workdir=$2; shift 2
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE to its zone}"
remote="cd ~/r3vae_jax && python -m r3vae_jax.main --config=${config@Q} --workdir=${workdir@Q} --mode=all"
for arg in "$@"; do remote+=" ${arg@Q}"; done
ssh=(gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$remote")

if [[ "${DRY_RUN:-0}" != "0" ]]; then
  workers=${WORKERS:?dry run: set WORKERS to the number of workers of $TPU}
  echo "tpu: $TPU ($ZONE), $workers workers = $workers JAX processes; coordinator worker 0:8482; workdir $workdir"
  case "$workdir" in
    gs://*) ;;
    *) echo "note: $workdir is not on GCS: it must be a filesystem mounted on every worker" ;;
  esac
  for (( w=0; w<workers; w++ )); do
    echo "host=worker-$w process_id=$w process_count=$workers coordinator=worker-0:8482 workdir=$workdir"
    echo "  $remote"
  done
  echo "would run: ${ssh[*]@Q}"
  exit 0
fi
"${ssh[@]}"
