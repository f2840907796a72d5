#!/usr/bin/env bash
# One GPU lease after the README's first install call (`bash .gpu/install.sh`, carrying .gpu;
# slim the tree for it with `bash tools/gpu/stash.sh out`, and `stash.sh in` after it):
#
#   start: (second call, carrying .whl) installs the extra wheels into /tmp/site, copies the
#          tree to /tmp/tree (the lease runs from a frozen copy: later calls carry other trees),
#          detaches `tools/gpu/parametric_run.py --root /tmp/run` there and polls it;
#   poll:  (every later call) keeps the machine warm while the campaign runs and prints its
#          progress; with `collect` (or once the campaign has ended) it gathers the results
#          into $OUT: results.tgz, the new checkpoints (best on val, the training's last
#          weights, the refit; one over 15 MiB comes in pieces: join them with
#          `cat F.part* > F`), lease_logs.tgz (the campaign's stdout, refit.json).
#
#   bash tools/gpu/lease.sh start TRAIN_MIN MAX_MIN POLL_S [parametric_run.py arguments...]
#   bash /tmp/tree/tools/gpu/lease.sh poll POLL_S [collect]
#
# parametric_run.py's defaults are the recipe that shipped the current checkpoint; start adds
# --train-minutes TRAIN_MIN, --max-steps (TRAIN_MIN x 66, run 25's pace: the LR schedule's
# length; not when the arguments name their own), --max-minutes MAX_MIN and --no-profile.
# Example (run 25):
#   bash tools/gpu/lease.sh start 11 21.5 530
# A poll call must return before the device tool's per-call limit (600 s): POLL_S <= 540.
# LEASE_DRY_RUN=1: start prints the campaign's command line and does nothing else.
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# the campaign's root on the lent machine (its /tmp; nothing of the repo's); LEASE_RUN and
# LEASE_POLL_S (seconds between looks) only for tests
run=${LEASE_RUN:-/tmp/run}
log=$run.log

poll() {
    local limit=$1 final=${2:-0} t0 elapsed
    t0=$(date +%s)
    while :; do
        sleep "${LEASE_POLL_S:-20}"
        elapsed=$(( $(date +%s) - t0 ))
        echo "--- $(date +%T) +${elapsed}s"
        tail -n 4 "$log"
        ls "$run"/runs/*/metrics.jsonl >/dev/null 2>&1 \
            && tail -n 1 "$run"/runs/*/metrics.jsonl | cut -c1-300
        grep -q "campaign ended" "$log" && { final=collect; break; }
        [ "$elapsed" -ge "$limit" ] && break
    done
    echo "=== campaign log (tail)"
    tail -n 60 "$log"
    command -v nvidia-smi > /dev/null \
        && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
    if [ "$final" = collect ]; then
        # $repo: /tmp/tree on the lent machine (poll runs the frozen copy's script)
        (cd "$repo" && PYTHONPATH="/tmp/site:$repo" python3 -c "import sys; from pathlib import Path; \
sys.path.insert(0, 'tools/gpu'); from campaign import collect; collect(Path('$run'))")
        cp "$run/final/results.tgz" "$OUT/"
        # every file the run exported (parametric_run.py's export_names, REFIT_EXPORT) lies
        # in the run's folder; one comes back whole up to 16 MiB, a larger one in pieces
        for path in "$run"/*.pt; do
            [ -f "$path" ] || continue
            f=$(basename "$path")
            [ "$f" = refit.pt ] && continue  # REFIT_TRAINING: its export is the refit's file
            if [ "$(stat -c %s "$run/$f")" -gt $((15 * 1024 * 1024)) ]; then
                split -b 15M -d "$run/$f" "$OUT/$f.part"
            else
                cp "$run/$f" "$OUT/"
            fi
        done
        cp "$log" "$run/campaign_stdout.log"
        tar -C "$run" -czf "$OUT/lease_logs.tgz" campaign_stdout.log \
            $( [ -f "$run/refit.json" ] && echo refit.json )
    fi
    ls -la "$OUT"
}

start() {
    local train_min=$1 max_min=$2 poll_s=$3 steps
    shift 3
    local num='^[0-9]+([.][0-9]+)?$'
    for v in "$train_min" "$max_min" "$poll_s"; do
        [[ $v =~ $num ]] || { echo "lease.sh: '$v' is not a number of minutes/seconds" >&2; exit 2; }
    done
    steps=(--max-steps "$(python3 -c "print(int($train_min * 66))")")
    local arg
    for arg in "$@"; do  # a recipe that names its schedule's length keeps it, once
        [[ $arg == --max-steps || $arg == --max-steps=* ]] && steps=()
    done
    local cmd=(python3 tools/gpu/parametric_run.py --root "$run" --train-minutes "$train_min"
               "${steps[@]}" --max-minutes "$max_min" --no-profile "$@")
    if [ ! -f "$repo/sahmr/checkpoints/sahmr_small.pt" ]; then
        echo "lease.sh: no shipped checkpoint in the tree: run 'bash tools/gpu/stash.sh in'" >&2
        exit 2
    fi
    if [ "${LEASE_DRY_RUN:-0}" = 1 ]; then
        echo "${cmd[*]}"
        return 0
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$repo"/.whl/*.whl || exit 3
    rm -rf /tmp/tree && mkdir -p /tmp/tree
    (cd "$repo" && tar --exclude=./.gpu --exclude=./.whl --exclude=./.git -cf - .) \
        | tar -C /tmp/tree -xf -
    cd /tmp/tree || exit 3
    export PYTHONPATH=/tmp/site:/tmp/tree
    python3 -c "from sahmr.geometry.raycast import fast_raycast_available as f; \
import spconv, smplx; print('embree', f())" || exit 4
    setsid nohup "${cmd[@]}" > "$log" 2>&1 < /dev/null &
    sleep 5
    poll "$poll_s"
}

case "${1:-}" in
    start) shift; [ $# -ge 3 ] || { echo "usage: $0 start TRAIN_MIN MAX_MIN POLL_S [args...]" >&2; exit 2; }; start "$@" ;;
    poll) shift; [ $# -ge 1 ] || { echo "usage: $0 poll POLL_S [collect]" >&2; exit 2; }; poll "$@" ;;
    *) echo "usage: $0 start TRAIN_MIN MAX_MIN POLL_S [parametric_run args...] | poll POLL_S [collect]" >&2; exit 2 ;;
esac
