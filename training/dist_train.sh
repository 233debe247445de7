#!/usr/bin/env bash
# Multi-process training: training/dist_train.sh CONFIG NUM_PROCESSES [train.py options ...]
#   training/dist_train.sh training/configs/priorocc-r50.yaml 8 --work-dir work_dirs/priorocc-r50
# One process per GPU (nccl); on a machine without CUDA the processes share the CPU (gloo).
# PORT (default 29500; 0: a free port, torchrun --standalone) and PYTHON (default: the repo's .venv,
# else python3) can be set.
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: $0 CONFIG NUM_PROCESSES [train.py options ...]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
PORT=${PORT:-29500}
if [ "$PORT" = 0 ]; then
  RDZV=(--standalone)  # the rendezvous store takes a free port on this host
else
  RDZV=(--master_addr 127.0.0.1 --master_port "$PORT")
fi
exec "$PYTHON" -m torch.distributed.run --nnodes 1 --nproc_per_node "$NPROC" "${RDZV[@]}" \
  "$HERE/train.py" "$CONFIG" "$@"
