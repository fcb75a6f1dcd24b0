"""arcface/PyTorch ratios from `arcface bench kernels --json`, `arcface bench
train --json` and `pytorch.py --json` of one run (see README.md)."""
import json
import sys


def main(kernels, train, peer):
    k, t, p = (json.load(open(f)) for f in (kernels, train, peer))
    nchw = next(r for r in p["train"] if not r["channels_last"])
    cl = next(r for r in p["train"] if r["channels_last"])
    ours = t["images_per_s"]
    print(f"MobileFaceNet + ArcFace training, batch {t['batch']}: arcface {ours:.2f} images/s, "
          f"PyTorch {nchw['images_per_s']:.1f} (NCHW) / {cl['images_per_s']:.1f} (channels-last): "
          f"1/{nchw['images_per_s'] / ours:.1f} of NCHW")
    peers = {(r["kernel"], r["direction"], r["shape"]): r for r in p["rows"]}
    print("| kernel | direction | shape | arcface GFLOP/s | PyTorch GFLOP/s | arcface/PyTorch |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in k["rows"]:
        q = peers.get((r["kernel"], r["direction"], r["shape"]))
        if q:
            print(f"| {r['kernel']} | {r['direction']} | {r['shape']} | {r['gflops']:.2f} | {q['gflops']:.1f} | "
                  f"{r['gflops'] / q['gflops']:.3f} |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
