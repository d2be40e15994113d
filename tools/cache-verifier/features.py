"""Prototype of a learned verifier for the semantic cache (issue 13): features of a question pair
from the embedding model's token states, and a logistic regression trained on the tune split.

    python3 tools/cache-verifier/features.py   (needs onnxruntime, tokenizers, numpy)

Features (both directions where it matters):
  cos         cosine of the mean-pooled sentence vectors (what the cache uses today)
  align_min   the worst-aligned content token: min over tokens of max cosine to the other side
  align_mean  mean of those maxima
  order       how well the order of aligned tokens is kept (Kendall tau of matched positions)
  lex         Jaccard overlap of lower-cased word sets
  numbers     1 when the two sides carry different numbers
  neg         1 when exactly one side carries a negation word
"""
import json
import math
import pathlib
import re
import sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "all-MiniLM-L6-v2"
NEG = {"not", "no", "never", "don't", "dont", "doesn't", "isn't", "aren't", "can't", "cannot",
       "won't", "wasn't", "weren't", "shouldn't", "wouldn't", "didn't", "haven't", "hasn't",
       "without", "n't", "avoid", "excluded", "exclude", "unsafe"}
STOP = {"the", "a", "an", "of", "to", "in", "on", "for", "is", "are", "do", "does", "i", "my",
        "me", "how", "what", "can", "should", "it", "and", "or", "with", "this", "that", "be",
        "you", "your", "?", ".", ",", "[CLS]", "[SEP]"}


class Encoder:
    def __init__(self):
        self.tok = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(256)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(str(MODEL / "model.onnx"), opts)
        self.inputs = {i.name for i in self.sess.get_inputs()}

    def states(self, text):
        enc = self.tok.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        out = self.sess.run(None, feed)[0][0]
        return enc.tokens, out


def unit(v):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-9)


def kendall(seq):
    n = len(seq)
    if n < 2:
        return 1.0
    agree = sum(1 if seq[j] > seq[i] else -1 for i in range(n) for j in range(i + 1, n)
                if seq[j] != seq[i])
    return agree / (n * (n - 1) / 2)


def words(t):
    return set(re.findall(r"[a-z0-9']+", t.lower()))


def numbers(t):
    return set(re.findall(r"\d+(?:[.,]\d+)?", t))


def features(enc, cache, a, b):
    for t in (a, b):
        if t not in cache:
            cache[t] = enc.states(t)
    (ta, sa), (tb, sb) = cache[a], cache[b]
    va, vb = unit(sa.mean(0)), unit(sb.mean(0))
    cos = float(va @ vb)
    ua, ub = unit(sa), unit(sb)
    sim = ua @ ub.T
    keep_a = [i for i, t in enumerate(ta) if t not in STOP]
    keep_b = [j for j, t in enumerate(tb) if t not in STOP]
    if not keep_a:
        keep_a = list(range(len(ta)))
    if not keep_b:
        keep_b = list(range(len(tb)))
    best_ab = sim[keep_a][:, keep_b].max(1)
    best_ba = sim[keep_a][:, keep_b].max(0)
    align_min = float(min(best_ab.min(), best_ba.min()))
    align_mean = float((best_ab.mean() + best_ba.mean()) / 2)
    match = [keep_b[int(k)] for k in sim[keep_a][:, keep_b].argmax(1)]
    order = kendall(match)
    wa, wb = words(a), words(b)
    lex = len(wa & wb) / max(1, len(wa | wb))
    num = 1.0 if numbers(a) != numbers(b) else 0.0
    neg = 1.0 if bool(wa & NEG) != bool(wb & NEG) else 0.0
    return [cos, align_min, align_mean, order, lex, num, neg]


NAMES = ["cos", "align_min", "align_mean", "order", "lex", "numbers", "neg"]


def expand(f):
    cos, amin, amean, order, lex, num, neg = f
    return [cos, amin, amean, order, lex, num, neg, cos * lex, amin * order, (1 - lex) * cos,
            amean * order]


def train(X, y, l2=1e-2, steps=4000, lr=0.5):
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = (X - mu) / sd
    w = np.zeros(Z.shape[1])
    b = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(Z @ w + b)))
        g = p - y
        w -= lr * (Z.T @ g / len(y) + l2 * w)
        b -= lr * g.mean()
    return mu, sd, w, b


def predict(model, X):
    mu, sd, w, b = model
    return 1 / (1 + np.exp(-(((X - mu) / sd) @ w + b)))


def rates(p, y, t):
    served = ((p >= t) & (y == 1)).sum() / max(1, (y == 1).sum())
    wrong = ((p >= t) & (y == 0)).sum() / max(1, (y == 0).sum())
    return served, wrong


def main():
    pairs = [json.loads(l) for l in open(ROOT / "tests/fixtures/cache/questions.jsonl")]
    enc, cache = Encoder(), {}
    X = {s: [] for s in ("tune", "validate", "test")}
    Y = {s: [] for s in X}
    P = {s: [] for s in X}
    for p in pairs:
        X[p["split"]].append(expand(features(enc, cache, p["a"], p["b"])))
        Y[p["split"]].append(1.0 if p["hit"] else 0.0)
        P[p["split"]].append(p)
    X = {k: np.array(v) for k, v in X.items()}
    Y = {k: np.array(v) for k, v in Y.items()}
    model = train(X["tune"], Y["tune"])
    # Threshold chosen on validate: the lowest that keeps wrong hits at or below 1 %.
    pv = predict(model, X["validate"])
    t = min((t for t in np.linspace(0.3, 0.999, 300) if rates(pv, Y["validate"], t)[1] <= 0.01),
            default=0.999)
    for s in ("tune", "validate", "test"):
        served, wrong = rates(predict(model, X[s]), Y[s], t)
        print(f"{s:9} served {served * 100:5.1f}%  wrong {wrong * 100:4.1f}%  (t={t:.3f})")
    pt = predict(model, X["test"])
    by = {}
    for p, score in zip(P["test"], pt):
        k = (p["kind"], p["style"])
        n, ok = by.get(k, (0, 0))
        by[k] = (n + 1, ok + int(score >= t))
    for k, (n, ok) in sorted(by.items()):
        print(f"  test {k[0]:>11}/{k[1]:<8} {n:4d}  served {ok / n * 100:5.1f}%")
    if "--dump" in sys.argv:
        mu, sd, w, b = model
        print(json.dumps({"mu": mu.tolist(), "sd": sd.tolist(), "w": w.tolist(), "b": b,
                          "threshold": t}))


if __name__ == "__main__":
    main()
