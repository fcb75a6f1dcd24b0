"""facenet-pytorch's MTCNN (CPU) on what `arcface bench detect` times: the
bundled London photo (300x300) as it is and scaled to each size, default
settings, one warm-up call, then the median of the timed calls.

    python benches/peers/facenet_detect.py --sizes 300,1350 --threads 2 --repeats 3 --json

Never a test dependency: `pip install torch` and
`pip install --no-deps facenet-pytorch` (plus `requests tqdm pillow`).
"""
import argparse
import json
import pathlib
import time

import torch
from facenet_pytorch import MTCNN
from PIL import Image

PHOTO = pathlib.Path(__file__).resolve().parents[2] / "data" / "london" / "001" / "neutral.jpg"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="300,1350")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--photo", default=str(PHOTO))
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    mtcnn = MTCNN(keep_all=True, device="cpu")
    photo = Image.open(a.photo).convert("RGB")
    rows = []
    for s in [int(v) for v in a.sizes.split(",")]:
        img = photo if s == photo.width else photo.resize((s, s), Image.BILINEAR)
        times = []
        faces = 0
        for i in range(max(a.repeats, 1) + 1):
            t = time.perf_counter()
            boxes, _ = mtcnn.detect(img)
            if i > 0:
                times.append(time.perf_counter() - t)
            faces = 0 if boxes is None else len(boxes)
        times.sort()
        rows.append({"peer": f"facenet-pytorch (torch {torch.__version__})", "width": s, "height": s,
                     "faces": faces, "seconds": times[len(times) // 2], "threads": a.threads})
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['width']}x{r['height']}: {r['seconds']:.3f} s per photo, {r['faces']} face(s) "
                  f"(median of {a.repeats}, {r['peer']}, {a.threads} threads)")


if __name__ == "__main__":
    main()
