#!/usr/bin/env bash
# The 3B recipes at full size on one GPU, measured in one command (README "Full size on one H200"):
#
#   OUT=/some/dir bash bench/fullsize.sh                          # from the repository root, one GPU
#   FULLSIZE_SMOKE=1 DEVICE=cpu OUT=/tmp/fs bash bench/fullsize.sh   # the whole harness on a CPU, tiny models, no claim
#
# 1. Installs the carried wheels of .whl/ (bench/fullsize_wheels.sh puts deepspeed and its
#    dependencies there, ../shared/tools/device-wheels.sh the rest) into /tmp/site, when a GPU is used.
# 2. Builds OFFLINE, with random weights, in bf16 on the GPU: the published Qwen2.5-VL-3B-Instruct
#    architecture (trainer.tiny_model --preset qwen2_5_vl_3b, 3.75 billion parameters) and
#    Qwen3-VL-4B-Instruct (--preset qwen3_vl_4b, 4.44 billion); synthetic detection data with
#    images of COCO's sizes (trainer.synthetic --preset large, 480-640 pixels a side).
# 3. Starts the reward service (WORKERS processes) and runs `python -m trainer.train --config RECIPE`
#    (GRPO, rewards through the service) for up to STEPS steps in each mode of MODES, one after the
#    other, each within its own time cap (a share of what is left of BUDGET seconds), so that a
#    mode that fails or hangs does not stop the others:
#      full_gc        full fine-tuning, gradient checkpointing (the recipe as written)
#      lora_gc        LoRA (peft; TRL's default rank 16, alpha 32), gradient checkpointing
#      zero2, zero3   DeepSpeed ZeRO-2 / ZeRO-3 on one GPU: accelerate launch --config_file
#                     configs/accelerate/zero{2,3}.yaml --num_processes 1 (torch's AdamW: no compiled ops)
#      qwen3_full_gc  the Qwen3-VL-4B architecture, full fine-tuning, gradient checkpointing
#    What differs from the recipe, for time: completions up to COMPLETION tokens (the recipe: 1024),
#    STEPS steps, attention ATTN (the recipe says sdpa; the trainer's default, eager, is what trained
#    on the GPU before: see README "Correctness guards"), no final save. Random weights never
#    answer an end token, so every completion is exactly COMPLETION tokens: memory and time are
#    those of that length's worst case.
# 4. Measures per mode: peak GPU memory (PyTorch's max_memory_allocated / max_memory_reserved, and
#    nvidia-smi's memory.used sampled every 0.5 s), step time and generation tokens/s (the steps
#    after the first), the share of step time spent waiting for rewards (train_summary.json), and
#    the status or error of a mode that failed.
# Results in $OUT: fullsize.log (progress), results.json (raw), table.md (the README table,
# rendered by bench/fullsize_report.py), fullsize_logs.tar.gz (every mode's log, summary and
# nvidia-smi samples; no weights).
set -uo pipefail
OUT=${OUT:?set OUT to a results folder}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-400}           # seconds for the whole command, install and build included
MODE_CAP=${MODE_CAP:-120}       # the most one mode may take, start-up included
STEPS=${STEPS:-4}               # GRPO steps per mode (the first one is left out of the steady numbers)
COMPLETION=${COMPLETION:-256}   # max_completion_length (the recipe: 1024)
RECIPE=${RECIPE:-configs/qwen2_5vl_3b_wsum_cosine_kl0.04.yaml}
ATTN=${ATTN:-eager}
MODES=${MODES:-"full_gc lora_gc zero2 zero3 qwen3_full_gc"}
WORKERS=${WORKERS:-4}
PORT=${PORT:-18830}
SAMPLES=${SAMPLES:-64}
WHEELS=${WHEELS:-.whl}
Q25_PRESET=qwen2_5_vl_3b
Q3_PRESET=qwen3_vl_4b
DATA_PRESET=large
BUILD_ARGS=(--device cuda --dtype bfloat16)
PRECISION=()
if [ -n "${FULLSIZE_SMOKE:-}" ]; then  # the same harness with tiny models, to check it runs (no claim)
  Q25_PRESET=tiny Q3_PRESET=tiny DATA_PRESET=tiny STEPS=${SMOKE_STEPS:-2} COMPLETION=16 SAMPLES=16
  BUDGET=${SMOKE_BUDGET:-900} MODE_CAP=${SMOKE_MODE_CAP:-240}
fi
if [ "$DEVICE" = cpu ]; then
  BUILD_ARGS=(--device cpu)
  PRECISION=(--use_cpu true --bf16 false --dtype float32)
fi

STARTED=$(date +%s)
mkdir -p "$OUT"
LOG="$OUT/fullsize.log"
: > "$LOG"
say() { echo "[fullsize +$(($(date +%s) - STARTED))s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - STARTED))); }

if [ "$DEVICE" != cpu ] && compgen -G "$WHEELS/*.whl" > /dev/null; then
  say "installing the carried wheels of $WHEELS into /tmp/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    >> "$LOG" 2>&1 || say "WARNING: the wheels did not all install (see above)"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

STAGE=$(mktemp -d)   # logs and summaries: packed into $OUT at the end
# Models (16 GB) and data, left out of $OUT: a temporary folder, or WORK (kept afterwards).
WORK_GIVEN=${WORK:-}
WORK=${WORK:-$(mktemp -d)}
SERVICE=""
POLLER=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  [ -n "$POLLER" ] && kill "$POLLER" 2>/dev/null
  [ -n "$SERVICE" ] && { kill "$SERVICE" 2>/dev/null; wait "$SERVICE" 2>/dev/null; }
  rm -rf "$STAGE"
  [ -z "$WORK_GIVEN" ] && rm -rf "$WORK"
}
trap cleanup EXIT

# What ran where (the GPU, the packages; the report puts it into results.json), and whether the
# packages are there at all: without them every mode would fail, so stop now.
"$PY" - "$STAGE/env.json" "$DEVICE" <<'PY' >> "$LOG" 2>&1 || { say "ERROR: missing packages or no GPU: $(tail -n 1 "$LOG")"; exit 3; }
import importlib.util, json, os, platform, subprocess, sys
from importlib import metadata
env = {"python": platform.python_version(), "cpus": os.cpu_count(), "device": sys.argv[2]}
for name in ("torch", "transformers", "trl", "accelerate", "peft", "deepspeed", "tokenizers", "datasets"):
    try:
        env[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        env[name] = None
needed = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "tokenizers", "httpx", "prometheus_client",
          "yaml", "fastapi", "starlette", "uvicorn", "h11", "pydantic", "pydantic_settings", "numpy", "PIL", "orjson",
          "json_repair")
env["missing"] = [name for name in needed if importlib.util.find_spec(name) is None]
import torch
env["cuda"] = torch.version.cuda
if torch.cuda.is_available():
    env["gpu"] = torch.cuda.get_device_name(0)
    env["gpu_memory_bytes"] = torch.cuda.get_device_properties(0).total_memory
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    env["nvidia_smi"] = smi.stdout.strip()
except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = None
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env))
if env["missing"]:
    sys.exit(f"missing Python packages: {env['missing']} (bench/fullsize_wheels.sh, ../shared/tools/device-wheels.sh)")
if sys.argv[2] != "cpu" and not torch.cuda.is_available():
    sys.exit("no CUDA device visible")
PY
cat > "$STAGE/settings.json" <<JSON
{"recipe": "$RECIPE", "max_completion_length": $COMPLETION, "max_steps": $STEPS, "attn_implementation": "$ATTN",
 "modes": "$MODES", "budget_seconds": $BUDGET, "mode_cap_seconds": $MODE_CAP, "samples": $SAMPLES,
 "image_sizes": "trainer.synthetic --preset $DATA_PRESET", "qwen2_5_vl_preset": "$Q25_PRESET",
 "qwen3_vl_preset": "$Q3_PRESET", "smoke": "${FULLSIZE_SMOKE:-}", "reward_workers": $WORKERS}
JSON
say "settings: $(tr -d '\n' < "$STAGE/settings.json")"

# Models (in parallel: the GPU has room for both) and data.
build() {  # build NAME PRESET [--family F]: the model folder $WORK/NAME, timed
  local name=$1 preset=$2 started
  shift 2
  started=$(date +%s)
  if "$PY" -m trainer.tiny_model "$WORK/$name" --preset "$preset" "$@" "${BUILD_ARGS[@]}" > "$STAGE/build_$name.log" 2>&1; then
    echo "seconds $(($(date +%s) - started))" >> "$STAGE/build_$name.log"
  else
    echo "FAILED after $(($(date +%s) - started)) s" >> "$STAGE/build_$name.log"
    return 1
  fi
}
say "building the models and the data"
builds=()
build qwen2_5_vl "$Q25_PRESET" & builds+=($!)
case " $MODES " in
  *" qwen3_"*) if [ "$Q3_PRESET" = tiny ]; then build qwen3_vl tiny --family qwen3_vl & else build qwen3_vl "$Q3_PRESET" & fi
               builds+=($!) ;;
esac
"$PY" -m trainer.synthetic "$WORK/data" --n "$SAMPLES" --preset "$DATA_PRESET" > "$STAGE/data.log" 2>&1 \
  || say "ERROR: synthetic data failed: $(tail -n 3 "$STAGE/data.log")"
OMP_NUM_THREADS=1 "$PY" -m services.reward_api --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" \
  --log-level warning > "$STAGE/reward_service.log" 2>&1 &
SERVICE=$!
for pid in "${builds[@]}"; do wait "$pid"; done
for f in "$STAGE"/build_*.log; do say "$(basename "$f" .log): $(tail -n 2 "$f" | tr '\n' ' ')"; done
"$PY" -m services.reward_api.local wait "$PORT" --pid "$SERVICE" >> "$LOG" 2>&1 || say "ERROR: the reward service did not start"
URL="http://127.0.0.1:$PORT"

poll_gpu_memory() {  # nvidia-smi's memory.used (MiB) every 0.5 s, one line each, until killed
  command -v nvidia-smi > /dev/null || return 0
  while :; do
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n 1
    sleep 0.5
  done
}

run_mode() {  # run_mode MODE CAP MAX_SECONDS: writes $STAGE/MODE/{train.log,gpu_memory.csv,mode.json,run/}
  local mode=$1 cap=$2 max_seconds=$3 dir="$STAGE/$1" model launch=() extra=() started rc
  mkdir -p "$dir"
  model="$WORK/qwen2_5_vl"
  launch=("$PY" -m trainer.train)
  case $mode in
    full_gc) ;;
    lora_gc) extra=(--use_peft true) ;;
    zero2|zero3)
      if ! "$PY" -c "import deepspeed" > "$dir/train.log" 2>&1; then
        printf '{"mode": "%s", "rc": null, "skipped": "deepspeed is not importable (bench/fullsize_wheels.sh)"}\n' \
          "$mode" > "$dir/mode.json"
        return 0
      fi
      launch=("$PY" -m accelerate.commands.launch --config_file "configs/accelerate/$mode.yaml" --num_processes 1
              --main_process_port $((PORT + 100 + ${mode#zero})))  # a port of its own per mode
      [ "$DEVICE" = cpu ] && launch+=(--mixed_precision no)
      launch+=(-m trainer.train) ;;
    qwen3_full_gc) model="$WORK/qwen3_vl" ;;
    *) printf '{"mode": "%s", "rc": null, "skipped": "unknown mode"}\n' "$mode" > "$dir/mode.json"; return 0 ;;
  esac
  poll_gpu_memory > "$dir/gpu_memory.csv" &
  POLLER=$!
  started=$(date +%s)
  # SIGTERM at the cap (to the whole process group): the trainer writes train_summary.json (the
  # steps so far) before it exits; SIGKILL 20 s later if it has not.
  timeout -s TERM -k 20 "$cap" "${launch[@]}" --config "$RECIPE" --model_name_or_path "$model" \
    --data_files "$WORK/data/train.jsonl" --image_folders "$WORK/data/images" --reward_urls "$URL" \
    --output_dir "$dir/run" --max_steps "$STEPS" --max_seconds "$max_seconds" \
    --max_completion_length "$COMPLETION" --attn_implementation "$ATTN" --save_strategy no \
    --save_final_model false --report_to none --metrics_port 0 --logging_steps 1 \
    "${PRECISION[@]}" "${extra[@]}" >> "$dir/train.log" 2>&1
  rc=$?
  kill "$POLLER" 2>/dev/null; wait "$POLLER" 2>/dev/null; POLLER=""
  printf '{"mode": "%s", "rc": %d, "seconds": %d, "cap_seconds": %d, "max_seconds": %d, "model": "%s", "command": "%s"}\n' \
    "$mode" "$rc" "$(($(date +%s) - started))" "$cap" "$max_seconds" "$(basename "$model")" "${launch[*]}" \
    > "$dir/mode.json"
  return "$rc"
}

# Each mode's share of the time left, and the start-up (imports, loading the model and, with KL,
# the reference model, DeepSpeed's set-up) it needs before its first step. Measured on one H200
# (2026-11-29, BUDGET=370, 256-token completions): first steps of 20-35 s after 15-25 s of start-up,
# the plain full fine-tune's first step longer than its 51 s cap (its optimizer states are allocated
# then), hence its larger share.
share() { case $1 in zero3) echo 85 ;; full_gc) echo 80 ;; zero2) echo 70 ;; lora_gc) echo 65 ;; *) echo 60 ;; esac; }
startup() { case $1 in zero3) echo 50 ;; zero2) echo 40 ;; *) echo 25 ;; esac; }
STEP_ALLOWANCE=15   # a step may end this long after --max_seconds

# shellcheck disable=SC2086  # MODES is a list of words
set -- $MODES
status=0
while [ $# -gt 0 ]; do
  mode=$1
  total=0
  for m in "$@"; do total=$((total + $(share "$m"))); done
  cap=$(( ($(left) - 15) * $(share "$mode") / total ))  # 15 s kept for the report
  [ "$cap" -gt "$MODE_CAP" ] && cap=$MODE_CAP
  if [ "$cap" -lt 30 ]; then
    say "$mode: skipped, ${cap}s left for it"
    mkdir -p "$STAGE/$mode"
    printf '{"mode": "%s", "rc": null, "skipped": "no time left in the budget"}\n' "$mode" > "$STAGE/$mode/mode.json"
  else
    max_seconds=$((cap - $(startup "$mode") - STEP_ALLOWANCE))
    [ "$max_seconds" -lt 5 ] && max_seconds=5
    say "$mode: started (cap ${cap}s, training stops after ${max_seconds}s)"
    run_mode "$mode" "$cap" "$max_seconds"
    rc=$?
    say "$mode: exit status $rc"
    if [ "$rc" -ne 0 ]; then
      status=1
      { echo "--- last lines of $mode/train.log"; tail -n 15 "$STAGE/$mode/train.log"; } | tee -a "$LOG"
    fi
  fi
  shift
done

# shellcheck disable=SC2086
printf '%s\n' $MODES > "$STAGE/modes.txt"
"$PY" -m bench.fullsize_report "$STAGE" --out "$OUT" >> "$LOG" 2>&1 || { status=1; say "ERROR: the report failed"; }
[ -f "$OUT/table.md" ] && tee -a "$LOG" < "$OUT/table.md"
tar -czf "$OUT/fullsize_logs.tar.gz" -C "$STAGE" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' . \
  || say "ERROR: packing the logs failed"
say "done (status $status)"
exit $status
