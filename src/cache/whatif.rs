//! Threshold what-if: every semantic candidate the cache weighed (served hits, and the best
//! candidate of misses within `NEAR_MISS_MARGIN` of the threshold) is kept in the store's
//! `cache_candidates` tree, newest `KEPT`. From them, `report` shows what another threshold
//! would have done: how many more (or fewer) requests it would have served, and which ones, each
//! side by side with the cached question it would have been answered from. Candidates the guard
//! rejected stay rejected at any threshold.
//!
//! Shadow mode (`mode = "shadow"`) keeps its would-be hits here too (`result = "shadow"`), each
//! with the first words of the cached answer and of the live answer that was sent instead.

use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::store::Store;
use crate::store::{BoundedLog, StoreError, Stores, trees};

/// Candidates kept (the oldest go first).
pub const KEPT: u64 = 5_000;
/// Examples listed per side.
const EXAMPLES: usize = 50;
/// The `result` of a shadow-mode hit.
pub const SHADOW: &str = "shadow";
/// Words of an answer kept beside a shadow hit.
const PREVIEW_WORDS: usize = 30;

/// One semantic candidate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Requested model or route.
    pub route: String,
    /// The new prompt (its trailing user turn(s)).
    pub prompt: String,
    /// The cached prompt it was compared with.
    pub cached_prompt: String,
    /// Cosine similarity.
    pub similarity: f32,
    /// The threshold in force for that request.
    pub threshold: f32,
    /// `hit`, `below_threshold`, `shadow`, or the guard's reason for rejecting it.
    pub result: String,
    /// Shadow hits: the two answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDetail>,
}

/// What shadow mode would have served, beside what was served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShadowDetail {
    /// `hit-exact` or `hit-semantic`.
    pub tier: String,
    /// The entry that would have answered.
    pub entry_id: String,
    /// Its answer's first words.
    pub cached_answer: String,
    /// The live answer's first words.
    pub live_answer: Option<String>,
}

/// The first words of an answer's first choice (its text, or the tools it called).
pub fn first_words(resp: &crate::chat::ChatResponse) -> String {
    let Some(c) = resp.choices.first() else {
        return String::new();
    };
    let text = c.message.text_content();
    if text.trim().is_empty()
        && let Some(calls) = &c.message.tool_calls
    {
        let names: Vec<&str> = calls.iter().map(|t| t.function.name.as_str()).collect();
        return format!("[tool calls: {}]", names.join(", "));
    }
    let words: Vec<&str> = text.split_whitespace().take(PREVIEW_WORDS + 1).collect();
    if words.len() > PREVIEW_WORDS {
        format!("{} …", words[..PREVIEW_WORDS].join(" "))
    } else {
        words.join(" ")
    }
}

/// [`first_words`] of a stored answer (empty when it does not decode).
pub fn first_words_of_json(json: &str) -> String {
    serde_json::from_str(json)
        .map(|r| first_words(&r))
        .unwrap_or_default()
}

/// The kept candidates.
pub struct Candidates(BoundedLog);

impl Candidates {
    /// Opens the tree (no store: nothing is kept and the report is empty); in a fleet, the
    /// candidates of every instance.
    pub fn open(stores: &Stores, tasks: &tokio_util::task::TaskTracker) -> Self {
        Self(BoundedLog::open_in(
            stores,
            tasks,
            trees::CACHE_CANDIDATES,
            KEPT,
        ))
    }

    /// Keeps one candidate, dropping the oldest beyond `KEPT`.
    pub fn record(&self, c: &Candidate) -> Result<(), StoreError> {
        self.0.push(c.at_ms, c)
    }

    /// Every kept candidate, oldest first (those that do not decode are skipped).
    pub async fn all(&self) -> Result<Vec<Candidate>, StoreError> {
        self.0.all().await
    }
}

/// What a threshold would have served.
#[derive(Debug, Serialize, PartialEq)]
pub struct WhatIf {
    /// The threshold asked about.
    pub threshold: f32,
    /// The configured threshold.
    pub current_threshold: f32,
    /// Candidates considered (after the route filter).
    pub candidates: usize,
    /// Semantic hits actually served.
    pub served_now: usize,
    /// Semantic hits the asked threshold would have served.
    pub served_at_threshold: usize,
    /// Misses it would have served (newest first, at most 50), with the cached question.
    pub gained: Vec<Candidate>,
    /// How many misses it would have served in all.
    pub gained_total: usize,
    /// Hits it would not have served (newest first, at most 50).
    pub lost: Vec<Candidate>,
    /// How many hits it would have lost in all.
    pub lost_total: usize,
    /// Candidates rejected by the guard (served at no threshold).
    pub guard_rejected: usize,
    /// `[threshold, semantic hits it would serve]` from 0.60 to 1.00 in steps of 0.01.
    pub curve: Vec<(f32, usize)>,
    /// The lowest similarity a miss was recorded at: below it the report knows nothing.
    pub floor: Option<f32>,
    /// Shadow mode's would-be hits (newest first, at most 50), each beside the live answer.
    pub shadow: Vec<Candidate>,
    /// How many shadow hits in all.
    pub shadow_total: usize,
}

/// Whether a candidate would be served at `t`.
fn served_at(c: &Candidate, t: f32) -> bool {
    match c.result.as_str() {
        "hit" | "below_threshold" | SHADOW => c.similarity >= t,
        _ => false,
    }
}

/// The what-if report at threshold `t` over `all` (oldest first), optionally for one route.
pub fn report(all: &[Candidate], t: f32, current: f32, route: Option<&str>) -> WhatIf {
    let cands: Vec<&Candidate> = all
        .iter()
        .filter(|c| route.is_none_or(|r| r == c.route))
        .collect();
    let gained: Vec<&Candidate> = cands
        .iter()
        .rev()
        .filter(|c| c.result == "below_threshold" && c.similarity >= t)
        .copied()
        .collect();
    let lost: Vec<&Candidate> = cands
        .iter()
        .rev()
        .filter(|c| c.result == "hit" && c.similarity < t)
        .copied()
        .collect();
    let shadow: Vec<&Candidate> = cands
        .iter()
        .rev()
        .filter(|c| c.result == SHADOW)
        .copied()
        .collect();
    let curve = (60..=100)
        .map(|i| {
            let th = i as f32 / 100.0;
            (th, cands.iter().filter(|c| served_at(c, th)).count())
        })
        .collect();
    WhatIf {
        threshold: t,
        current_threshold: current,
        candidates: cands.len(),
        served_now: cands.iter().filter(|c| c.result == "hit").count(),
        served_at_threshold: cands.iter().filter(|c| served_at(c, t)).count(),
        gained_total: gained.len(),
        gained: gained.into_iter().take(EXAMPLES).cloned().collect(),
        lost_total: lost.len(),
        lost: lost.into_iter().take(EXAMPLES).cloned().collect(),
        guard_rejected: cands
            .iter()
            .filter(|c| !matches!(c.result.as_str(), "hit" | "below_threshold" | SHADOW))
            .count(),
        curve,
        floor: cands
            .iter()
            .filter(|c| c.result != "hit" && c.result != SHADOW)
            .map(|c| c.similarity)
            .reduce(f32::min),
        shadow_total: shadow.len(),
        shadow: shadow.into_iter().take(EXAMPLES).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sim: f32, result: &str, prompt: &str) -> Candidate {
        Candidate {
            at_ms: 0,
            route: "m".into(),
            prompt: prompt.into(),
            cached_prompt: format!("cached {prompt}"),
            similarity: sim,
            threshold: 0.82,
            result: result.into(),
            shadow: None,
        }
    }

    #[test]
    fn lower_threshold_gains_misses_higher_loses_hits() {
        let all = vec![
            c(0.90, "hit", "a"),
            c(0.84, "hit", "b"),
            c(0.80, "below_threshold", "c"),
            c(0.75, "below_threshold", "d"),
            c(0.95, "numbers", "e"),
        ];
        let low = report(&all, 0.78, 0.82, None);
        assert_eq!(low.served_now, 2);
        assert_eq!(low.served_at_threshold, 3);
        assert_eq!(low.gained_total, 1);
        assert_eq!(low.gained[0].prompt, "c");
        assert_eq!(low.gained[0].cached_prompt, "cached c");
        assert_eq!(low.lost_total, 0);
        assert_eq!(low.guard_rejected, 1);
        assert_eq!(low.floor, Some(0.75));

        let high = report(&all, 0.88, 0.82, None);
        assert_eq!(high.served_at_threshold, 1);
        assert_eq!(high.lost_total, 1);
        assert_eq!(high.lost[0].prompt, "b");
        let at = |t: f32| {
            high.curve
                .iter()
                .find(|(x, _)| (x - t).abs() < 1e-4)
                .map(|p| p.1)
        };
        assert_eq!(at(0.70), Some(4));
        assert_eq!(at(0.82), Some(2));
        assert_eq!(at(1.0), Some(0));

        assert_eq!(report(&all, 0.78, 0.82, Some("other")).candidates, 0);
    }

    #[tokio::test]
    async fn candidates_are_bounded() {
        let stores = Stores {
            local: Some(Store::temporary().unwrap()),
            shared: None,
        };
        let cands = Candidates::open(&stores, &tokio_util::task::TaskTracker::new());
        for i in 0..(KEPT + 3) {
            let mut x = c(0.9, "hit", &i.to_string());
            x.at_ms = i;
            cands.record(&x).unwrap();
        }
        let all = cands.all().await.unwrap();
        assert_eq!(all.len() as u64, KEPT);
        assert_eq!(all[0].prompt, "3", "the oldest went first");
    }
}
