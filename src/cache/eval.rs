//! `switchyard cache-eval`: runs labelled prompt pairs through the real embedding model and the
//! guard, and reports, per threshold, how many should-hit pairs would be served and how many
//! must-not-hit pairs would be served wrongly. The default threshold comes from this table.

use std::path::Path;

use serde::Deserialize;

use super::embedder::{Model, cosine};
use super::guard;
use crate::chat::{Message, Role};

/// One labelled pair (a line of the JSONL file).
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    /// The cached prompt.
    pub a: String,
    /// The new prompt.
    pub b: String,
    /// `true`: the same answer serves both; `false`: serving one for the other is wrong.
    pub hit: bool,
    /// Category (paraphrase, negation, number, entity, date, scope, opposite, domain, ...).
    pub kind: String,
    /// `near` or `reworded` (paraphrases), `minimal` or `reworded` (traps), when labelled.
    #[serde(default)]
    pub style: Option<String>,
    /// Subject area, when labelled.
    #[serde(default)]
    pub domain: Option<String>,
    /// `tune`, `validate` or `test`, when the set is split.
    #[serde(default)]
    pub split: Option<String>,
    /// Conversations: the earlier turns of the cached side, as the verifier reads them.
    #[serde(skip)]
    pub context_a: String,
    /// Conversations: the earlier turns of the new side.
    #[serde(skip)]
    pub context_b: String,
}

/// One turn of a labelled conversation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Turn {
    role: String,
    content: String,
}

/// A line of a conversation set: `a` and `b` are turns, the last one the user's.
#[derive(Debug, Clone, Deserialize)]
struct ConversationLine {
    a: Vec<Turn>,
    b: Vec<Turn>,
    hit: bool,
    kind: String,
    #[serde(default)]
    style: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    split: Option<String>,
}

impl ConversationLine {
    /// The pair the cache compares: the last user turns, and the earlier turns as their context
    /// (rendered as the cache renders them; with the guard they must be the same).
    fn into_pair(self) -> Result<Pair, String> {
        let side = |c: &[Turn]| -> Result<(String, String), String> {
            let Some((t, rest)) = c.split_last().filter(|(t, _)| t.role == "user") else {
                return Err("a conversation must end with a user turn".to_owned());
            };
            let mut history = Vec::with_capacity(rest.len());
            for m in rest {
                let role = match m.role.as_str() {
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    "system" => Role::System,
                    other => return Err(format!("`{other}` is not a role here")),
                };
                history.push(Message::text(role, m.content.as_str()));
            }
            let context = super::key::plain_context(&history)
                .ok_or_else(|| "earlier turns must be plain text".to_owned())?;
            Ok((t.content.trim().to_owned(), context))
        };
        let (a, context_a) = side(&self.a)?;
        let (b, context_b) = side(&self.b)?;
        Ok(Pair {
            a,
            b,
            hit: self.hit,
            kind: self.kind,
            style: self.style,
            domain: self.domain,
            split: self.split,
            context_a,
            context_b,
        })
    }
}

/// A pair with its similarity and guard verdict.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The pair.
    pub pair: Pair,
    /// Cosine similarity.
    pub similarity: f32,
    /// Guard rejection, if any.
    pub rejected: Option<&'static str>,
    /// With the learned verifier: its score less the threshold it was held to (`None`: not
    /// judged by a model).
    pub margin: Option<f32>,
}

/// Figures at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Threshold.
    pub threshold: f32,
    /// Share of should-hit pairs served (with the guard).
    pub served: f64,
    /// Share of must-not-hit pairs served (with the guard).
    pub wrong: f64,
    /// Share of must-not-hit pairs served without the guard.
    pub wrong_unguarded: f64,
    /// Share of should-hit pairs served without the guard.
    pub served_unguarded: f64,
}

/// Why the evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The pairs file.
    #[error("{0}")]
    Pairs(String),
    /// The model.
    #[error(transparent)]
    Model(#[from] super::embedder::EmbedError),
}

/// Reads a JSONL file of pairs.
pub fn read_pairs(path: &Path) -> Result<Vec<Pair>, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::Pairs(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            continue;
        }
        let at = |e: String| EvalError::Pairs(format!("{}:{}: {e}", path.display(), i + 1));
        let p = match serde_json::from_str::<Pair>(line) {
            Ok(p) => p,
            // A conversation (turns instead of strings).
            Err(e) => match serde_json::from_str::<ConversationLine>(line) {
                Ok(c) => c.into_pair().map_err(at)?,
                Err(_) => return Err(at(e.to_string())),
            },
        };
        out.push(p);
    }
    Ok(out)
}

/// Embeds every pair and runs the guard.
pub fn score(model: &mut Model, pairs: Vec<Pair>) -> Result<Vec<Scored>, EvalError> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(32) {
        let texts: Vec<&str> = chunk
            .iter()
            .flat_map(|p| [p.a.as_str(), p.b.as_str()])
            .collect();
        let vectors = model.embed_batch(&texts)?;
        for (i, p) in chunk.iter().enumerate() {
            let (Some(va), Some(vb)) = (vectors.get(2 * i), vectors.get(2 * i + 1)) else {
                continue;
            };
            out.push(Scored {
                similarity: cosine(va, vb),
                // The guard judges questions: earlier turns must be the same.
                rejected: if p.context_a != p.context_b {
                    Some("context")
                } else {
                    guard::check(&guard::features(&p.b), &guard::features(&p.a))
                        .err()
                        .map(|r| r.label())
                },
                margin: None,
                pair: p.clone(),
            });
        }
    }
    Ok(out)
}

/// Judges every pair at or above `floor` with the learned verifier instead of the guard (the
/// cache's `verifier = "model"`): served when the verifier's score reaches its threshold.
pub fn verify(
    scored: &mut [Scored],
    v: &super::verifier::Verifier,
    floor: f32,
) -> Result<(), EvalError> {
    use super::verifier::{Question, Side};
    for s in scored.iter_mut().filter(|s| s.similarity >= floor) {
        let cached = Side {
            context: &s.pair.context_a,
            last: &s.pair.a,
        };
        let asked = Side {
            context: &s.pair.context_b,
            last: &s.pair.b,
        };
        let verdict = v.verdict(&Question::of(cached, asked, v.reads_conversations()))?;
        s.rejected = verdict.served.err();
        s.margin = verdict.margin;
    }
    Ok(())
}

/// The share of the pairs labelled `hit` (should-hit or traps) that `served` serves; 0 for none.
fn share(scored: &[Scored], hit: bool, served: impl Fn(&Scored) -> bool) -> f64 {
    let (mut n, mut k) = (0usize, 0usize);
    for s in scored.iter().filter(|s| s.pair.hit == hit) {
        n += 1;
        k += usize::from(served(s));
    }
    if n == 0 { 0.0 } else { k as f64 / n as f64 }
}

/// Served and wrong-hit rates at `threshold`.
pub fn row(scored: &[Scored], threshold: f32) -> Row {
    let share = |hit: bool, guarded: bool| {
        share(scored, hit, |s| {
            s.similarity >= threshold && (!guarded || s.rejected.is_none())
        })
    };
    Row {
        threshold,
        served: share(true, true),
        wrong: share(false, true),
        served_unguarded: share(true, false),
        wrong_unguarded: share(false, false),
    }
}

/// Share served per kind, per style and per kind and style, at `threshold` (with the guard):
/// (label, pairs, share served). For traps the share is the wrong-hit rate.
pub fn breakdown(scored: &[Scored], threshold: f32) -> Vec<(String, usize, f64)> {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for s in scored {
        let served = s.similarity >= threshold && s.rejected.is_none();
        let style = s.pair.style.as_deref().unwrap_or("-");
        let what = if s.pair.hit { "served" } else { "wrong" };
        for key in [
            format!("{what} {}", s.pair.kind),
            format!("{what} style={style}"),
            format!("{what} {}/{style}", s.pair.kind),
        ] {
            let g = groups.entry(key).or_default();
            g.0 += 1;
            g.1 += usize::from(served);
        }
    }
    groups
        .into_iter()
        .map(|(k, (n, served))| (k, n, served as f64 / n as f64))
        .collect()
}

/// Keeps the pairs of one split (`None`: all).
pub fn only_split(pairs: Vec<Pair>, split: Option<&str>) -> Vec<Pair> {
    match split {
        None | Some("all") => pairs,
        Some(s) => pairs
            .into_iter()
            .filter(|p| p.split.as_deref() == Some(s))
            .collect(),
    }
}

/// Served and wrong-hit rates with the verifier held to its threshold plus `offset` (pairs at or
/// above the similarity `floor`; pairs no model read are never served).
pub fn verifier_row(scored: &[Scored], floor: f32, offset: f32) -> (f64, f64) {
    let served = |s: &Scored| s.similarity >= floor && s.margin.is_some_and(|m| m >= offset);
    (share(scored, true, served), share(scored, false, served))
}

/// The report printed by `switchyard cache-eval`; `verifier_threshold` is the question model's
/// decision threshold when the learned verifier judged (it adds the curve over that threshold).
pub fn report(scored: &[Scored], default: f32, verifier_threshold: Option<f32>) -> String {
    use std::fmt::Write;
    let hits = scored.iter().filter(|s| s.pair.hit).count();
    let traps = scored.len() - hits;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} pairs: {hits} should hit, {traps} must not hit\n",
        scored.len()
    );
    let _ = writeln!(
        out,
        "similarity threshold | served (judged) | wrong hits (judged) | served (similarity alone) | wrong hits (similarity alone)"
    );
    let _ = writeln!(out, "---|---|---|---|---");
    for t in (60..=98).step_by(2).map(|t| t as f32 / 100.0) {
        let r = row(scored, t);
        let mark = if (t - default).abs() < 1e-4 {
            " (default)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{t:.2}{mark} | {:.1}% | {:.1}% | {:.1}% | {:.1}%",
            r.served * 100.0,
            r.wrong * 100.0,
            r.served_unguarded * 100.0,
            r.wrong_unguarded * 100.0
        );
    }
    if let Some(t) = verifier_threshold {
        let _ = writeln!(
            out,
            "\nthe verifier's decision threshold (`[cache] verifier_threshold`; similarity at least \
             {default:.2}): its own {t:.2} plus an offset (conversation pairs: the conversation \
             model's own plus the same offset)\n\noffset | verifier_threshold | served | wrong hits\n---|---|---|---"
        );
        for step in -6..=6 {
            let offset = step as f32 * 0.5;
            let (served, wrong) = verifier_row(scored, default, offset);
            let mark = if step == 0 { " (default)" } else { "" };
            let _ = writeln!(
                out,
                "{offset:+.1}{mark} | {:.2} | {:.1}% | {:.1}%",
                t + offset,
                served * 100.0,
                wrong * 100.0
            );
        }
    }
    let r = row(scored, default);
    let _ = writeln!(
        out,
        "\nat the default threshold {default:.2}: served {:.1}% of should-hit pairs, wrong hits {:.1}% of traps",
        r.served * 100.0,
        r.wrong * 100.0
    );
    let _ = writeln!(
        out,
        "\nby kind and style at {default:.2} (served: should-hit pairs; wrong: traps):"
    );
    for (label, n, share) in breakdown(scored, default) {
        let _ = writeln!(out, "  {label:<28} {n:>5} pairs  {:>5.1}%", share * 100.0);
    }
    let _ = writeln!(out, "\nwrong hits at the default threshold:");
    for s in scored
        .iter()
        .filter(|s| !s.pair.hit && s.similarity >= default && s.rejected.is_none())
    {
        let _ = writeln!(
            out,
            "  {:.3} [{}] {:?} / {:?}",
            s.similarity, s.pair.kind, s.pair.a, s.pair.b
        );
    }
    let _ = writeln!(
        out,
        "\nshould-hit pairs rejected by the guard (or the verifier):"
    );
    for s in scored
        .iter()
        .filter(|s| s.pair.hit && s.similarity >= default && s.rejected.is_some())
    {
        let _ = writeln!(
            out,
            "  {:.3} [{}] {:?} / {:?}",
            s.similarity,
            s.rejected.unwrap_or_default(),
            s.pair.a,
            s.pair.b
        );
    }
    out
}
