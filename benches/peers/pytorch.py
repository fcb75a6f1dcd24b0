"""The PyTorch peer of `arcface bench train` and `arcface bench kernels`, for
ratios measured in one run on one machine (BENCHMARKS.md). A benchmark, not
a test dependency: it needs `pip install torch`.

    python benches/peers/pytorch.py [--threads 2] [--batch 32] [--json OUT]
    python benches/peers/pytorch.py --device cuda [--batch 256] [--json OUT]

It times, on the CPU with `--threads` threads (or on the first CUDA GPU,
every timing synchronised with it):
- one MobileFaceNet + ArcFace training step (SGD with momentum), NCHW and
  channels-last, with the twin module the golden files were made with
  (torch_mobilefacenet.py, copied from the shared reference material); on a
  GPU (or with `--amp` on the CPU) also with automatic mixed precision
  (float16 with a gradient scaler on CUDA, bfloat16 on the CPU);
- the convolution shapes of `arcface bench kernels` forward and backward
  (input and weight gradients; the first layer's input gradient too), and
  the 1024^3 matrix product.
FLOP counts follow `arcface bench kernels`: 2 x multiply-adds forward, twice
that backward.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_mobilefacenet import MobileFaceNetArc  # noqa: E402


DEVICE = torch.device("cpu")


def sync():
    """Waits for the device's queued work (timings on a GPU end there)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def train_step_rate(batch, classes, channels_last, amp, steps):
    torch.manual_seed(0)
    net = MobileFaceNetArc(classes, s=32.0, m=0.5).to(DEVICE)
    x = torch.randn(batch, 3, 112, 112, device=DEVICE)
    labels = torch.randint(0, classes, (batch,), device=DEVICE)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    half = torch.float16 if DEVICE.type == "cuda" else torch.bfloat16
    # The loss scaler of float16 training (bfloat16 has float32's range).
    scaler = torch.amp.GradScaler(DEVICE.type, enabled=amp and half == torch.float16)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, dtype=half, enabled=amp):
            loss = net(x, labels)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    ms = median_ms(step, steps)
    precision = ("f16" if half == torch.float16 else "bf16") if amp else "f32"
    return {"batch": batch, "channels_last": channels_last, "precision": precision, "step_ms": ms,
            "images_per_s": batch / ms * 1e3}


def conv_rows(name, n, cin, hw, cout, k, stride, pad, groups, bias, repeats):
    x = torch.randn(n, cin, hw, hw, device=DEVICE, requires_grad=True)
    w = torch.randn(cout, cin // groups, k, k, device=DEVICE, requires_grad=True)
    b = torch.randn(cout, device=DEVICE, requires_grad=True) if bias else None
    y = F.conv2d(x, w, b, stride, pad, 1, groups)
    ho = y.shape[2]
    macs = n * cout * ho * ho * (cin // groups) * k * k
    dy = torch.randn_like(y)
    shape = f"n{n} {cin}->{cout} {hw}x{hw} k{k}x{k} s{stride} p{pad}" + (f" g{groups}" if groups > 1 else "") + (
        " +bias" if bias else "")
    with torch.no_grad():
        fwd = median_ms(lambda: F.conv2d(x, w, b, stride, pad, 1, groups), repeats)

    def backward():
        out = F.conv2d(x, w, b, stride, pad, 1, groups)
        torch.autograd.grad(out, [x, w], dy)

    # autograd's backward includes a forward: subtract it.
    bwd = max(median_ms(backward, repeats) - fwd, 1e-6)
    return [
        {"kernel": name, "direction": "forward", "shape": shape, "median_ms": fwd, "gflops": 2 * macs / fwd * 1e-6},
        {"kernel": name, "direction": "backward", "shape": shape, "median_ms": bwd, "gflops": 4 * macs / bwd * 1e-6},
    ]


def main():
    global DEVICE
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the CPU device only)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--amp", action="store_true", help="mixed precision on the CPU too (bfloat16)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device cuda: this torch ({torch.__version__}) sees no CUDA GPU")
    DEVICE = torch.device(a.device)
    torch.set_num_threads(a.threads)
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"CPU, {a.threads} threads"
    out = {"torch": torch.__version__, "device": where, "threads": a.threads, "train": [], "rows": []}
    amp_modes = (False, True) if (DEVICE.type == "cuda" or a.amp) else (False,)
    for amp in amp_modes:
        for cl in (False, True):
            r = train_step_rate(a.batch, 10, cl, amp, a.steps)
            out["train"].append(r)
            print(f"MobileFaceNet + ArcFace batch {a.batch} {'channels-last' if cl else 'NCHW'} {r['precision']} "
                  f"({where}): {r['step_ms']:.1f} ms per step, {r['images_per_s']:.1f} images/s", flush=True)
    n = a.batch
    shapes = [
        ("conv2d", n, 3, 112, 64, 3, 2, 1, 1, False),
        ("conv2d 1x1", n, 64, 28, 128, 1, 1, 0, 1, False),
        ("conv2d 1x1", n, 128, 7, 512, 1, 1, 0, 1, False),
        ("conv2d", n, 32, 112, 64, 3, 1, 1, 1, True),
        ("depthwise 3x3", n, 64, 56, 64, 3, 1, 1, 64, False),
        ("depthwise 3x3 s2", n, 128, 56, 128, 3, 2, 1, 128, False),
        ("depthwise 7x7 (gdconv)", n, 512, 7, 512, 7, 1, 0, 512, False),
    ]
    for s in shapes:
        for r in conv_rows(*s, a.repeats):
            out["rows"].append(r)
            print(f"{r['kernel']:<24} {r['direction']:<9} {r['shape']:<36} {r['median_ms']:9.3f} ms "
                  f"{r['gflops']:8.2f} GFLOP/s", flush=True)
    m1, m2 = torch.randn(1024, 1024, device=DEVICE), torch.randn(1024, 1024, device=DEVICE)
    ms = median_ms(lambda: m1 @ m2, a.repeats)
    out["rows"].append({"kernel": "matmul 1024^3", "direction": "forward", "shape": "1024x1024 @ 1024x1024",
                        "median_ms": ms, "gflops": 2 * 1024 ** 3 / ms * 1e-6})
    print(f"matmul 1024^3: {ms:.3f} ms, {2 * 1024 ** 3 / ms * 1e-6:.1f} GFLOP/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
