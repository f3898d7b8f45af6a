#!/usr/bin/env bash
# Does GRPO through the reward service teach a detector? One command on one GPU:
#
#   OUT=runs/efficacy bash bench/efficacy.sh            # from the repository root
#
# For each seed (SEEDS, default "0 1"), all on one GPU at once (a 24M-parameter model leaves the
# GPU mostly idle, so the runs share it):
#   1. the 'small' preset of FAMILY (default Qwen2.5-VL: trainer.tiny_model --preset small) and synthetic shapes:
#      a training set and a held-out set drawn from different seeds;
#   2. SFT from scratch (trainer.sft) for SFT_SECONDS, evaluated on the held-out set;
#   3. from that same SFT checkpoint, four arms for ARM_SECONDS each, side by side:
#      (a) GRPO format + ap at beta 0, (b) GRPO format + od_length at beta 0,
#      (c) GRPO format + weighted_sum + cosine at beta 0.04, (d) control: SFT continued;
#      each evaluated on the held-out set every few steps and at its end (greedy, /v1/evaluate);
#   4. bench/efficacy_report.py: held-out mAP, AP50, greedy P/R, NMS-AP and box ratio of every arm
#      at its end, paired-bootstrap 95% intervals against the SFT start, curves as PNGs.
# Results in $OUT: results.json (raw), table.md, *.png, and every run's logs and held-out answers
# (runs.tar.gz); the runs themselves (checkpoints, data) in $RUNS (default $OUT/runs).
#
# PHASE=sft runs steps 1-2 only and PHASE=arms steps 3-4 only, on the same $RUNS: two device calls
# of at most 10 minutes each instead of one (default PHASE=all, both).
#
# Needs on PYTHONPATH: torch (CUDA), transformers, trl, accelerate, datasets, httpx, fastapi,
# uvicorn, pydantic, numpy, pillow, matplotlib (bench/gpu_session.sh's wheels). A CPU dry run of the
# whole pipeline: DEVICE=cpu SMOKE=1 OUT=/tmp/eff bash bench/efficacy.sh
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/runs/efficacy}
SEEDS=${SEEDS:-"0 1"}
DEVICE=${DEVICE:-cuda}
PORT=${PORT:-18790}
WORKERS=${WORKERS:-4}
PHASE=${PHASE:-all}                 # all, sft (data and SFT) or arms (from the SFT checkpoints in $RUNS)
FAMILY=${FAMILY:-qwen2_5_vl}        # the small model's family (qwen2_5_vl, as the research, or qwen3_vl)
SFT_SECONDS=${SFT_SECONDS:-450}     # SFT budget per seed (PHASE=sft then fits one 10-minute call)
SFT_STEPS=${SFT_STEPS:-1000}       # the SFT schedule's length (cosine to 0); SFT_SECONDS stops it earlier
                                    # (two seeds at once made 2.24 training steps/s each on an H200 at batch
                                    # 256 with float32 master weights, try 4: 1,000 steps fit 450 s)
SFT_LR=${SFT_LR:-1e-3}
VISION_LR=${VISION_LR:-}            # SFT's --vision_learning_rate (empty: SFT_LR); see README "Does GRPO teach"
SFT_BATCH=${SFT_BATCH:-256}
ARM_SECONDS=${ARM_SECONDS:-300}     # each arm's budget, the control's too
GRPO_LR=${GRPO_LR:-1e-5}
GRPO_BATCH=${GRPO_BATCH:-128}      # completions per step
GENERATIONS=${GENERATIONS:-8}       # completions per prompt
CONTROL_LR=${CONTROL_LR:-1e-4}      # the control continues SFT at this constant rate
TRAIN_N=${TRAIN_N:-50000}
HELDOUT_N=${HELDOUT_N:-300}
COMPLETION=${COMPLETION:-128}       # longest completion, tokens (3 boxes spelt digit by digit: ~110)
EVAL_EVERY_GRPO=${EVAL_EVERY_GRPO:-15}
EVAL_EVERY_SFT=${EVAL_EVERY_SFT:-250}
ARMS=${ARMS:-"ap od_length wsum_cosine control"}
BOOTSTRAP=${BOOTSTRAP:-400}
REPORT_TO=${REPORT_TO:-none}      # tensorboard where it is installed
REPORT=${REPORT:-1}                 # 0: skip step 4 here (run bench.efficacy_report later, e.g. on a CPU,
                                    # from runs.tar.gz: it needs only the held-out answers and a service)
if [ -n "${SMOKE:-}" ]; then  # the whole pipeline in a few minutes, to check it runs (no claim)
  SFT_SECONDS=20 SFT_STEPS=8 SFT_BATCH=8 ARM_SECONDS=15 GRPO_BATCH=8 GENERATIONS=4 TRAIN_N=64 HELDOUT_N=16
  COMPLETION=48 EVAL_EVERY_GRPO=2 EVAL_EVERY_SFT=4 BOOTSTRAP=50 SEEDS=${SEEDS:-0}
fi
if [ "$DEVICE" = cpu ]; then PRECISION="--use_cpu true"; else PRECISION="--bf16 true --dtype bfloat16"; fi

case $PHASE in all|sft|arms) ;; *) echo "PHASE=$PHASE: use all, sft or arms" >&2; exit 2 ;; esac
mkdir -p "$OUT"
RUNS=${RUNS:-$OUT/runs}
if [ "$PHASE" = arms ]; then
  for seed in $SEEDS; do
    [ -f "$RUNS/seed$seed/sft/config.json" ] || {
      echo "PHASE=arms: no SFT checkpoint in $RUNS/seed$seed/sft; run PHASE=sft with the same RUNS first" >&2; exit 2; }
  done
fi
mkdir -p "$RUNS"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>/dev/null || echo "cpu" > "$OUT/gpu.csv"

OMP_NUM_THREADS=1 "$PY" -m services.reward_api --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" \
  --log-level warning > "$RUNS/reward_service.log" 2>&1 &
SERVICE=$!
trap 'kill $SERVICE 2>/dev/null || true; wait $SERVICE 2>/dev/null || true' EXIT
"$PY" -m services.reward_api.local wait "$PORT" --pid "$SERVICE"
URL="http://127.0.0.1:$PORT"
STARTED=$(date +%s)

common() {  # the options every run shares: precision, logging, the service, the held-out set
  local seed=$1
  echo $PRECISION --seed "$seed" --logging_steps 5 --save_strategy no --report_to "$REPORT_TO" \
    --reward_urls "$URL" --heldout_data "$RUNS/seed$seed/heldout/train.jsonl" \
    --heldout_images "$RUNS/seed$seed/heldout/images" --heldout_batch_size 128 \
    --heldout_max_new_tokens "$COMPLETION" --data_files "$RUNS/seed$seed/train/train.jsonl" \
    --image_folders "$RUNS/seed$seed/train/images"
}

prepare_and_sft() {
  local seed=$1 dir="$RUNS/seed$1"
  mkdir -p "$dir"
  "$PY" -m trainer.tiny_model "$dir/init" --preset small --family "$FAMILY" --seed "$seed" > "$dir/prepare.log" 2>&1
  "$PY" -m trainer.synthetic "$dir/train" --n "$TRAIN_N" --seed $((1000 + seed)) --preset small >> "$dir/prepare.log" 2>&1
  "$PY" -m trainer.synthetic "$dir/heldout" --n "$HELDOUT_N" --seed $((2000 + seed)) --preset small >> "$dir/prepare.log" 2>&1
  OMP_NUM_THREADS=2 "$PY" -m trainer.sft --model_name_or_path "$dir/init" $(common "$seed") \
    --output_dir "$dir/sft" --max_steps "$SFT_STEPS" --max_seconds "$SFT_SECONDS" \
    --per_device_train_batch_size "$SFT_BATCH" --learning_rate "$SFT_LR" --lr_scheduler_type cosine \
    --warmup_steps 0.05 --weight_decay 0.01 --dataloader_num_workers 5 --heldout_every_steps "$EVAL_EVERY_SFT" \
    ${VISION_LR:+--vision_learning_rate "$VISION_LR"} > "$dir/sft.log" 2>&1 || return 1
  # Does the SFT model look at its images at all? (travels back in runs.tar.gz)
  "$PY" -m bench.vision_probe "$dir/sft" --data "$dir/heldout/train.jsonl" --images "$dir/heldout/images" \
    --device "$DEVICE" --out "$dir/sft/vision_probe.json" > "$dir/vision_probe.log" 2>&1 \
    || echo "seed $seed: the vision probe failed (see $dir/vision_probe.log)"
}

arm() {  # ARMS entries: a name below, optionally @LR to override its learning rate (e.g. ap@1e-4)
  local seed=$1 name=$2 dir="$RUNS/seed$1"
  local kind=${name%@*} lr=$GRPO_LR control_lr=$CONTROL_LR
  if [ "$kind" != "$name" ]; then lr=${name#*@}; control_lr=$lr; fi
  local grpo=(--model_name_or_path "$dir/sft" --output_dir "$dir/$name" --max_steps 100000
              --max_seconds "$ARM_SECONDS" --heldout_every_steps "$EVAL_EVERY_GRPO" --metrics_port 0
              --per_device_train_batch_size "$GRPO_BATCH" --num_generations "$GENERATIONS"
              --max_completion_length "$COMPLETION" --learning_rate "$lr" --lr_scheduler_type constant
              --temperature 1.0)
  case $kind in
    ap) OMP_NUM_THREADS=1 "$PY" -m trainer.train "${grpo[@]}" $(common "$seed") --rewards format ap --beta 0 ;;
    od_length) OMP_NUM_THREADS=1 "$PY" -m trainer.train "${grpo[@]}" $(common "$seed") --rewards format od_length --beta 0 ;;
    wsum_cosine) OMP_NUM_THREADS=1 "$PY" -m trainer.train "${grpo[@]}" $(common "$seed") \
                   --rewards format weighted_sum cosine --beta 0.04 \
                   --reward_params "{\"cosine\": {\"max_length\": $COMPLETION}}" ;;
    control) OMP_NUM_THREADS=1 "$PY" -m trainer.sft --model_name_or_path "$dir/sft" $(common "$seed") \
               --output_dir "$dir/$name" --max_steps 100000 --max_seconds "$ARM_SECONDS" \
               --per_device_train_batch_size "$SFT_BATCH" --learning_rate "$control_lr" \
               --lr_scheduler_type constant --weight_decay 0.01 --dataloader_num_workers 2 \
               --heldout_every_steps "$EVAL_EVERY_SFT" ${VISION_LR:+--vision_learning_rate "$VISION_LR"} ;;
    *) echo "unknown arm $name" >&2; return 2 ;;
  esac > "$dir/$name.log" 2>&1
}

status=0
if [ "$PHASE" != arms ]; then
  pids=()
  for seed in $SEEDS; do prepare_and_sft "$seed" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  echo "SFT done after $(( $(date +%s) - STARTED )) s (status $status)"
  for seed in $SEEDS; do
    if [ -f "$RUNS/seed$seed/sft/vision_probe.json" ]; then
      echo "seed $seed vision probe: $(tr -d ' \n' < "$RUNS/seed$seed/sft/vision_probe.json")"
    fi
  done
  if [ $status -ne 0 ]; then tail -n 30 "$RUNS"/seed*/sft.log "$RUNS"/seed*/prepare.log >&2; fi
fi

if [ $status -eq 0 ] && [ "$PHASE" != sft ]; then
  pids=()
  for seed in $SEEDS; do for name in $ARMS; do arm "$seed" "$name" & pids+=($!); done; done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  echo "arms done after $(( $(date +%s) - STARTED )) s (status $status)"
  [ $status -eq 0 ] || for f in "$RUNS"/seed*/*.log; do echo "== $f"; tail -n 8 "$f"; done >&2
fi

[ "$PHASE" = sft ] && ARMS=""  # the report of the SFT start alone
if [ "$REPORT" != 0 ]; then
  "$PY" -m bench.efficacy_report "$RUNS" --url "$URL" --out "$OUT" --seeds $SEEDS --arms $ARMS \
    --bootstrap "$BOOTSTRAP" || status=1
fi
echo "total $(( $(date +%s) - STARTED )) s"
# Logs and summaries (no weights, no images) travel back as one archive.
tar -czf "$OUT/runs.tar.gz" -C "$RUNS" --exclude='*.safetensors' --exclude='*.png' --exclude='*.pt' \
  --exclude='*.bin' --exclude='images' --exclude='init' . || true
exit $status
