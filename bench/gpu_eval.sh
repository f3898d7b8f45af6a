#!/usr/bin/env bash
# An evaluation run on an NVIDIA GPU, end to end: the tiny model and synthetic data are built here,
# the reward service is started on 127.0.0.1, `python -m trainer.evaluate` generates in bf16 on cuda
# and scores through the service. Copies the table JSON, the completions, the service log and the
# timing to $OUT/ (default runs/gpu_eval).
#
# Run from the repository root, with the project's packages importable (e.g. the carried wheels:
# PYTHONPATH=$PWD/.site:$PWD):   bash bench/gpu_eval.sh
# Knobs (environment): PYTHON (python3), N_IMAGES (64), BATCH_SIZE (16), MAX_NEW_TOKENS (64), PORT (18777).
set -euo pipefail

PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_eval}
N_IMAGES=${N_IMAGES:-64}
BATCH_SIZE=${BATCH_SIZE:-16}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
PORT=${PORT:-18777}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

"$PY" -c 'import torch, sys; ok = torch.cuda.is_available(); print("cuda:", ok, torch.__version__, torch.cuda.get_device_name(0) if ok else ""); sys.exit(0 if ok else 1)' \
  || { echo "no CUDA device: this script is for the GPU machine" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>/dev/null || true

"$PY" -m trainer.tiny_model "$WORK/tiny"
"$PY" -m trainer.synthetic "$WORK/data" --n "$N_IMAGES" --seed 7

"$PY" -m services.reward_api --host 127.0.0.1 --port "$PORT" --workers 1 --log-level warning > "$OUT/service.log" 2>&1 &
SERVICE_PID=$!
trap 'kill "$SERVICE_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$PY" -m services.reward_api.local wait "$PORT" --pid "$SERVICE_PID"

START=$(date +%s.%N)
"$PY" -m trainer.evaluate --model "$WORK/tiny" --data "$WORK/data/train.jsonl" --images "$WORK/data/images" \
  --url "http://127.0.0.1:$PORT" --out-dir "$WORK/eval" --device cuda --dtype bfloat16 \
  --batch-size "$BATCH_SIZE" --max-new-tokens "$MAX_NEW_TOKENS" --name tiny-bf16-cuda | tee "$OUT/table.md"
END=$(date +%s.%N)

cp "$WORK/eval/metrics.json" "$WORK/eval/completions.jsonl" "$OUT/"
"$PY" - "$OUT" "$START" "$END" <<'PYEOF'
import json, sys
out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
metrics = json.load(open(f"{out}/metrics.json"))
timing = {"wall_seconds_evaluate_command": end - start, **metrics["timing"]}
assert timing["device"].startswith("cuda") and timing["dtype"] == "bfloat16", timing
json.dump(timing, open(f"{out}/timing.json", "w"), indent=2)
print(json.dumps(timing, indent=2))
PYEOF
