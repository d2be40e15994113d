//! The default threshold meets the target on the labelled pairs, with the real model: at most 2%
//! wrong hits while serving at least 60% of should-hit pairs (docs/cache.md).

use switchyard::cache::embedder::Model;
use switchyard::cache::eval;
use switchyard::config::cache::DEFAULT_THRESHOLD;

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn scored(file: &str) -> Vec<eval::Scored> {
    scored_split(file, None)
}

/// The pairs of `file` (only those of `split`, when given) scored by the real model.
fn scored_split(file: &str, split: Option<&str>) -> Vec<eval::Scored> {
    let pairs = eval::read_pairs(format!("{DIR}/tests/fixtures/cache/{file}").as_ref()).unwrap();
    eval::score(&mut model(), eval::only_split(pairs, split)).unwrap()
}

/// The embedding model the gateway ships.
fn model() -> Model {
    Model::load(
        format!("{DIR}/models/all-MiniLM-L6-v2").as_ref(),
        format!("{DIR}/models/onnxruntime/libonnxruntime.so.1.24.4").as_ref(),
    )
    .unwrap()
}

#[test]
fn default_threshold_meets_the_wrong_hit_target() {
    let tuning = scored("pairs.jsonl");
    let holdout = scored("pairs-holdout.jsonl");
    assert!(tuning.len() >= 300, "at least 300 labelled pairs");
    let t = eval::row(&tuning, DEFAULT_THRESHOLD);
    assert!(t.wrong <= 0.02 && t.served >= 0.60, "tuning set: {t:?}");
    let all: Vec<eval::Scored> = tuning.into_iter().chain(holdout).collect();
    let a = eval::row(&all, DEFAULT_THRESHOLD);
    assert!(a.wrong <= 0.02 && a.served >= 0.60, "both sets: {a:?}");
    // Cosine alone cannot do it: the guard is what keeps traps out.
    assert!(a.wrong_unguarded > 0.3, "{a:?}");
}

#[test]
fn the_traps_from_the_notes_are_close_in_cosine_and_still_rejected() {
    let mut model = model();
    let pairs = vec![
        eval::Pair {
            a: "Cancel my subscription".into(),
            b: "Don't cancel my subscription".into(),
            hit: false,
            kind: "negation".into(),
            style: None,
            domain: None,
            split: None,
            context_a: String::new(),
            context_b: String::new(),
        },
        eval::Pair {
            a: "Track order 48213".into(),
            b: "Track order 48231".into(),
            hit: false,
            kind: "number".into(),
            style: None,
            domain: None,
            split: None,
            context_a: String::new(),
            context_b: String::new(),
        },
    ];
    for s in eval::score(&mut model, pairs).unwrap() {
        assert!(s.similarity > 0.95, "{s:?}");
        assert!(s.rejected.is_some(), "{s:?}");
    }
}

/// The labelled question set (docs/cache.md): built from `questions/*.txt` by the script (checked
/// up to date), at least 1,500 pairs over at least 10 domains, reworded paraphrases and every kind
/// of trap, split by hash into tune, validate and test.
#[test]
fn the_question_set_is_built_labelled_and_split() {
    let check = std::process::Command::new("python3")
        .arg(format!("{DIR}/tests/fixtures/cache/build_questions.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let pairs =
        eval::read_pairs(format!("{DIR}/tests/fixtures/cache/questions.jsonl").as_ref()).unwrap();
    assert!(pairs.len() >= 1500, "{}", pairs.len());
    let set = |f: &dyn Fn(&eval::Pair) -> Option<String>| {
        pairs
            .iter()
            .filter_map(f)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert!(set(&|p| p.domain.clone()).len() >= 10);
    let kinds = set(&|p| (!p.hit).then(|| p.kind.clone()));
    for k in [
        "neg",
        "entity",
        "number",
        "date",
        "unit",
        "scope",
        "comparison",
        "timeframe",
        "role",
        "opposite",
        "topic",
    ] {
        assert!(kinds.contains(k), "no {k} traps: {kinds:?}");
    }
    let reworded = pairs
        .iter()
        .filter(|p| p.hit && p.style.as_deref() == Some("reworded"))
        .count();
    assert!(reworded >= 250, "{reworded} reworded paraphrases");
    for split in ["tune", "validate", "test"] {
        let n = pairs
            .iter()
            .filter(|p| p.split.as_deref() == Some(split))
            .count();
        assert!(n >= 250, "{split}: {n}");
    }
    // And 300 conversation pairs, read as the cache compares them (last user turns, earlier
    // turns as their context).
    let convs =
        eval::read_pairs(format!("{DIR}/tests/fixtures/cache/conversations.jsonl").as_ref())
            .unwrap();
    assert!(convs.len() >= 300, "{}", convs.len());
    let styles = convs
        .iter()
        .filter_map(|p| p.style.clone())
        .collect::<std::collections::BTreeSet<_>>();
    for s in ["context-reworded", "chatter", "same-context"] {
        assert!(styles.contains(s), "{styles:?}");
    }
    let reworded_context = convs
        .iter()
        .find(|p| p.style.as_deref() == Some("context-reworded"))
        .unwrap();
    assert_ne!(reworded_context.context_a, reworded_context.context_b);
    assert!(reworded_context.context_a.starts_with("u: "));
    let same = convs
        .iter()
        .find(|p| p.style.as_deref() == Some("same-context"))
        .unwrap();
    assert_eq!(same.context_a, same.context_b);
}

/// The default judge, the learned verifier in models/cache-verifier, on the test split of the
/// question set (never trained or tuned on): it must keep serving at least half of the
/// should-hit pairs at no more than 2 % wrong hits (measured: 54.6 % at 1.2 % on the 409 test
/// pairs of the 2,002-pair set, 55.8 % at 1.6 % on the 296 of the earlier 1,523; docs/cache.md).
#[test]
fn the_default_verifier_holds_its_figures_on_the_test_split() {
    let mut scored = scored_split("questions.jsonl", Some("test"));
    let v = switchyard::cache::verifier::Verifier::load(
        format!("{DIR}/models/cache-verifier").as_ref(),
        format!("{DIR}/models/all-MiniLM-L6-v2").as_ref(),
        None,
        None,
    )
    .unwrap();
    let floor = switchyard::config::cache::VERIFIER_FLOOR;
    eval::verify(&mut scored, &v, floor).unwrap();
    let r = eval::row(&scored, floor);
    assert!(
        r.served >= 0.50 && r.wrong <= 0.02,
        "served {:.1} %, wrong {:.1} %",
        r.served * 100.0,
        r.wrong * 100.0
    );
    // The curve over the verifier's own threshold: at offset 0 it is what is served; a higher
    // threshold never serves more of either kind, a lower one serves more paraphrases and lets
    // traps through.
    assert_eq!(eval::verifier_row(&scored, floor, 0.0), (r.served, r.wrong));
    let curve: Vec<(f64, f64)> = (-6..=6)
        .map(|k| eval::verifier_row(&scored, floor, k as f32 * 0.5))
        .collect();
    for w in curve.windows(2) {
        assert!(w[1].0 <= w[0].0 && w[1].1 <= w[0].1, "{curve:?}");
    }
    assert!(curve[0].0 > r.served && curve[0].1 > r.wrong, "{curve:?}");
    let report = eval::report(&scored, floor, Some(v.threshold));
    assert!(
        report.contains(&format!("+0.0 (default) | {:.2} |", v.threshold)),
        "{report}"
    );
}

/// The conversation verifier judges two conversations read whole, and refuses (serves nothing,
/// no score) a pair too long for it to read whole rather than judging a cut text; and on the
/// test split of the conversation set it serves more than exact matching at no wrong hits
/// (measured on the 88 test pairs of the 450-pair set: 53.5 % at 0 %, exact 11.6 %; docs/cache.md).
#[test]
fn the_conversation_verifier_reads_whole_conversations_only() {
    use switchyard::cache::verifier::{Question, Verifier};
    // Loads the embedding model first, and with it ONNX Runtime.
    let mut scored = scored_split("conversations.jsonl", Some("test"));
    let v = Verifier::load(
        format!("{DIR}/models/cache-verifier").as_ref(),
        format!("{DIR}/models/all-MiniLM-L6-v2").as_ref(),
        None,
        Some(format!("{DIR}/models/cache-verifier-conversations").as_ref()),
    )
    .unwrap();
    assert!(v.reads_conversations());
    let q = Question::Conversation(
        "u: Thanks for the quick reply earlier. // a: You're welcome! // u: Can I pay with PayPal?"
            .into(),
        "u: Can I pay with PayPal?".into(),
    );
    assert!(matches!(v.judge(&q).unwrap(), (true, Some(_))));
    // Each side under the character bound, but digits are a token each: too long together.
    let digits = "1 ".repeat(140);
    let long = Question::Conversation(
        format!("u: {digits} // a: ok // u: Can I pay with PayPal?"),
        format!("u: {digits}// a: ok // u: Can I pay with PayPal?"),
    );
    assert_eq!(v.judge(&long).unwrap(), (false, None));

    let floor = switchyard::config::cache::VERIFIER_FLOOR;
    eval::verify(&mut scored, &v, floor).unwrap();
    let by_meaning = eval::row(&scored, floor);
    let mut exact = scored_split("conversations.jsonl", Some("test"));
    let questions_only = Verifier::load(
        format!("{DIR}/models/cache-verifier").as_ref(),
        format!("{DIR}/models/all-MiniLM-L6-v2").as_ref(),
        None,
        None,
    )
    .unwrap();
    eval::verify(&mut exact, &questions_only, floor).unwrap();
    let exact = eval::row(&exact, floor);
    assert!(
        by_meaning.wrong <= 0.02 && by_meaning.served >= exact.served + 0.15,
        "by meaning: served {:.1} % wrong {:.1} %; exact: served {:.1} %",
        by_meaning.served * 100.0,
        by_meaning.wrong * 100.0,
        exact.served * 100.0
    );
}
