"""Runs an ONNX model in ONNX Runtime on raw float32 inputs (tests/export.rs).

usage: onnx_run.py MODEL.onnx INPUT.f32 N C H W OUT_DIR
Writes each output as OUT_DIR/<name>.f32 (raw little-endian float32) and
prints the outputs' names and shapes as JSON.
"""
import json
import sys

import numpy as np
import onnxruntime as ort

model, inputs, n, c, h, w, out_dir = sys.argv[1:8]
x = np.fromfile(inputs, dtype="<f4").reshape(int(n), int(c), int(h), int(w))
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
shapes = {}
for meta, value in zip(session.get_outputs(), session.run(None, {name: x})):
    value.astype("<f4").tofile(f"{out_dir}/{meta.name}.f32")
    shapes[meta.name] = list(value.shape)
print(json.dumps({"outputs": shapes, "onnxruntime": ort.__version__}))
