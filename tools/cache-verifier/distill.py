"""Experiment: distil a larger cross-encoder (the teacher, e.g. all-mpnet-base-v2 fine-tuned by
cross_encoder.py) into the small verifier the gateway runs (all-MiniLM-L6-v2), through many more
pairs than the labelled set has, each labelled by the teacher's probability.

    pip install "jax[cpu]" optax safetensors tokenizers numpy scikit-learn
    python3 tools/cache-verifier/distill.py TEACHER.npz TEACHER_WEIGHTS STUDENT_WEIGHTS \
        AUGMENTED.jsonl CROSSED.jsonl --save OUT.npz [--cap 250] [--temp 2] [--neighbours 2] \
        [--seed 1] [--epochs 2]

The student trains on what the shipped recipe trains on (the tune split and at most --cap
contrastive edits of each kind, hard labels) plus a pool with the teacher's soft labels:
- the contrastive edits beyond the cap (AUGMENTED.jsonl, from augment.py),
- crossed pairs (the rows of CROSSED.jsonl whose kind starts with "crossed", augment.py --crossed),
- neighbours: each tune question with its --neighbours nearest other tune questions by TF-IDF
  cosine (same domain, other question: mostly traps, the odd paraphrase).
Every pool pair is built from TUNE questions only; validate chooses the threshold and test is
reported, as in cross_encoder.py.

Measured once (docs/cache.md, "A larger teacher"): with --temp 2 the student was far worse than
the shipped recipe; not used for the shipped model.
"""
import json
import sys

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

import cross_encoder as ce


def neighbours(tune, k):
    qs = sorted({r["a"] for r in tune} | {r["b"] for r in tune})
    labelled = {(r["a"], r["b"]) for r in tune} | {(r["b"], r["a"]) for r in tune}
    m = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(qs)
    sim = (m @ m.T).toarray()
    np.fill_diagonal(sim, -1)
    out, seen = [], set()
    for i, q in enumerate(qs):
        taken = 0
        for j in np.argsort(-sim[i])[: k + 4]:
            pair = tuple(sorted((q, qs[j])))
            if pair in seen or (q, qs[j]) in labelled or q.lower() == qs[j].lower():
                continue
            seen.add(pair)
            out.append({"a": q, "b": qs[j], "kind": "neighbour"})
            taken += 1
            if taken >= k:
                break
    return out


def main():
    teacher_npz, tw, sw, aug, crossed = sys.argv[1:6]
    arg = lambda key, d: type(d)(sys.argv[sys.argv.index(key) + 1]) if key in sys.argv else d
    split = ce.splits()
    kept, rest = ce.capped([json.loads(l) for l in open(aug)], arg("--cap", 250))
    cross = [r for r in map(json.loads, open(crossed)) if r["kind"].startswith("crossed")]
    near = neighbours(split["tune"], arg("--neighbours", 2))
    pool = rest + cross + near
    print(f"hard: tune {len(split['tune'])} + edits {len(kept)}; pool: edits {len(rest)}, "
          f"crossed {len(cross)}, neighbours {len(near)}", flush=True)

    t = np.load(teacher_npz)
    teacher = {k: ce.jnp.asarray(t[k]) for k in t.files if not k.endswith("threshold")}
    logits = ce.predict(tw, teacher, pool)
    temp = arg("--temp", 2.0)
    soft = 1 / (1 + np.exp(-(logits - float(t["threshold"])) / temp))
    print(f"teacher logits: quantiles {np.quantile(logits, [0.05, 0.25, 0.5, 0.75, 0.95]).round(2)}"
          f", threshold {float(t['threshold']):.2f}; soft labels mean {soft.mean():.3f}", flush=True)
    for kind in ("neighbour", "crossed"):
        sel = np.array([r["kind"].startswith(kind) for r in pool])
        print(f"  {kind}: {sel.sum()} pairs, teacher would serve {(soft[sel] > 0.5).mean() * 100:.1f} %")
    for r, s in zip(pool, soft):
        r["hit"] = float(s)
    if "--pool-out" in sys.argv:
        with open(arg("--pool-out", ""), "w") as f:
            for r in pool:
                f.write(json.dumps(r) + "\n")

    p = ce.train(sw, split["tune"] + kept + pool, arg("--epochs", 2), arg("--lr", 2e-5),
                 arg("--seed", 1))
    scores = {s: ce.predict(sw, p, split[s]) for s in split}
    ys = {s: np.array([r["hit"] for r in split[s]], int) for s in split}
    threshold = ce.report(scores, ys, split)
    out = arg("--save", "")
    if out:
        np.savez(out, threshold=np.float32(threshold), **{k: np.asarray(v) for k, v in p.items()})
        print(f"saved {out}")


if __name__ == "__main__":
    main()
