#!/usr/bin/env bash
# The long measurements of BENCHMARKS.md, for a machine with a real GPU: the
# gradient checks and the test binaries, the kernel tables and training
# throughput for each kernel set (one at a time so the timings are clean),
# and optionally the issue-4 training runs on ORL (in parallel: accuracy does
# not depend on what else runs).
#
#   scripts/gpu-runs.sh ARCFACE_BINARY OUT_DIR [TEST_BINARY_DIR]
#
# Environment: SETS (kernel sets, default "gpu cpu"), RUNS (training runs,
# default none; "all" for every one), RUN_TIMEOUT (seconds per run), PYTHON
# (default python3: where it has torch with CUDA, PyTorch's training step runs
# on the same GPU beside ours, fp32 and mixed precision, NCHW and
# channels-last, batch 32 and 256).
# Everything lands in OUT_DIR: log.txt, info_SET.json, gradcheck_SET.txt,
# bench_*.json and one folder per training run.
set -u
A=$(realpath "$1")
OUT=$(realpath -m "$2")
mkdir -p "$OUT"
DATA=data/orl
exec > >(tee -a "$OUT/log.txt") 2>&1

step() { echo "== $(date +%T) $*"; }

TESTS=${3:-}
SETS=${SETS:-gpu cpu}
# Test binaries find their fixtures under the path they were built in.
BUILT_IN=/work/main
if [ -n "$TESTS" ] && [ ! -e "$BUILT_IN" ]; then
  mkdir -p "$(dirname "$BUILT_IN")" && ln -s "$PWD" "$BUILT_IN"
fi
# ... and the CLI tests find the binary where cargo built it.
if [ -n "$TESTS" ] && [ ! -e "$BUILT_IN/target/release/arcface" ]; then
  mkdir -p "$BUILT_IN/target/release" && ln -s "$A" "$BUILT_IN/target/release/arcface"
fi

for set in $SETS; do
  step "info, kernel set $set"
  "$A" info --json --kernels "$set" | tee "$OUT/info_$set.json"
  for p in f32 f16; do
    step "gradcheck, kernel set $set, $p variants"
    timeout 120 "$A" gradcheck --precision $p --kernels "$set" >"$OUT/gradcheck_${p}_$set.txt" 2>&1
    echo "gradcheck exit $?"
    tail -n 1 "$OUT/gradcheck_${p}_$set.txt"
  done
done

if [ -n "$TESTS" ]; then
  for t in "$TESTS"/*; do
    [ "$(basename "$t")" = arcface ] && continue
    # One thread: a test that hangs is the one named last in the output.
    step "test binary $(basename "$t") (kernel set ${SETS%% *} by default; some tests run both)"
    (cd "$BUILT_IN" && ARCFACE_KERNELS=${SETS%% *} timeout 180 "$t" --test-threads 1 >"$OUT/test_$(basename "$t").txt" 2>&1)
    grep -E "^test .* FAILED|^test result" "$OUT/test_$(basename "$t").txt"
  done
fi

[ -n "${SKIP_BENCH:-}" ] || for set in $SETS; do
  step "kernel table, batch 32, kernel set $set"
  timeout 120 "$A" bench kernels --batch 32 --repeats 5 --json --kernels "$set" >"$OUT/bench_kernels_$set.json"
  echo "bench kernels exit $?"
  step "training throughput, kernel set $set"
  for b in 32 256; do
    for p in f32 f16; do
      timeout 120 "$A" bench train --model mobilefacenet --batch $b --steps 5 --precision $p --json --kernels "$set" \
        | tee "$OUT/bench_train_mfn_b${b}_${p}_$set.json"
    done
  done
  timeout 120 "$A" bench train --model mininet --input 112 --batch 32 --steps 5 --json --kernels "$set" \
    | tee "$OUT/bench_train_mini_$set.json"
  timeout 120 "$A" bench infer --batch 32 --calls 5 --json --kernels "$set" | tee "$OUT/bench_infer_mfn_$set.json"
  step "where a MobileFaceNet step's GPU time goes, batch 32, kernel set $set"
  timeout 120 "$A" bench train --model mobilefacenet --batch 32 --profile --kernels "$set" | tee "$OUT/profile_mfn_$set.txt"
done

# The loader alone on this machine's cores: does a GPU step wait for it?
timeout 60 "$A" bench load --epochs 3 --json | tee "$OUT/bench_load.json"

PYTHON=${PYTHON:-python3}
if [ -z "${SKIP_BENCH:-}" ]; then
  if "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    for b in 32 256; do
      step "PyTorch on the same GPU, batch $b"
      timeout 300 "$PYTHON" benches/peers/pytorch.py --device cuda --batch $b --json "$OUT/pytorch_cuda_b$b.json"
    done
  else
    step "no PyTorch with CUDA for $PYTHON here: no GPU peer"
  fi
fi

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
ALL_RUNS="mfn_orl40 mfn_orl40_recal mfn_orl10 mfn_orl10_recal mini_orl10 mini_orl40 sweep_mini_orl10"
RUNS=${RUNS:-}
[ "$RUNS" = all ] && RUNS=$ALL_RUNS

if [ -n "$RUNS" ]; then
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

fi
step done
