"""Experiment: the cross-encoder's score combined with the alignment features of features.py.

Out-of-fold cross-encoder scores on the tune split (3 folds) train a logistic regression over
[cross-encoder logit, cosine, alignment, order, overlap, number and negation mismatch]; the
cross-encoder trained on the whole tune split scores validate and test; the threshold is chosen on
validate (wrong hits at most 1 %) and the figures are reported on test.

    python3 tools/cache-verifier/combine.py WEIGHTS_DIR
"""
import sys

import numpy as np

import cross_encoder as ce
import features as fe


def main():
    weights = sys.argv[1]
    split = ce.splits()
    tune = split["tune"]
    folds = np.arange(len(tune)) % 3
    oof = np.zeros(len(tune))
    for k in range(3):
        print(f"fold {k + 1}/3", flush=True)
        p = ce.train(weights, [r for r, f in zip(tune, folds) if f != k], epochs=2, lr=2e-5)
        held = [r for r, f in zip(tune, folds) if f == k]
        oof[folds == k] = ce.predict(weights, p, held)
    print("full model", flush=True)
    p = ce.train(weights, tune, epochs=2, lr=2e-5)
    cescore = {"tune": oof, **{s: ce.predict(weights, p, split[s]) for s in ("validate", "test")}}
    enc, cache = fe.Encoder(), {}
    X = {s: np.array([[c] + fe.features(enc, cache, r["a"], r["b"]) for r, c in
                      zip(split[s], cescore[s])]) for s in split}
    ys = {s: np.array([r["hit"] for r in split[s]], int) for s in split}
    model = fe.train(X["tune"], ys["tune"].astype(float))
    print("weights (standardised):", np.round(model[2], 2).tolist(), flush=True)
    scores = {s: fe.predict(model, X[s]) for s in split}
    print("-- cross-encoder alone")
    ce.report({s: cescore[s] for s in split}, ys, split)
    print("-- combined")
    ce.report(scores, ys, split)


if __name__ == "__main__":
    main()
