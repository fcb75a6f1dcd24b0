"""ONNX Runtime (CPU) embedding throughput on an ONNX file, timed as
`arcface bench infer` times the engine: a fixed batch, three warm-up calls,
then the median and 99th percentile of the timed calls.

    python benches/peers/ort_infer.py MODEL.onnx --batch 32 --threads 2 --calls 5 --json

MODEL.onnx: what `arcface bench infer --checkpoint` runs, as ONNX with a
dynamic batch (`arcface export` of it: see README.md). Never a test
dependency: `pip install onnxruntime numpy`.
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    s = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    x = np.random.default_rng(1).uniform(-1, 1, (a.batch, 3, a.size, a.size)).astype(np.float32)
    for _ in range(3):
        s.run(None, {name: x})
    times = []
    for _ in range(max(a.calls, 1)):
        t = time.perf_counter()
        s.run(None, {name: x})
        times.append(time.perf_counter() - t)
    times.sort()
    med, p99 = times[len(times) // 2], times[max(-(-len(times) * 99 // 100) - 1, 0)]
    r = {"runtime": "onnxruntime " + ort.__version__, "threads": a.threads, "batch": a.batch,
         "images_per_s": a.batch / med, "call_ms": med * 1e3, "p99_ms": p99 * 1e3}
    print(json.dumps(r) if a.json else
          f"ONNX Runtime {ort.__version__}, {a.threads} threads, batch {a.batch}: {r['call_ms']:.1f} ms per call "
          f"(p99 {r['p99_ms']:.1f} ms), {r['images_per_s']:.1f} images/s")


if __name__ == "__main__":
    main()
