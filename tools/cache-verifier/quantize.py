"""Weight-only int8 quantisation of an exported verifier graph (export_onnx.py), the one the
gateway ships: every weight matrix becomes 8-bit with one scale per block of 32 input rows
(ONNX Runtime's MatMulNBits, activations stay f32), and the word-embedding table 8-bit with one
scale per row (Gather of int8 rows, Cast, Mul by the row's scale: standard operators). Against
the dynamic quantisation used before (int8 weights per output channel and uint8 activations per
tensor, computed in integers) it keeps the f32 model's decisions: the activations' outliers are
what per-tensor activation quantisation lost.

    python3 tools/cache-verifier/quantize.py F32.onnx OUT.onnx [--block 32] [--accuracy-level 0]
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                              MatMulNBitsQuantizer)


def embeddings_int8(model, name="embeddings_word_embeddings_weight"):
    """Replaces the Gather on the initializer whose name starts with `name` by an int8 table with
    a scale per row."""
    g = model.graph
    init = next(i for i in g.initializer if i.name.startswith(name))
    table = numpy_helper.to_array(init).astype(np.float32)
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    g.initializer.remove(init)
    g.initializer.extend([numpy_helper.from_array(q, init.name + "_q8"),
                          numpy_helper.from_array(scale.astype(np.float32), init.name + "_scale")])
    for i, node in enumerate(list(g.node)):
        if node.op_type == "Gather" and node.input[0] == init.name:
            ids, out = node.input[1], node.output[0]
            new = [helper.make_node("Gather", [init.name + "_q8", ids], [out + "_q8"], axis=0),
                   helper.make_node("Cast", [out + "_q8"], [out + "_f"], to=TensorProto.FLOAT),
                   helper.make_node("Gather", [init.name + "_scale", ids], [out + "_s"], axis=0),
                   helper.make_node("Mul", [out + "_f", out + "_s"], [out])]
            g.node.remove(node)
            for k, n in enumerate(new):
                g.node.insert(i + k, n)
            return
    raise SystemExit(f"no Gather reads {init.name}")


def main():
    src, out = sys.argv[1], sys.argv[2]
    arg = lambda k, d: type(d)(sys.argv[sys.argv.index(k) + 1]) if k in sys.argv else d
    model = onnx.load(src)
    config = DefaultWeightOnlyQuantConfig(block_size=arg("--block", 32), is_symmetric=True,
                                          accuracy_level=arg("--accuracy-level", 0), bits=8,
                                          op_types_to_quantize=("MatMul",))
    q = MatMulNBitsQuantizer(model, algo_config=config)
    q.process()
    model = q.model.model
    embeddings_int8(model)
    onnx.save(model, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
