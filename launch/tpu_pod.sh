#!/usr/bin/env bash
# A TPU pod slice: the same command on every worker; each host feeds its slice of every batch.
#   TPU=my-v5e-32 ZONE=us-west4-a launch/tpu_pod.sh r3vae_jax/configs/beauty.py:r3vae gs://bucket/runs/b
# The repo must be installed on every worker first (pip install -e '.[tpu]').
set -euo pipefail
config=$1; workdir=$2; shift 2
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="cd ~/r3vae_jax && \
  python -m r3vae_jax.main --config=$config --workdir=$workdir --mode=all $*"
