#!/usr/bin/env bash
# The GPU machine's part of the shipped result: make the synthetic dataset with all cores,
# train RCNet, SA-HMR (mesh network, teacher-forced) and METRO side by side on one GPU, then
# export and evaluate. Each stage resumes, so it can be spread over several short calls:
#   bash tools/gpu/pipeline.sh data     # dataset into $DATA (default outputs/gpu/data)
#   bash tools/gpu/pipeline.sh train    # all experiments for $TRAIN_MINUTES, resuming
#   bash tools/gpu/pipeline.sh eval     # export sahmr_small (+ rcnet) and score on test
# On the lent machine: carry .gpu, start with `bash .gpu/install.sh && export
# PYTHONPATH=/tmp/site:$PWD`. Settings below are environment variables.
set -euo pipefail
stage=${1:?usage: pipeline.sh data|train|eval}
root=${GPU_ROOT:-outputs/gpu}
DATA=${DATA:-$root/data}
RUNS=${RUNS:-$root/runs}
NUM_SAMPLES=${NUM_SAMPLES:-30000}
WORKERS=${WORKERS:-$(( $(nproc) - 1 ))}
TRAIN_MINUTES=${TRAIN_MINUTES:-8}
EXPS=${EXPS:-rcnet_small sahmr_small metro_small}
LOADER_WORKERS=${LOADER_WORKERS:-4}
export SAHMR_OUTPUT_ROOT=$RUNS SAHMR_CACHE_DIR=${SAHMR_CACHE_DIR:-$root/cache}
mkdir -p "$root" "$RUNS"

case $stage in
data)
  python3 tools/make_dataset.py out_dir="$DATA" num_samples="$NUM_SAMPLES" workers="$WORKERS" \
    samples_per_shard=250 resume=true ${DATA_ARGS:-} 2>&1 | tail -n 60
  ;;
train)
  pids=()
  for exp in $EXPS; do
    steps_var="STEPS_${exp}"
    python3 tools/train.py exp="$exp" data.root="$DATA" resume=true \
      trainer.max_minutes="$TRAIN_MINUTES" trainer.max_steps="${!steps_var:-6000}" \
      trainer.num_workers="$LOADER_WORKERS" trainer.progress=false trainer.log_every=200 \
      max_points_per_scene="${MAX_SCENE_POINTS:-400000}" ${TRAIN_ARGS:-} \
      > "$RUNS/$exp.log" 2>&1 &
    pids+=($!)
  done
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  for exp in $EXPS; do echo "== $exp"; tail -n 5 "$RUNS/$exp.log"; done
  exit $status
  ;;
eval)
  python3 tools/export_checkpoint.py "$RUNS/sahmr_small/checkpoints/last.pt" \
    "$root/sahmr_small.pt" --rcnet "$RUNS/rcnet_small/checkpoints/last.pt"
  python3 tools/export_checkpoint.py "$RUNS/metro_small/checkpoints/last.pt" "$root/metro_small.pt"
  for m in sahmr_small metro_small; do
    python3 tools/eval_checkpoint.py checkpoint="$root/$m.pt" data.root="$DATA" split=test \
      out="$root/eval_$m" progress=false with_targets=false ${EVAL_ARGS:-} 2>&1 | tail -n 30
  done
  python3 tools/eval_checkpoint.py checkpoint="$RUNS/rcnet_small/checkpoints/last.pt" data.root="$DATA" \
    split=test out="$root/eval_rcnet_small" progress=false scene_metrics=false 2>&1 | tail -n 30
  ;;
*) echo "unknown stage $stage" >&2; exit 2 ;;
esac
