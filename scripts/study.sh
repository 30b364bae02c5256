#!/usr/bin/env bash
# A study of several sweeps, run in calls of bounded length that survive interruptions:
#     bash scripts/study.sh SECONDS OUT_DIR SWEEP.yaml [SWEEP.yaml ...]
# runs each sweep file into OUT_DIR/<file name without .yaml>, in order, for at most SECONDS in
# all, then stops the running sweep the way Ctrl-C does (every running cell checkpointed, within
# the 120 s grace the limit leaves it); the next call with the same OUT_DIR resumes where this
# one stopped (a finished sweep is only re-tabled). Keep OUT_DIR outside the work tree (e.g.
# ~/colearning-study): run directories are never committed.
# Environment:
#   PYTHON      a Python with torch and this project (default: python3)
#   SWEEP_ARGS  options of `colearn sweep`, as words (e.g. "-j 2 --pack 3"; "-j 1" on one core)
#   DATA        the CIFAR-10 JPEG archive when it is not at ../shared/data beside the checkout
#               (a new sweep only: a resumed one keeps its own)
#   DISTILL     non-empty: after a sweep finishes, distill every finished cell with `colearn
#               distill` into OUT_DIR/<sweep>-distilled/<cell> (the hard-label baseline only
#               for DISTILL=baseline), evaluate the student under the corruptions when the
#               teacher was (train.evaluate_shift) and rewrite its distill.json
# Nice it on a shared machine: nice -n 10 bash scripts/study.sh 3600 ~/colearning-study ...
# When a sweep finishes, `colearn compare` prints its table. Exit: the worst sweep's code.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
if [ $# -lt 3 ]; then
    echo "usage: bash scripts/study.sh SECONDS OUT_DIR SWEEP.yaml [SWEEP.yaml ...]" >&2
    exit 2
fi
budget="$1"
out="$2"
shift 2
deadline=$(( SECONDS + budget ))
status=0
mkdir -p "$out"

left() { echo $(( deadline - SECONDS - 120 )); }  # leave the grace period of the stop

distill_cells() {  # $1: finished sweep directory
    local sweep="$1" cell student code
    local baseline=(--no-baseline)
    [ "${DISTILL}" = baseline ] && baseline=(--baseline)
    for cell in "$sweep"/cells/*/; do
        cell="${cell%/}"
        [ -f "$cell/summary.json" ] || continue
        student="$sweep-distilled/$(basename "$cell")"
        [ -f "$student/distill.json" ] && [ -d "$student/evaluation" ] && continue
        if [ "$(left)" -lt 30 ]; then
            echo "study: out of time while distilling $sweep; rerun to continue" >&2
            return 130
        fi
        timeout -s INT -k 120 "$(left)" "$PY" -m colearning distill "$cell" --out "$student" \
            "${baseline[@]}" --no-progress -q || return $?
        if [ -d "$cell/evaluation" ]; then
            timeout -s INT -k 120 "$(left)" "$PY" -m colearning evaluate "$student" \
                --shift corruptions --calibration --no-progress >/dev/null || return $?
            if [ "${DISTILL}" = baseline ] && [ ! -d "$student-baseline/evaluation" ]; then
                timeout -s INT -k 120 "$(left)" "$PY" -m colearning evaluate \
                    "$student-baseline" --shift corruptions --calibration --no-progress \
                    >/dev/null || return $?
            fi
            # again, now that the students' shift summaries exist (finished runs: no training)
            "$PY" -m colearning distill "$cell" --out "$student" "${baseline[@]}" \
                --no-progress -q || return $?
        fi
    done
}

for file in "$@"; do
    table="$(basename "$file" .yaml)"
    if [ "$(left)" -lt 30 ]; then
        echo "study: out of time before $table; rerun to continue" >&2
        status=$(( status > 130 ? status : 130 ))
        break
    fi
    if [ -f "$out/$table/sweep.yaml" ]; then
        args=(--resume "$out/$table")
    else
        args=(--config "$file" --out "$out/$table")
        [ -n "${DATA:-}" ] && args+=("data.path=$DATA")
    fi
    started=$SECONDS
    # shellcheck disable=SC2086  # SWEEP_ARGS: words on purpose
    timeout -s INT -k 120 "$(left)" "$PY" -m colearning sweep "${args[@]}" --no-progress \
        ${SWEEP_ARGS:-}
    code=$?
    echo "study: $table exit $code after $(( SECONDS - started )) s" >&2
    if [ "$code" -eq 0 ] && [ -n "${DISTILL:-}" ]; then
        started=$SECONDS
        distill_cells "$out/$table"
        code=$?
        echo "study: $table distilled, exit $code after $(( SECONDS - started )) s" >&2
    fi
    [ "$code" -gt "$status" ] && status=$code
    if [ "$code" -eq 0 ]; then
        "$PY" -m colearning compare "$out/$table" || true
    elif [ "$code" -ge 128 ]; then  # interrupted (Ctrl-C, SIGTERM, its time): stop here
        echo "study: stopped at $table; rerun to continue" >&2
        break
    fi
done
exit "$status"
