#!/usr/bin/env bash
# The replication study (docs/replication.md) on a GPU, in calls of bounded length: runs the
# study's sweeps in order for at most SECONDS (default 480), then stops them the way Ctrl-C
# does (every running cell checkpointed); the next call resumes where this one stopped.
#     bash scripts/replication_gpu.sh [SECONDS] [OUT_DIR] [TABLE ...]
# OUT_DIR defaults to sweeps/replication; TABLEs default to every table of the study, in the
# order of docs/replication.md; DATA gives the CIFAR-10 JPEG archive when it is not at
# ../shared/data beside the checkout (a new sweep only: a resumed one keeps its own);
# SWEEP_ARGS adds options of `colearn sweep` (e.g. "-j 2
# --pack 9" on a 2-core CPU). OUT_DIR must survive between calls (on a lent GPU: inside the
# checkout, which stays while the machine is warm; copy the tables to $OUT). A sweep stopped
# by the time limit checkpoints within the 120 s grace the limit leaves it. When a call ends, the tables so far are written (results.csv,
# summary.csv, epochs.csv per sweep) and `colearn compare` prints each finished one.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"  # a Python with torch and this project's dependencies
budget="${1:-480}"
out="${2:-sweeps/replication}"
shift $(( $# < 2 ? $# : 2 ))
tables=("$@")
if [ ${#tables[@]} -eq 0 ]; then
    tables=(conventions_n2 conventions_n10 js_n10 schedules_n10 adaptive_n10 sizes)
fi
deadline=$(( SECONDS + budget ))
status=0
mkdir -p "$out"
for table in "${tables[@]}"; do
    left=$(( deadline - SECONDS - 120 ))  # leave the grace period of the stop
    if [ "$left" -lt 30 ]; then
        echo "replication: out of time before $table; rerun to continue" >&2
        break
    fi
    if [ -f "$out/$table/sweep.yaml" ]; then
        args=(--resume "$out/$table")
    else
        args=(--config "configs/studies/replication/$table.yaml" --out "$out/$table")
        if [ -n "${DATA:-}" ]; then
            args+=("data.path=$DATA")
        fi
    fi
    # shellcheck disable=SC2086  # SWEEP_ARGS: words on purpose
    timeout -s INT -k 120 "$left" "$PY" -m colearning sweep "${args[@]}" --no-progress \
        ${SWEEP_ARGS:-}
    code=$?
    [ "$code" -gt "$status" ] && status=$code
    echo "replication: $table exit $code after $(( budget - (deadline - SECONDS) )) s" >&2
    if [ "$code" -eq 0 ]; then
        "$PY" -m colearning compare "$out/$table" || true
    fi
done
exit "$status"
