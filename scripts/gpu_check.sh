#!/usr/bin/env bash
# The prepared GPU check (see scripts/gpu_check.py): one command, under 8 minutes on an
# H100/H200, no dataset or internet needed. On a lent GPU machine:
#     bash scripts/gpu_check.sh --out "$OUT/gpu_check"
# and on a CPU, at toy sizes (what CI runs):
#     bash scripts/gpu_check.sh --device cpu --tiny --out /tmp/gpu_check
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
