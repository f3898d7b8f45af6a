#!/usr/bin/env bash
# The GPU measurements of the README in one go, on a machine with an NVIDIA GPU and no internet:
# installs the carried wheels (.whl/, fetched here by ../shared/tools/device-wheels.sh with
# transformers==5.23.0 tokenizers==0.23.3), then runs bench/gpu_train.sh and bench/gpu_eval.sh.
# Results: $OUT/gpu_train_summary.json, $OUT/eval_timing.json, $OUT/eval_table.md and everything
# else packed in $OUT/gpu_results.tar.gz.
set -euo pipefail
OUT=${OUT:?set OUT to a results folder}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
STAGE=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$STAGE/gpu.csv"
status=0
OUT=$STAGE/train bash bench/gpu_train.sh 2>&1 | tee "$STAGE/train.log" || status=1
OUT=$STAGE/eval bash bench/gpu_eval.sh 2>&1 | tee "$STAGE/eval.log" || status=1
cp "$STAGE/train/gpu_train_summary.json" "$OUT/" 2>/dev/null || true
cp "$STAGE/eval/timing.json" "$OUT/eval_timing.json" 2>/dev/null || true
cp "$STAGE/eval/table.md" "$OUT/eval_table.md" 2>/dev/null || true
tar -czf "$OUT/gpu_results.tar.gz" -C "$STAGE" .
exit $status
