"""Scores the labelled question set with an exported verifier graph (f32 or int8) through ONNX
Runtime, with the same threshold rule (wrong hits at most 1 % on validate) and report as
cross_encoder.py.

    python3 tools/cache-verifier/eval_onnx.py MODEL.onnx WEIGHTS_DIR
"""
import sys

import numpy as np
import onnxruntime as ort

import cross_encoder as ce


def main():
    model, weights = sys.argv[1], sys.argv[2]
    tok = ce.tokenizer(weights)
    sess = ort.InferenceSession(model)
    split = ce.splits()
    scores = {}
    for s, rows in split.items():
        out = []
        for r in rows:
            e = tok.encode(r["a"], r["b"])
            ids = np.array([e.ids], np.int64)
            out.append(float(sess.run(None, {
                "input_ids": ids, "attention_mask": np.ones_like(ids),
                "token_type_ids": np.array([e.type_ids], np.int64)})[0][0, 0]))
        scores[s] = np.array(out)
    ys = {s: np.array([r["hit"] for r in split[s]], int) for s in split}
    t = ce.report(scores, ys, split)
    print(f"threshold (logit) {t:.4f}")


if __name__ == "__main__":
    main()
