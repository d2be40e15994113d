"""Rebuilds an f32 verifier graph from a dynamically quantised one (export_onnx.py --int8): each
int8/uint8 weight back to floats ((q - zero point) x scale, per tensor or per output channel),
written into the f32 graph export_onnx.py builds (same initializer names). The shipped model of
the first slice exists only as that int8 graph; this lets quantize.py requantise it weight-only
without retraining (a retraining is a new draw: trainings differ by several points).

    python3 tools/cache-verifier/dequantize.py INT8.onnx F32_TEMPLATE.onnx OUT.onnx

F32_TEMPLATE is any f32 export of export_onnx.py (its weights are all replaced).
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main():
    src, template, out = sys.argv[1:4]
    q = {i.name: numpy_helper.to_array(i) for i in onnx.load(src).graph.initializer}
    model = onnx.load(template)
    for init in model.graph.initializer:
        if init.name in q:
            value = q[init.name]
        elif init.name + "_quantized" in q:
            w = q[init.name + "_quantized"].astype(np.float32)
            scale = q[init.name + "_scale"].astype(np.float32)
            zero = q[init.name + "_zero_point"].astype(np.float32)
            value = (w - zero) * scale  # per tensor, or per output channel (the last axis)
        else:
            sys.exit(f"{src} has no weight {init.name}")
        ref = numpy_helper.to_array(init)
        if value.shape != ref.shape:
            sys.exit(f"{init.name}: shape {value.shape}, template {ref.shape}")
        init.CopyFrom(numpy_helper.from_array(value.astype(ref.dtype), init.name))
    onnx.save(model, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
