#!/usr/bin/env bash
# The long measurements of BENCHMARKS.md, for a machine with a real GPU:
# the issue-4 training runs on ORL (in parallel: accuracy does not depend on
# what else runs), then, one at a time so the timings are clean, training
# throughput, the kernel table and the gradient checks.
#
#   scripts/gpu-runs.sh ARCFACE_BINARY OUT_DIR
#
# Everything lands in OUT_DIR: log.txt, info.json, gradcheck.txt,
# bench_*.json and one folder per run (metrics, eval.json, curves).
set -u
A=$(realpath "$1")
OUT=$(realpath -m "$2")
mkdir -p "$OUT"
DATA=data/orl
exec > >(tee -a "$OUT/log.txt") 2>&1

step() { echo "== $(date +%T) $*"; }

step info
"$A" info --json | tee "$OUT/info.json"

# MobileFaceNet + ArcFace: the PyTorch recipe of issue 4 (batch 16, 10 epochs,
# lr 0.1, momentum 0.9, weight decay 5e-4, step decay x0.5 every 3 epochs).
mfn() { # name people extra...
  local name=$1 people=$2
  shift 2
  "$A" train --data $DATA --model mobilefacenet --people "$people" --epochs 10 --batch-size 16 --lr 0.1 \
    --momentum 0.9 --weight-decay 5e-4 --seed 0 --quiet --out "$OUT/$name" "$@" >"$OUT/$name.log" 2>&1
}
# MiniNetwork at 112x112: lr 1e-3, momentum 0.9, no weight decay.
mini() { # name people
  "$A" train --data $DATA --model mininet --input 112 --people "$2" --epochs 10 --batch-size 16 --lr 1e-3 \
    --momentum 0.9 --weight-decay 0 --seed 0 --quiet --out "$OUT/$1" >"$OUT/$1.log" 2>&1
}

# One function per run; RUNS picks some (default: all), in parallel.
mfn_orl40() { mfn mfn_orl40 0; }
mfn_orl40_recal() { mfn mfn_orl40_recal 0 --recalibrate-bn; }
mfn_orl10() { mfn mfn_orl10 10; }
mfn_orl10_recal() { mfn mfn_orl10_recal 10 --recalibrate-bn; }
mini_orl10() { mini mini_orl10 10; }
mini_orl40() { mini mini_orl40 0; }
sweep_mini_orl10() {
  "$A" sweep --data $DATA --model mininet --input 112 --people 10 --epochs 10 --batch-size 16 \
    --weight-decay 0 --seed 0 --quiet --out "$OUT/sweep_mini_orl10" >"$OUT/sweep_mini_orl10.log" 2>&1
}
RUNS=${RUNS:-mfn_orl40 mfn_orl40_recal mfn_orl10 mfn_orl10_recal mini_orl10 mini_orl40 sweep_mini_orl10}

step "training runs (parallel): $RUNS"
export A OUT DATA
export -f mfn mini $RUNS
T=${RUN_TIMEOUT:-300}
pids=()
for r in $RUNS; do
  timeout "$T" bash -c "$r" &
  pids+=($!)
done
# (not a bare `wait`: it would also wait for the tee above)
wait "${pids[@]}"
for r in $RUNS; do
  [ -d "$OUT/$r" ] || continue
  step "result $r"
  tail -n 20 "$OUT/$r.log"
  [ -f "$OUT/$r/best.safetensors" ] || continue
  "$A" eval --checkpoint "$OUT/$r/best.safetensors" --json >"$OUT/$r/eval.json" && head -c 300 "$OUT/$r/eval.json"
  echo
  case $r in mfn*)
    "$A" eval --checkpoint "$OUT/$r/best.safetensors" --batch-stats --json >"$OUT/$r/eval_batch_stats.json"
    head -c 300 "$OUT/$r/eval_batch_stats.json"
    echo ;;
  esac
done

[ -n "${SKIP_BENCH:-}" ] && { step done; exit 0; }
step "training throughput, batch 32"
timeout 120 "$A" bench train --model mobilefacenet --batch 32 --steps 5 --json | tee "$OUT/bench_train_mfn.json"
timeout 120 "$A" bench train --model mininet --input 112 --batch 32 --steps 5 --json | tee "$OUT/bench_train_mini.json"
step "inference throughput, batch 32"
timeout 120 "$A" bench infer --batch 32 --calls 5 --json | tee "$OUT/bench_infer_mfn.json"

step "kernel table, batch 32"
timeout 120 "$A" bench kernels --batch 32 --repeats 5 --json >"$OUT/bench_kernels.json"

step gradcheck
timeout 120 "$A" gradcheck >"$OUT/gradcheck.txt" 2>&1
echo "gradcheck exit $?"
tail -n 3 "$OUT/gradcheck.txt"
step done
