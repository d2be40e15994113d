//! The second check on a semantic candidate. MiniLM scores "Cancel my subscription" / "Don't
//! cancel my subscription" and "Track order 48213" / "Track order 48231" above 0.96, so cosine
//! alone cannot tell them apart. A candidate is rejected when the two prompts differ in:
//!
//! - numbers (digits, number words, ordinals: "3" = "three", "1st" = "first"),
//! - negation polarity (not, no, never, n't, without, ...),
//! - names (capitalised words, acronyms, quoted strings, identifiers with digits or mixed case),
//! - terms that change the answer even in lower case (languages, platforms, units, currencies,
//!   days, months, relative dates),
//! - opposites (increase/decrease, buy/sell, enable/disable, before/after, ...),
//! - quantifiers that change scope (all, some, only, each, most, ...).
//!
//! It errs towards rejecting: a false rejection costs one provider call, a false hit serves a
//! wrong answer. Measured on tests/fixtures/cache/pairs.jsonl (docs/cache.md).

use std::collections::BTreeSet;

use super::words::{
    COMMON_CAPITALISED, FUNCTION_WORDS, KEY_TERMS, NEGATIONS, NUMBER_WORDS, OPPOSITES, SCOPE,
    SYNONYMS,
};

/// Why a candidate was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Different numbers.
    Numbers,
    /// One is negated, the other is not.
    Negation,
    /// Different names or key terms.
    Entities,
    /// One asks for the opposite of the other.
    Opposites,
    /// Different quantifiers (scope).
    Scope,
    /// The same names or terms in another order ("Celsius to Fahrenheit").
    Order,
    /// One content word swapped, added or dropped ("gold" / "silver", "virus" / "computer virus").
    Substitution,
}

impl Rejection {
    /// Short label for stats and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Numbers => "numbers",
            Self::Negation => "negation",
            Self::Entities => "entities",
            Self::Opposites => "opposites",
            Self::Scope => "scope",
            Self::Order => "order",
            Self::Substitution => "substitution",
        }
    }
}

/// What the guard extracts from one prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    numbers: Vec<String>,
    negated: bool,
    entities: BTreeSet<String>,
    words: BTreeSet<String>,
    scope: BTreeSet<&'static str>,
    /// Names, key terms and opposite-pair words in order of appearance.
    sequence: Vec<String>,
    /// Content words (function words, question words and request verbs dropped), stemmed.
    content: Vec<String>,
}

fn stem(w: &str) -> String {
    let w = w.trim_matches(|c: char| !c.is_alphanumeric() && c != '+' && c != '#');
    for suffix in ["'s", "’s"] {
        if let Some(s) = w.strip_suffix(suffix) {
            return s.to_owned();
        }
    }
    w.to_owned()
}

/// Extracts the guard's features from a prompt.
pub fn features(text: &str) -> Features {
    let mut f = Features::default();
    let mut negations = 0usize;
    let mut sentence_start = true;
    // Quoted spans are names.
    for (i, part) in text.split(['"', '“', '”', '`']).enumerate() {
        if i % 2 == 1 && !part.trim().is_empty() {
            f.entities.insert(part.trim().to_lowercase());
        }
    }
    for raw in text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '/')) {
        if raw.is_empty() {
            continue;
        }
        let ends_sentence = raw.ends_with(['.', '?', '!', ':']);
        let token = stem(raw);
        let lower = token.to_lowercase();
        let plain: String = lower.chars().filter(|c| *c != '\'' && *c != '’').collect();
        if plain.is_empty() {
            sentence_start = sentence_start || ends_sentence;
            continue;
        }
        if plain.ends_with("nt") && raw.contains(['\'', '’']) || NEGATIONS.contains(&plain.as_str())
        {
            negations += 1;
        }
        let has_digit = token.chars().any(|c| c.is_ascii_digit());
        if has_digit {
            number_tokens(&token, &mut f.numbers);
        } else {
            for part in plain.split('-') {
                if let Some((_, n)) = NUMBER_WORDS.iter().find(|(w, _)| *w == part) {
                    f.numbers.push((*n).to_owned());
                }
            }
        }
        let first = token.chars().next().unwrap_or(' ');
        let mixed = token.chars().skip(1).any(|c| c.is_uppercase());
        let capital = first.is_uppercase();
        // Identifiers such as "GPT-4" or "INV-2024" are names; "3-bullet" or "7pm" are numbers
        // (compared above) with a unit.
        let identifier = has_digit && first.is_alphabetic();
        if identifier || mixed {
            f.entities.insert(lower.clone());
        } else if capital
            && !sentence_start
            && !COMMON_CAPITALISED.contains(&plain.as_str())
            && !NEGATIONS.contains(&plain.as_str())
            && !SCOPE.contains(&plain.as_str())
        {
            f.entities.insert(plain.clone());
        }
        if KEY_TERMS.contains(&plain.as_str()) {
            f.entities.insert(plain.clone());
        }
        if let Some(s) = SCOPE.iter().find(|s| **s == plain) {
            f.scope.insert(s);
        }
        let opposite = OPPOSITES.iter().any(|(a, b)| *a == plain || *b == plain);
        if f.entities.contains(&plain) || f.entities.contains(&lower) || opposite {
            f.sequence.push(plain.clone());
        }
        if !FUNCTION_WORDS.contains(&plain.as_str()) && !NEGATIONS.contains(&plain.as_str()) {
            for part in plain.split('-').filter(|p| !p.is_empty()) {
                let stem = crude_stem(part);
                if !FUNCTION_WORDS.contains(&part) && !FUNCTION_WORDS.contains(&stem.as_str()) {
                    f.content.push(stem);
                }
            }
        }
        f.words.insert(plain);
        sentence_start = ends_sentence;
    }
    f.numbers.sort();
    f.negated = negations % 2 == 1;
    f
}

/// Strips common English endings so "painted" / "painter" / "paints" compare equal, then maps
/// synonyms to one word.
fn crude_stem(w: &str) -> String {
    let synonym = |w: &str| {
        SYNONYMS
            .iter()
            .find(|g| g.contains(&w))
            .and_then(|g| g.first())
            .map(|c| (*c).to_owned())
    };
    if let Some(c) = synonym(w) {
        return c;
    }
    let mut stem = w.to_owned();
    if let Some(s) = w.strip_suffix("ies").filter(|s| s.len() >= 2) {
        stem = format!("{s}y");
    } else if let Some(s) = w
        .strip_suffix("es")
        .filter(|s| s.ends_with(['s', 'x']) || s.ends_with("ch") || s.ends_with("sh"))
    {
        stem = s.to_owned();
    } else if let Some(s) = w
        .strip_suffix('s')
        .filter(|s| !s.ends_with('s') && s.len() >= 3)
    {
        stem = s.to_owned();
    }
    for suffix in ["ing", "ers", "er", "ed"] {
        if let Some(s) = stem.strip_suffix(suffix)
            && s.chars().count() >= 3
        {
            let mut s = s.to_owned();
            // "running" -> "runn" -> "run"
            let b = s.as_bytes();
            if b.len() >= 2 && b[b.len() - 1] == b[b.len() - 2] {
                s.pop();
            }
            stem = s;
            break;
        }
    }
    synonym(&stem).unwrap_or(stem)
}

/// True when `a` becomes `b` by swapping exactly one word in place.
fn one_substitution(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).filter(|(x, y)| x != y).count() == 1
}

/// Digit groups in a token ("48213", "3.5", "10:30" -> "10","30", "1,000" -> "1000",
/// "1st" -> "1").
fn number_tokens(token: &str, out: &mut Vec<String>) {
    let cleaned: String = token.chars().filter(|c| *c != ',').collect::<String>();
    let mut current = String::new();
    for c in cleaned.chars() {
        if c.is_ascii_digit() || (c == '.' && !current.is_empty()) {
            current.push(c);
        } else if !current.is_empty() {
            out.push(current.trim_end_matches('.').to_owned());
            current.clear();
        }
    }
    if !current.is_empty() {
        out.push(current.trim_end_matches('.').to_owned());
    }
}

/// Compares a new prompt with a cached one; `Err` says why they must not share an answer.
pub fn check(query: &Features, cached: &Features) -> Result<(), Rejection> {
    if query.numbers != cached.numbers {
        return Err(Rejection::Numbers);
    }
    if query.negated != cached.negated {
        return Err(Rejection::Negation);
    }
    if query.entities != cached.entities {
        return Err(Rejection::Entities);
    }
    for (a, b) in OPPOSITES {
        let qa = query.words.contains(*a);
        let qb = query.words.contains(*b);
        let ca = cached.words.contains(*a);
        let cb = cached.words.contains(*b);
        if (qa && !qb && cb && !ca) || (qb && !qa && ca && !cb) {
            return Err(Rejection::Opposites);
        }
    }
    if query.scope != cached.scope {
        return Err(Rejection::Scope);
    }
    let mut qs = query.sequence.clone();
    let mut cs = cached.sequence.clone();
    qs.dedup();
    cs.dedup();
    if qs != cs && sorted(&qs) == sorted(&cs) {
        return Err(Rejection::Order);
    }
    if one_substitution(&query.content, &cached.content) {
        return Err(Rejection::Substitution);
    }
    Ok(())
}

fn sorted(v: &[String]) -> Vec<&String> {
    let mut s: Vec<&String> = v.iter().collect();
    s.sort();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(a: &str, b: &str) -> Result<(), Rejection> {
        check(&features(a), &features(b))
    }

    #[test]
    fn traps_from_the_notes_are_rejected() {
        assert_eq!(
            ok("Cancel my subscription", "Don't cancel my subscription"),
            Err(Rejection::Negation)
        );
        assert_eq!(
            ok("Track order 48213", "Track order 48231"),
            Err(Rejection::Numbers)
        );
    }

    #[test]
    fn paraphrases_pass() {
        assert_eq!(
            ok(
                "What is the capital of France?",
                "Which city is the capital of France?"
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                "Summarize this article in three bullet points.",
                "Give me a 3-bullet summary of this article."
            ),
            Ok(())
        );
        assert_eq!(
            ok(
                "How do I reset my password?",
                "What are the steps to change a forgotten password?"
            ),
            Ok(())
        );
    }

    #[test]
    fn names_and_terms_must_match() {
        assert_eq!(
            ok(
                "What is the capital of France?",
                "What is the capital of Spain?"
            ),
            Err(Rejection::Entities)
        );
        assert_eq!(
            ok(
                "how do i sort a list in python",
                "how do i sort a list in java"
            ),
            Err(Rejection::Entities)
        );
        assert_eq!(
            ok(
                "How do I increase the volume?",
                "How do I decrease the volume?"
            ),
            Err(Rejection::Opposites)
        );
    }
}
