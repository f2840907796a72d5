#!/usr/bin/env bash
# What holds a lease at a third of the training step's pace (docs/results.md, section (w))?
# Run on a lent GPU from the repository root after `bash .gpu/install.sh`, carrying .whl1
# (embreex, for the generator): 1,200 val frames generated there, then METRO small's compiled
# step timed by tools/benchmark_train.py on them, five ways:
#   alone                  - the tool's figure (3,099 samples/s on an H200, 2026-12-06)
#   load15                 - 15 memory-streaming processes at nice 15 beside it (--cpu-load):
#                            the lease's generator workers, CPU only
#   load15_threads4        - the same, the training process limited to 4 CPU threads
#                            (oversubscribed OpenMP pools spin)
#   load7                  - 7 load processes (a lease with --gen-workers 7)
#   load15_batch256        - the same launches for twice the samples
# About 4 minutes. OUT (default /tmp/pace_out) receives each run's train_benchmark.md/json.
set -u
OUT=${OUT:-/tmp/pace_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site ${WHL:-.whl1}/*.whl
export PYTHONPATH=/tmp/site:$PWD
data=${DATA:-/tmp/pace_data}  # DATA: an existing set instead (CPU check: DATA=... EXTRA=--smoke)
[ -f $data/dataset.json ] || python3 tools/make_dataset.py out_dir=$data num_samples=1200 workers=15 \
    samples_per_shard=100 sdf_voxel_size=0.04 splits.train.fraction=0.0 splits.val.fraction=1.0 \
    splits.test.fraction=0.0 > "$OUT/data.log" 2>&1 || { tail -5 "$OUT/data.log"; exit 3; }
common=(--data $data --split val --paths new --methods metro_small --compile --seconds 8
        --warmup 6 --decode-workers 8 --max-points-per-scene 400000 --budget-minutes 2)
bench() {  # name, then extra arguments
    local name=$1; shift
    python3 tools/benchmark_train.py "${common[@]}" "$@" ${EXTRA:-} --out "$OUT/$name" > "$OUT/$name.log" 2>&1
    echo "== $name: $(grep '^| metro_small' "$OUT/$name/train_benchmark.md" | cut -d'|' -f4-8)"
}
probes=" ${PROBES:-alone load15 load15_threads4 load7 load15_batch256} "  # PROBES: a subset
[[ $probes == *" alone "* ]] && bench alone
[[ $probes == *" load15 "* ]] && bench load15 --cpu-load 15
[[ $probes == *" load15_threads4 "* ]] && OMP_NUM_THREADS=4 bench load15_threads4 --cpu-load 15
[[ $probes == *" load7 "* ]] && bench load7 --cpu-load 7
[[ $probes == *" load15_batch256 "* ]] && bench load15_batch256 --cpu-load 15 --batch-size 256
nvidia-smi --query-gpu=name --format=csv,noheader; nproc; lscpu | grep -E "Thread|Core|Socket"
