#!/usr/bin/env bash
# Identification and verification on the London set (BENCHMARKS.md):
# neutral photos enrolled as the gallery, smiling photos identified; and
# every pair of the 120 photos scored. Faces detected and aligned (MTCNN).
#
#   scripts/london-eval.sh CHECKPOINT OUT_DIR [extra embed flags, e.g. --no-flip]
set -euo pipefail
CKPT=$1
OUT=$2
shift 2
A=${ARCFACE:-target/release/arcface}
mkdir -p "$OUT/gallery" "$OUT/probes"
for d in data/london/[0-9]*/; do
  p=$(basename "$d")
  mkdir -p "$OUT/gallery/$p"
  ln -sf "$(realpath "$d/neutral.jpg")" "$OUT/gallery/$p/neutral.jpg"
  ln -sf "$(realpath "$d/smiling.jpg")" "$OUT/probes/$p.jpg"
done
"$A" enroll "$OUT/gallery" --checkpoint "$CKPT" --out "$OUT/gallery.safetensors" --align "$@"
"$A" identify "$OUT"/probes/*.jpg --gallery "$OUT/gallery.safetensors" --checkpoint "$CKPT" --json >"$OUT/identify.json"
python3 - "$OUT/identify.json" <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))
top1 = sum(os.path.basename(r["path"])[:-4] == r["result"]["best"]["person"] for r in rows if "result" in r)
known = sum(os.path.basename(r["path"])[:-4] == r["result"]["answer"] for r in rows if "result" in r)
print(f"identification: top-1 {top1}/{len(rows)} = {top1/len(rows):.3f}; named correctly (not 'unknown') {known}/{len(rows)}")
PY
"$A" eval-pairs --checkpoint "$CKPT" --data data/london --align --roc "$OUT/roc.png" "$@" | tee "$OUT/pairs.txt"
