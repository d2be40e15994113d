"""Contrastive minimal edits for training the cache verifier (issue 13).

The labelled set's traps are mostly minimal edits of a question, and its near paraphrases are
few, so a model trained on it alone learns "a small edit means a trap" and refuses "How do I
cancel my order?" / "How can I cancel my order?". This script takes the questions of the TUNE
split only and makes, for each, edits that keep the meaning (wording of the question frame,
contractions, politeness, punctuation and case, a typo) and edits that change it (a number, a
named thing from the same list, negation, an antonym, swapped roles, scope, time frame, unit).
Both kinds touch a word or two, so the model must learn which words matter, not how many changed.

    python3 tools/cache-verifier/augment.py > /tmp/augmented.jsonl
    python3 tools/cache-verifier/augment.py --crossed 2000 > /tmp/augmented.jsonl

With --crossed N, also N pairs that cross a labelled tune pair with an edit of one side (see
crossed(); measured in docs/cache.md, not used for the shipped model).

Deterministic (seeded); rows look like the labelled set's with kind/style naming the edit and
split "augment". Never used for validate or test.
"""
import json
import pathlib
import random
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Meaning-keeping rewrites of the question frame (pattern, replacements), case-insensitive at the
# start of the question.
FRAMES = [
    (r"^How do I ", ["How can I ", "How would I ", "What's the way to ", "How should I ", "How to "]),
    (r"^How can I ", ["How do I ", "How could I ", "What's the best way to ", "How to "]),
    (r"^What is ", ["What's ", "Tell me what ", "Can you tell me what "]),
    (r"^What's ", ["What is ", "Tell me what "]),
    (r"^What are ", ["Which are ", "Tell me what ", "Can you list "]),
    (r"^Can I ", ["Am I able to ", "Is it possible to ", "Could I ", "Is it OK to "]),
    (r"^Is it ", ["Would it be ", "Is it really "]),
    (r"^Why is ", ["Why's ", "What's the reason "]),
    (r"^Why does ", ["What makes ", "How come "]),
    (r"^Where can I ", ["Where do I ", "Where could I "]),
    (r"^When should I ", ["At what point should I ", "When is it best to "]),
    (r"^Do I need ", ["Is it necessary to have ", "Do I have to have "]),
    (r"^Should I ", ["Is it a good idea to ", "Would you recommend that I "]),
]
CONTRACTIONS = [("do not", "don't"), ("does not", "doesn't"), ("is not", "isn't"),
                ("cannot", "can't"), ("I am", "I'm"), ("it is", "it's"), ("what is", "what's"),
                ("you are", "you're"), ("will not", "won't"), ("should not", "shouldn't")]
# Words that mean the same in a question (either way round).
SYNONYMS = [("buy", "purchase"), ("car", "vehicle"), ("kids", "children"), ("child", "kid"),
            ("phone", "smartphone"), ("change", "modify"), ("fix", "repair"), ("begin", "start"),
            ("big", "large"), ("quick", "fast"), ("get rid of", "remove"),
            ("help", "assist"), ("show", "display"), ("find", "locate"),
            ("make", "create"), ("use", "utilize"), ("choose", "pick"), ("stop", "halt"),
            ("cost", "price"), ("doctor", "physician"), ("movie", "film"),
            ("trip", "journey"), ("shop", "store"), ("house", "home"), ("mistake", "error"),
            ("answer", "reply"), ("couch", "sofa"), ("fridge", "refrigerator"),
            ("luggage", "baggage"), ("cell phone", "mobile phone"), ("email", "e-mail"),
            ("check", "verify"), ("tell", "inform"),
            ("enough", "sufficient"), ("maybe", "perhaps"), ("about", "regarding"),
            ("often", "frequently"), ("right", "correct"), ("wrong", "incorrect"),
            ("hard", "difficult"), ("simple", "easy"), ("usually", "typically"),
            ("symptoms", "signs"), ("steps", "process"), ("way", "method"), ("app", "application"),
            ("pics", "photos"), ("photo", "picture"), ("TV", "television"), ("bike", "bicycle"),
            ("mom", "mother"), ("dad", "father"), ("exam", "test"), ("sick", "ill"),
            ("loan", "credit"), ("subscription", "membership"), ("cancel", "call off")]
# The same number, period, time or unit written another way: the words the traps change, changed
# without changing the meaning.
EQUIVALENT = [("a day", "per day"), ("a day", "each day"), ("per day", "daily"),
              ("every day", "daily"), ("a week", "per week"), ("each week", "weekly"),
              ("a month", "per month"), ("every month", "monthly"), ("a year", "per year"),
              ("every year", "annually"), ("tonight", "this evening"),
              ("the last", "the most recent"), ("latest", "most recent"),
              ("currently", "right now"), ("nowadays", "these days"), ("today", "this day"),
              ("kilometers", "km"), ("minutes", "mins"), ("hours", "hrs"), ("kilograms", "kg"),
              ("pounds", "lbs"), ("percent", "%"), ("World War II", "the Second World War"),
              ("US", "United States"), ("UK", "United Kingdom"), ("TV", "television"),
              ("lots of", "plenty of"), ("at least", "no less than"),
              ("at most", "no more than"), ("around", "about"), ("approximately", "roughly"), ("twice", "two times"),
              ("half an hour", "30 minutes"), ("a dozen", "12"), ("noon", "12 pm"),
              ("midnight", "12 am"), ("next to", "beside"), ("on top of", "above")]
DIGITS = {str(i): w for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
PREFIXES = ["Quick question: ", "Hi, ", "Hey! ", "Please tell me: ", "I was wondering, ",
            "Can you help? ", "Question - ", "Hello. "]
SUFFIXES = [" Thanks!", " Thank you.", " Please.", " Any ideas?", " thx"]

LISTS = [
    "France Germany Spain Italy Japan China India Brazil Canada Mexico Australia Egypt Norway Sweden Poland Portugal Greece Turkey Kenya Argentina".split(),
    "Paris London Berlin Madrid Rome Tokyo Beijing Delhi Sydney Toronto Chicago Boston Seattle Dublin Lisbon Vienna Prague Amsterdam Oslo Cairo".split(),
    "English Spanish French German Italian Portuguese Japanese Chinese Korean Arabic Russian Hindi Dutch Swedish".split(),
    "Python Java JavaScript TypeScript Rust Go C# Ruby PHP Kotlin Swift Scala".split(),
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
    "January February March April May June July August September October November December".split(),
    "iPhone Android Windows Mac Linux iPad Chromebook".split(),
    "Visa Mastercard PayPal Amex".split(),
    "dog cat rabbit hamster parrot horse goldfish".split(),
    "chicken beef pork salmon tofu rice pasta potatoes eggs".split(),
    "red blue green yellow black white".split(),
    "Mars Venus Jupiter Saturn Mercury Neptune".split(),
    "dollars euros pounds yen rupees".split(),
    "Chrome Firefox Safari Edge".split(),
    "Gmail Outlook Slack Zoom Teams".split(),
    "Amazon Netflix Spotify Uber Airbnb".split(),
    "coffee tea beer wine milk juice".split(),
    "summer winter spring autumn".split(),
]
ANTONYMS = [("more", "less"), ("higher", "lower"), ("better", "worse"), ("bigger", "smaller"),
            ("faster", "slower"), ("cheaper", "more expensive"), ("increase", "decrease"),
            ("before", "after"), ("above", "below"), ("maximum", "minimum"), ("most", "least"),
            ("longest", "shortest"), ("hot", "cold"), ("warm", "cool"), ("open", "close"),
            ("enable", "disable"), ("add", "remove"), ("buy", "sell"), ("start", "stop"),
            ("upload", "download"), ("import", "export"), ("lose", "gain"), ("raise", "lower"),
            ("early", "late"), ("safe", "dangerous"), ("good", "bad"), ("easy", "hard"),
            ("allowed", "forbidden"), ("include", "exclude"), ("accept", "reject"),
            ("win", "lose"), ("heavy", "light"), ("young", "old"), ("first", "last")]
SCOPE = [("all", "some"), ("every", "one"), ("daily", "weekly"), ("weekly", "monthly"),
         ("monthly", "yearly"), ("per day", "per week"), ("per month", "per year"),
         ("always", "sometimes"), ("any", "each")]
TIME = [("yesterday", "tomorrow"), ("last week", "next week"), ("last month", "next month"),
        ("last year", "next year"), ("today", "tomorrow"), ("this week", "next week"),
        ("in the morning", "at night"), ("now", "later")]
UNITS = [("km", "miles"), ("kilometers", "miles"), ("Celsius", "Fahrenheit"), ("kg", "pounds"),
         ("grams", "ounces"), ("hours", "minutes"), ("minutes", "seconds"), ("days", "weeks"),
         ("cups", "tablespoons"), ("ml", "liters"), ("inches", "centimeters"), ("MB", "GB")]
NUMBER_WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
AUX = r"\b(can|should|do|does|is|are|will|would|could|must)\b"


def word_sub(text, old, new):
    """Replaces the whole word `old` (first occurrence, case kept for the first letter)."""
    m = re.search(rf"\b{re.escape(old)}\b", text, re.IGNORECASE)
    if not m:
        return None
    rep = new[0].upper() + new[1:] if m.group(0)[0].isupper() else new
    return text[:m.start()] + rep + text[m.end():]


def keep_meaning(q, rng):
    out = []
    for pat, reps in FRAMES:
        if re.match(pat, q):
            out.append(("frame", re.sub(pat, rng.choice(reps), q, count=1)))
            break
    for a, b in CONTRACTIONS:
        for x, y in ((a, b), (b, a)):
            r = word_sub(q, x, y) if " " not in x else (q.replace(x, y, 1) if x in q else None)
            if r and r != q:
                out.append(("contraction", r))
                break
    for a, b in rng.sample(SYNONYMS, len(SYNONYMS)):
        r = word_sub(q, a, b) or word_sub(q, b, a)
        if r and r != q:
            out.append(("synonym", r))
            break
    for a, b in rng.sample(EQUIVALENT, len(EQUIVALENT)):
        r = word_sub(q, a, b) or word_sub(q, b, a)
        if r and r != q:
            out.append(("equivalent", r))
            break
    m = re.search(r"\b(\d{1,2})\b", q)
    if m and m.group(1) in DIGITS:
        out.append(("equivalent", q[:m.start()] + DIGITS[m.group(1)] + q[m.end():]))
    else:
        for d, w in DIGITS.items():
            r = word_sub(q, w, d) if w not in ("one",) else None
            if r:
                out.append(("equivalent", r))
                break
    # "the X of the Y" -> "the Y X", and a trailing "in/at the Y" moved to the front.
    m = re.search(r"\bthe (\w+) of (?:the |a |an |my )?(\w+)\b", q)
    if m:
        out.append(("reorder", q[:m.start()] + f"the {m.group(2)} {m.group(1)}" + q[m.end():]))
    m = re.search(r"^(.*\w) (in|at|on|for) (the|my) (\w+)([?.!]?)$", q)
    if m and not m.group(1).endswith(("how", "what")):
        out.append(("reorder", f"{m.group(2).capitalize()} {m.group(3)} {m.group(4)}, {m.group(1)[0].lower()}{m.group(1)[1:]}{m.group(5)}"))
    p = rng.choice(PREFIXES)
    out.append(("prefix", p + q[0].lower() + q[1:] if not q[:2].isupper() else p + q))
    out.append(("suffix", q + rng.choice(SUFFIXES)))
    out.append(("case", q.lower().rstrip("?.!")))
    words = [w for w in re.findall(r"[A-Za-z]{6,}", q)]
    if words:
        w = rng.choice(words)
        i = rng.randrange(1, len(w) - 2)
        typo = w[:i] + w[i + 1] + w[i] + w[i + 2:]
        out.append(("typo", q.replace(w, typo, 1)))
    return out


def change_meaning(q, rng):
    out = []
    nums = re.findall(r"\b\d+(?:[.,]\d+)?\b", q)
    if nums:
        n = rng.choice(nums)
        try:
            v = float(n.replace(",", ""))
            new = str(int(v) + rng.choice([1, 2, 5, 10, -1]) if v.is_integer() else round(v * 2, 2))
            if new != n and not new.startswith("-"):
                out.append(("number", q.replace(n, new, 1)))
        except ValueError:
            pass
    for w in NUMBER_WORDS:
        r = word_sub(q, w, rng.choice([x for x in NUMBER_WORDS if x != w]))
        if r:
            out.append(("number", r))
            break
    for lst in LISTS:
        for item in lst:
            if re.search(rf"\b{re.escape(item)}\b", q):
                other = rng.choice([x for x in lst if x != item])
                out.append(("entity", re.sub(rf"\b{re.escape(item)}\b", other, q, count=1)))
                break
    # Negation: remove one that is there, or add one after the first auxiliary.
    m = re.search(r"\b(\w+)n't\b|\bnot\b ", q)
    if m:
        if m.group(0).strip() == "not":
            out.append(("neg", q[:m.start()] + q[m.end():]))
        else:
            stem = {"don": "do", "doesn": "does", "can": "can", "won": "will", "isn": "is",
                    "aren": "are", "shouldn": "should", "didn": "did", "wouldn": "would",
                    "couldn": "could"}.get(m.group(1).lower(), m.group(1))
            out.append(("neg", q[:m.start()] + stem + q[m.end():]))
    else:
        m = re.search(AUX + r" (I|you|we|they|it|he|she) ", q, re.IGNORECASE)
        if m:
            out.append(("neg", q[:m.end()] + "not " + q[m.end():]))
        elif q.startswith("How to "):
            out.append(("neg", "How not to " + q[7:]))
    for kind, pairs in (("opposite", ANTONYMS), ("scope", SCOPE), ("timeframe", TIME), ("unit", UNITS)):
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                r = word_sub(q, x, y)
                if r:
                    out.append((kind, r))
                    break
            else:
                continue
            break
    # Roles: "from A to B" / "A to B" / "A than B" / "A into B" swapped.
    m = re.search(r"\b(from )?([A-Z]?[\w.#+-]+(?: [A-Z][\w-]+)?) (to|into|than|vs\.?|versus|over) ([A-Z]?[\w.#+-]+(?: [A-Z][\w-]+)?)\b", q)
    if m and m.group(3) in ("to", "into", "than") and m.group(2).lower() not in ("how", "what", "want", "need", "have", "going", "able", "like") and m.group(2) != m.group(4) and (m.group(2)[0].isupper() or m.group(4)[0].isupper() or m.group(1)):
        out.append(("role", q[:m.start(2)] + m.group(4) + " " + m.group(3) + " " + m.group(2) + q[m.end(4):]))
    return out


def crossed(tune, edits, rng, cap):
    """A labelled tune pair (a, b) with an edit of b: (a, b'). A paraphrase stays one under a
    meaning-keeping edit and becomes a trap under a meaning-changing one; a trap stays one under a
    meaning-keeping edit (a changing edit of a trap may undo the difference: not used). These are
    reworded pairs with a small difference on top, which the labelled set has least of."""
    by = {}
    for e in edits:
        by.setdefault(e["a"], []).append(e)
    out = []
    for r in tune:
        for a, b in ((r["a"], r["b"]), (r["b"], r["a"])):
            for e in by.get(b, []):
                if not r["hit"] and not e["hit"]:
                    continue
                out.append({"a": a, "b": e["b"], "hit": r["hit"] and e["hit"],
                            "kind": "crossed-" + e["kind"], "style": "augment",
                            "domain": "augment", "split": "augment"})
    rng.shuffle(out)
    hits = [r for r in out if r["hit"]][:cap // 2]
    traps = [r for r in out if not r["hit"]][:cap // 2]
    return hits + traps


def main():
    rows = [json.loads(l) for l in open(ROOT / "tests/fixtures/cache/questions.jsonl")]
    tune = [r for r in rows if r["split"] == "tune"]
    questions = sorted({r["a"] for r in tune} | {r["b"] for r in tune})
    rng = random.Random(13)
    seen = {(r["a"], r["b"]) for r in rows}
    out = []
    for q in questions:
        keep = keep_meaning(q, rng)
        change = change_meaning(q, rng)
        rng.shuffle(keep)
        rng.shuffle(change)
        # As many meaning-keeping as meaning-changing edits per question (at most 3 each), so
        # the size of an edit says nothing.
        n = min(4, max(len(change), 2))
        for hit, picked in ((True, keep[:n]), (False, change[:3])):
            for kind, b in picked:
                if b == q or (q, b) in seen:
                    continue
                seen.add((q, b))
                out.append({"a": q, "b": b, "hit": hit, "kind": kind,
                            "style": "augment", "domain": "augment", "split": "augment"})
    if "--crossed" in sys.argv:
        out += crossed(tune, out, rng, int(sys.argv[sys.argv.index("--crossed") + 1]))
    for r in out:
        print(json.dumps(r))
    print(f"{len(out)} pairs from {len(questions)} tune questions: "
          f"{sum(r['hit'] for r in out)} keep, {sum(not r['hit'] for r in out)} change",
          file=sys.stderr)


if __name__ == "__main__":
    main()
