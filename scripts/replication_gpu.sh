#!/usr/bin/env bash
# The replication study of issue 19 (docs/replication.md, configs/studies/replication/) in
# calls of bounded length: scripts/study.sh over that study's tables.
#     bash scripts/replication_gpu.sh [SECONDS] [OUT_DIR] [TABLE ...]
# SECONDS defaults to 480, OUT_DIR to sweeps/replication, the TABLEs (file names without
# .yaml) to every table in the order of docs/replication.md. PYTHON, SWEEP_ARGS and DATA as
# in scripts/study.sh. OUT_DIR must survive between calls (on a lent GPU: inside the checkout,
# which stays while the machine is warm; copy the tables to $OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
budget="${1:-480}"
out="${2:-sweeps/replication}"
shift $(( $# < 2 ? $# : 2 ))
tables=("$@")
if [ ${#tables[@]} -eq 0 ]; then
    tables=(conventions_n2 conventions_n10 js_n10 schedules_n10 adaptive_n10 sizes)
fi
exec bash scripts/study.sh "$budget" "$out" $(printf "configs/studies/replication/%s.yaml " "${tables[@]}")
