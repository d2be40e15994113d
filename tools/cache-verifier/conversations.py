"""Synthetic conversation pairs for training the cache verifier on conversations (issue 13).

The labelled conversation set has 173 tune pairs, too few to teach a model which earlier turns
matter. This script builds conversations out of the TUNE split only (question pairs, their
contrastive edits from augment.py, and tune questions), so the model learns from the question
judgements it already has that:

- an earlier turn said in other words keeps the answer, an earlier turn that is a trap of it (a
  number, a name, a negation, an antonym...) does not ("context" rows: the earlier turn is the
  question pair, the last turn the same follow-up);
- the last turn is judged as before when the context is the same ("last" rows);
- greetings, thanks and small talk added or removed do not change the answer ("chatter" rows),
  but do not hide a trap in the last turn either;
- another subject earlier changes it ("swap" rows).

    python3 tools/cache-verifier/augment.py > aug.jsonl
    python3 tools/cache-verifier/conversations.py aug.jsonl > conv.jsonl

Deterministic (seeded). Rows look like tests/fixtures/cache/conversations.jsonl (a and b are
message lists) with split "augment". Never used for validate or test.
"""
import json
import pathlib
import random
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Assistant replies that carry no facts (two conversations may differ in them).
ACKS = ["Sure, I can help with that.", "Happy to help. What would you like to know?",
        "Got it.", "Thanks for the details.", "Okay, let's look at that.",
        "Good question. Anything specific?", "I can help. Go ahead.", "Understood.",
        "Sure, what do you need?", "Thanks, noted.", "Of course.", "Let me help you with that.",
        "Alright, tell me more.", "No problem.", "Great, I'm listening."]
# Follow-ups whose answer depends on the earlier turn.
FOLLOWUPS = ["How long does that take?", "What does it cost?", "Can you explain that in more detail?",
             "What are the steps?", "Is there a faster way?", "What should I do first?",
             "Are there any risks?", "Can you give me an example?", "What do I need for that?",
             "Why is that?", "Is it worth it?", "What happens if it doesn't work?",
             "Where do I start?", "Can you summarize it?", "What's the catch?",
             "Who should I contact about it?", "How often should I do it?",
             "What are the alternatives?", "Can you do that for me?", "What do you recommend?"]
# Small talk a user may add or leave out (user turn, assistant reply).
CHATTER = [("Hi there!", "Hello! How can I help?"), ("Hello", "Hi! What can I do for you?"),
           ("Thanks for the help earlier.", "You're welcome!"), ("ok", "Anything else?"),
           ("Good morning!", "Good morning! How can I help?"),
           ("Sorry, I'm in a bit of a rush.", "No problem, let's be quick."),
           ("Hey, hope you're doing well.", "Thanks, I am! What do you need?"),
           ("Thanks!", "Glad to help."), ("Great, thank you.", "You're welcome."),
           ("Sorry if this is a silly question.", "Not at all, ask away."),
           ("I have another question.", "Sure, go ahead."), ("Cool.", "Anything else?"),
           ("You've been very helpful.", "Happy to hear that!"), ("hmm ok", "Let me know."),
           ("Quick one before I go.", "Sure."), ("That makes sense.", "Great.")]


# Questions said as the statements users open a conversation with ("How do I cancel my order?"
# -> "I want to cancel my order."): both sides of a pair get the same frame, so the label holds.
STATEMENTS = [
    (r"^(?:How do I|How can I|How to|How should I|What's the best way to|What is the best way to) (.+?)\??$",
     ["I want to {}.", "I need to {}.", "I'm trying to {}.", "I'd like to {}."]),
    (r"^(?:Can I|Could I|Am I able to|Is it possible to) (.+?)\??$",
     ["I'd like to {}.", "I'm hoping to {}.", "I want to {}."]),
    (r"^(?:What is|What's|What are|Tell me about) (.+?)\??$",
     ["I'm curious about {}.", "I have a question about {}.", "I'm reading up on {}."]),
    (r"^(?:Should I|Is it a good idea to) (.+?)\??$",
     ["I'm thinking about whether to {}.", "I'm considering whether to {}."]),
]


def as_statement(q, frame):
    """`q` said in statement frame number `frame` of its pattern, or None."""
    for pattern, outs in STATEMENTS:
        m = re.match(pattern, q.strip(), re.IGNORECASE)
        if m:
            body = m.group(1).strip().rstrip("?.!")
            return outs[frame % len(outs)].format(body)
    return None


def user(t):
    return {"role": "user", "content": t}


def assistant(t):
    return {"role": "assistant", "content": t}


def row(a, b, hit, kind, style):
    return {"a": a, "b": b, "hit": hit, "kind": kind, "style": style, "domain": "augment",
            "split": "augment"}


def main():
    questions = [json.loads(l) for l in open(ROOT / "tests/fixtures/cache/questions.jsonl")]
    tune = [r for r in questions if r["split"] == "tune"]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    edits = [json.loads(l) for l in open(args[0])] if args else []
    pairs = tune + edits
    # --all-tune: every labelled tune pair (reworded paraphrases and traps, which the edits are
    # not) is also said as an earlier turn and as a statement, beside the sample of edits.
    every = tune if "--all-tune" in sys.argv else []
    singles = sorted({r["a"] for r in tune} | {r["b"] for r in tune})
    rng = random.Random(29)
    out = []
    # Context rows: the pair is the earlier turn, the follow-up is the same.
    for r in every + rng.sample(pairs, min(1100, len(pairs))):
        f = rng.choice(FOLLOWUPS)
        a = [user(r["a"]), assistant(rng.choice(ACKS)), user(f)]
        b = [user(r["b"]), assistant(rng.choice(ACKS)), user(f)]
        out.append(row(a, b, r["hit"], r["kind"], "context"))
    # Statement rows: the pair said as statements opening the conversation (both sides in the
    # same frame, or in two frames for paraphrases: frames keep meaning), the same follow-up.
    n = 0
    for r in every + rng.sample(pairs, len(pairs)):
        fa = rng.randrange(4)
        fb = fa if not r["hit"] or rng.random() < 0.5 else rng.randrange(4)
        sa, sb = as_statement(r["a"], fa), as_statement(r["b"], fb)
        if not sa or not sb or sa == sb:
            continue
        f = rng.choice(FOLLOWUPS)
        a = [user(sa), assistant(rng.choice(ACKS)), user(f)]
        b = [user(sb), assistant(rng.choice(ACKS)), user(f)]
        out.append(row(a, b, r["hit"], r["kind"], "statement"))
        n += 1
        if n >= 900 + len(every) // 2:
            break
    # Last-turn rows: same context, the pair is the last turn.
    for r in rng.sample(pairs, min(700, len(pairs))):
        c, ack = rng.choice(singles), rng.choice(ACKS)
        a = [user(c), assistant(ack), user(r["a"])]
        b = [user(c), assistant(rng.choice([ack] + ACKS)), user(r["b"])]
        out.append(row(a, b, r["hit"], r["kind"], "last"))
    # Chatter rows: small talk on one side (or different small talk on both); the last turns
    # are a pair, so chatter neither makes nor hides a difference.
    for r in rng.sample(pairs, min(700, len(pairs))):
        same = rng.random() < 0.4
        qa, qb, hit = (r["a"], r["a"], True) if same else (r["a"], r["b"], r["hit"])
        u1, a1 = rng.choice(CHATTER)
        a = [user(u1), assistant(a1), user(qa)]
        if rng.random() < 0.5:
            b = [user(qb)]
        else:
            u2, a2 = rng.choice(CHATTER)
            b = [user(u2), assistant(a2), user(qb)]
        if rng.random() < 0.5:
            a, b = b, a
        out.append(row(a, b, hit, r["kind"] if not same else "paraphrase", "chatter"))
    # Chatter between a context and its follow-up.
    for r in rng.sample([p for p in pairs if p["hit"]], 250):
        f = rng.choice(FOLLOWUPS)
        u1, a1 = rng.choice(CHATTER)
        a = [user(r["a"]), assistant(rng.choice(ACKS)), user(u1), assistant(a1), user(f)]
        b = [user(r["b"]), assistant(rng.choice(ACKS)), user(f)]
        out.append(row(a, b, True, "paraphrase", "chatter-context"))
    # Another subject earlier, the same follow-up.
    for _ in range(300):
        c1, c2 = rng.sample(singles, 2)
        f = rng.choice(FOLLOWUPS)
        a = [user(c1), assistant(rng.choice(ACKS)), user(f)]
        b = [user(c2), assistant(rng.choice(ACKS)), user(f)]
        out.append(row(a, b, False, "context-swap", "swap"))
    for r in out:
        print(json.dumps(r))
    print(f"{len(out)} conversation pairs: {sum(r['hit'] for r in out)} hit, "
          f"{sum(not r['hit'] for r in out)} miss", file=sys.stderr)


if __name__ == "__main__":
    main()
