#!/usr/bin/env bash
# The A/B on a lent GPU (run from the repository root after `bash .gpu/install.sh`, carrying
# .whl): 1,200 val samples generated there, then METRO small's and the mesh network's training
# step with the body model's chain walked by tree level (now) and by smplx (before).
set -u
OUT=${OUT:-/tmp/ab_out}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site ${WHL:-.whl}/*.whl
export PYTHONPATH=/tmp/site:$PWD
data=/tmp/ab_data
python3 tools/make_dataset.py out_dir=$data num_samples=${NUM:-1200} workers=15 samples_per_shard=100 \
    sdf_voxel_size=0.04 splits.train.fraction=0.0 splits.val.fraction=1.0 \
    splits.test.fraction=0.0 > $OUT/data.log 2>&1 || { tail -5 $OUT/data.log; exit 3; }
common=(--data $data --split val --paths new --methods ${METHODS:-metro_small,sahmr_small}
        --batch-size 128 --seconds ${SECONDS_TIMED:-8} --warmup 4 --decode-workers 8 --no-compile
        --max-points-per-scene 400000 --budget-minutes 2.5)
python3 tools/benchmark_train.py "${common[@]}" --out $OUT/tree_levels > $OUT/tree_levels.log 2>&1
python3 docs/results/body_sync/smplx_chain.py "${common[@]}" --out $OUT/smplx_chain \
    > $OUT/smplx_chain.log 2>&1
for arm in tree_levels smplx_chain; do
    echo "== $arm"; grep -A6 "^| method" $OUT/$arm/train_benchmark.md
done
nvidia-smi --query-gpu=name --format=csv,noheader
