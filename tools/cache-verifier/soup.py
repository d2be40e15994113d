"""Averages the weights of fine-tuned verifiers (.npz files from cross_encoder.py --save) into one
model of the same size ("model soup": fine-tunes of the same base weights with other seeds land
in one basin, and their average is usually better than each, at no cost in size or time). The
threshold is not averaged: eval_onnx.py chooses it on validate for the graph that ships.

    python3 tools/cache-verifier/soup.py OUT.npz A.npz B.npz [...]
"""
import sys

import numpy as np


def main():
    out, srcs = sys.argv[1], sys.argv[2:]
    models = [dict(np.load(s)) for s in srcs]
    keys = [k for k in models[0] if not k.endswith("threshold")]
    soup = {k: np.mean([m[k] for m in models], axis=0).astype(models[0][k].dtype) for k in keys}
    soup["threshold"] = np.float32(np.mean([m["threshold"] for m in models]))
    np.savez(out, **soup)
    print(f"wrote {out} from {len(models)} models")


if __name__ == "__main__":
    main()
