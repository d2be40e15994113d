"""Scores the labelled question set (and, with --conversations, the conversation set) with an
exported verifier graph (f32 or int8) through ONNX Runtime, with the same threshold rule (wrong
hits at most 1 % on validate) and report as cross_encoder.py: the thresholds it prints are the
ones verifier.json carries (`threshold`, `conversation_threshold`).

    python3 tools/cache-verifier/eval_onnx.py MODEL.onnx WEIGHTS_DIR [--conversations]
"""
import sys

import numpy as np
import onnxruntime as ort

import cross_encoder as ce


def session(model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, opts)


def scores(sess, tok, split):
    """The graph's logit for every pair of every split, one pair per run (as the gateway)."""
    out = {}
    for s, rows in split.items():
        v = []
        for r in rows:
            e = tok.encode(*ce.render(r["a"], r["b"]))
            ids = np.array([e.ids], np.int64)
            v.append(float(sess.run(None, {
                "input_ids": ids, "attention_mask": np.ones_like(ids),
                "token_type_ids": np.array([e.type_ids], np.int64)})[0][0, 0]))
        out[s] = np.array(v)
    return out


def main():
    model, weights = sys.argv[1], sys.argv[2]
    tok = ce.tokenizer(weights)
    sess = session(model)
    sets = ["questions"] + (["conversations"] if "--conversations" in sys.argv else [])
    for name in sets:
        print(f"== {name}")
        split = ce.splits(name)
        by_split = scores(sess, tok, split)
        ys = {s: np.array([r["hit"] for r in split[s]], int) for s in split}
        t = ce.report(by_split, ys, split)
        print(f"{name} threshold (logit) {t:.4f}")


if __name__ == "__main__":
    main()
