#!/usr/bin/env bash
# GRPO of the tiny Qwen2.5-VL on one GPU in bf16, with the reward service beside it.
#
#   OUT=/some/dir bash bench/gpu_train.sh          # from the repository root
#
# Builds the tiny model and synthetic data, starts the reward service (WORKERS processes), trains for
# STEPS steps and reports, from the trainer's own measurements (train_summary.json): steps per second
# and the share of step time spent waiting for rewards (target: under 2%). Results go to $OUT:
# gpu_train_summary.json (the numbers), run/ (the trainer's output dir), reward_service.log.
# Needs on PYTHONPATH: torch (CUDA), transformers, trl, accelerate, datasets, httpx, prometheus-client,
# pyyaml, fastapi, uvicorn, pydantic, numpy (the carried wheels plus the machine's own).
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/runs/gpu_train}
STEPS=${STEPS:-40}
WORKERS=${WORKERS:-4}
PORT=${PORT:-18777}
BATCH=${BATCH:-32}          # completions per step (per_device_train_batch_size)
GENERATIONS=${GENERATIONS:-8}
COMPLETION=${COMPLETION:-64}
PRECISION=${PRECISION:---dtype bfloat16 --bf16 true}   # a CPU dry run: PRECISION="--use_cpu true" ALLOW_CPU=1
# How the trainer is started; several GPUs with DDP:
#   LAUNCH="python3 -m accelerate.commands.launch --config_file configs/accelerate/ddp.yaml --num_processes 2 -m"
LAUNCH=${LAUNCH:-"$PY -m"}
mkdir -p "$OUT"
WORK=$(mktemp -d)

"$PY" - <<'PY'
import importlib, sys
missing = [m for m in ("torch", "transformers", "trl", "accelerate", "datasets", "httpx", "prometheus_client",
                       "yaml", "fastapi", "uvicorn", "pydantic", "numpy", "PIL") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {missing}")
import torch
if not torch.cuda.is_available() and not __import__("os").environ.get("ALLOW_CPU"):
    sys.exit("no CUDA device visible")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "| torch", torch.__version__)
PY

"$PY" -m trainer.tiny_model "$WORK/tiny"
"$PY" -m trainer.synthetic "$WORK/data" --n 512

OMP_NUM_THREADS=1 "$PY" -m services.reward_api --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" \
  > "$OUT/reward_service.log" 2>&1 &
SERVICE=$!
trap 'kill $SERVICE 2>/dev/null || true; wait $SERVICE 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$PY" -m services.reward_api.local wait "$PORT" --pid "$SERVICE"

$LAUNCH trainer.train \
  --model_name_or_path "$WORK/tiny" $PRECISION \
  --data_files "$WORK/data/train.jsonl" --image_folders "$WORK/data/images" \
  --reward_urls "http://127.0.0.1:$PORT" \
  --rewards format od_length weighted_sum cosine repetition --reward_weights 1 1 0 1 1 \
  --output_dir "$OUT/run" --max_steps "$STEPS" \
  --per_device_train_batch_size "$BATCH" --num_generations "$GENERATIONS" \
  --max_completion_length "$COMPLETION" --learning_rate 0.003 --beta 0.04 \
  --logging_steps 1 --save_strategy no --report_to none --seed 0 --metrics_port 0

"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
s = json.loads((out / "run" / "train_summary.json").read_text())
result = {k: s[k] for k in ("status", "steps", "steps_per_second", "steady_steps_per_second", "reward_wait_share",
                            "steady_reward_wait_share", "reward_requests", "reward_request_seconds_mean",
                            "reward_retries")}
(out / "gpu_train_summary.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result, indent=2))
share = result["steady_reward_wait_share"]
print(f"steps/s {result['steady_steps_per_second']:.3f} (steady), reward wait {100 * share:.2f}% of step time "
      f"({'under' if share < 0.02 else 'OVER'} the 2% target)")
PY
