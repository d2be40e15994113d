"""Experiment: the verifier's logit plus a weight times the embedding model's cosine (which the
cache has already computed for every candidate). The fine-tuned cross-encoder learned from ~900
pairs; the bi-encoder's cosine carries what all-MiniLM-L6-v2 learned from a billion sentence
pairs about paraphrases. The weight and the threshold are chosen on validate (served at most 1 %
wrong), the figures reported on test.

    python3 tools/cache-verifier/with_cosine.py VERIFIER.onnx WEIGHTS_DIR [EMBEDDER.onnx]
"""
import pathlib
import sys

import numpy as np

import cross_encoder as ce
import eval_onnx

ROOT = pathlib.Path(__file__).resolve().parents[2]


def cosines(sess, tok, split):
    def embed(text):
        e = tok.encode(text)
        ids = np.array([e.ids], np.int64)
        h = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                            "token_type_ids": np.zeros_like(ids)})[0][0]
        v = h.mean(0)
        return v / np.linalg.norm(v)
    return {s: np.array([float(embed(ce.render(r["a"], r["b"])[0]) @
                               embed(ce.render(r["a"], r["b"])[1])) for r in rows])
            for s, rows in split.items()}


def served_at(s, y, wrong=0.01):
    grid = np.quantile(s, np.linspace(0, 1, 400))
    t = min((g for g in grid if ce.rates(s, y, g)[1] <= wrong), default=s.max() + 1)
    return ce.rates(s, y, t)[0], t


def main():
    model, weights = sys.argv[1], sys.argv[2]
    emb = sys.argv[3] if len(sys.argv) > 3 else str(ROOT / "models/all-MiniLM-L6-v2/model.onnx")
    tok = ce.tokenizer(weights)
    split = ce.splits()
    ys = {s: np.array([r["hit"] for r in split[s]], int) for s in split}
    logit = eval_onnx.scores(eval_onnx.session(model), tok, split)
    cos = cosines(eval_onnx.session(emb), tok, split)
    best = max((served_at(logit["validate"] + w * cos["validate"], ys["validate"])[0], w)
               for w in np.arange(0, 40.5, 2.0))
    print(f"weight chosen on validate: {best[1]} (validate served {best[0] * 100:.1f} %)")
    for w in sorted({0.0, best[1]}):
        print(f"-- logit + {w} x cosine")
        ce.report({s: logit[s] + w * cos[s] for s in split}, ys, split)


if __name__ == "__main__":
    main()
