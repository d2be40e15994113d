//! Feedback on cached answers: a client or an operator reports a served entry as wrong
//! (`POST /api/cache/entries/{id}/feedback`, or `x-switchyard-cache-feedback: wrong` on a
//! follow-up request naming the hit's request id). The entry is removed, the report counted, and
//! the pair (the question asked, the cached question it was answered from) kept in the store's
//! `cache_feedback` tree, so `switchyard cache-eval --feedback` can test the matcher on a team's
//! own reported wrong hits.
//!
//! To pair a report with the question that was asked, the last `RECENT` hits are remembered in
//! memory (request id, entry, both questions); a report for a hit older than that, or from before
//! a restart, still removes the entry but keeps only the cached question.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[cfg(test)]
use crate::store::Store;
use crate::store::{BoundedLog, StoreError, Stores, trees};

/// Hits remembered for pairing reports.
pub const RECENT: usize = 10_000;
/// Reported pairs kept (the oldest go first).
pub const KEPT: u64 = 10_000;

/// Why a report could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// Neither the entry nor a hit with that request id is known.
    #[error("{0}")]
    NotFound(String),
    /// The request id names a hit on another entry.
    #[error("{0}")]
    Mismatch(String),
    /// The cache store failed.
    #[error("{0}")]
    Unavailable(String),
}

/// A hit served, remembered so a report can name the question that was asked.
#[derive(Debug, Clone, PartialEq)]
pub struct HitRecord {
    /// The request id of the hit.
    pub request_id: String,
    /// The entry that answered.
    pub entry_id: Uuid,
    /// Requested model or route.
    pub route: String,
    /// The question asked (the trailing user turn(s)).
    pub prompt: String,
    /// The cached question it was answered from.
    pub cached_prompt: String,
    /// Cosine similarity (semantic hits).
    pub similarity: Option<f32>,
}

/// A reported wrong hit, as kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reported {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// The removed entry.
    pub entry_id: String,
    /// The hit's request id, when known.
    pub request_id: Option<String>,
    /// Requested model or route.
    pub route: String,
    /// The question asked, when the hit is still remembered.
    pub prompt: Option<String>,
    /// The cached question.
    pub cached_prompt: String,
    /// The hit's similarity (semantic hits).
    pub similarity: Option<f32>,
    /// `api` or `header`.
    pub source: String,
}

/// Recent hits and the kept reports.
pub struct Feedback {
    recent: Mutex<VecDeque<HitRecord>>,
    kept: BoundedLog,
}

impl Feedback {
    /// Opens the `cache_feedback` tree (no store: reports still remove entries, nothing is
    /// kept); in a fleet, the reports made through every instance.
    pub fn open(stores: &Stores, tasks: &tokio_util::task::TaskTracker) -> Self {
        Self {
            recent: Mutex::new(VecDeque::new()),
            kept: BoundedLog::open_in(stores, tasks, trees::CACHE_FEEDBACK, KEPT),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<HitRecord>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a hit served.
    pub fn remember(&self, hit: HitRecord) {
        let mut r = self.recent();
        if r.len() >= RECENT {
            r.pop_front();
        }
        r.push_back(hit);
    }

    /// The remembered hit with this request id, or the latest on this entry.
    pub fn find(
        &self,
        request_id: Option<&str>,
        entry: Option<Uuid>,
    ) -> Result<Option<HitRecord>, FeedbackError> {
        let r = self.recent();
        let found = match request_id {
            Some(id) => r.iter().rev().find(|h| h.request_id == id).cloned(),
            None => r.iter().rev().find(|h| Some(h.entry_id) == entry).cloned(),
        };
        if let (Some(h), Some(e)) = (&found, entry)
            && h.entry_id != e
        {
            return Err(FeedbackError::Mismatch(format!(
                "the request {} was answered from the cache entry {}, not {e}",
                h.request_id, h.entry_id
            )));
        }
        Ok(found)
    }

    /// Forgets the remembered hits on a removed entry (a second report finds nothing to pair).
    pub fn forget_entry(&self, entry: Uuid) {
        self.recent().retain(|h| h.entry_id != entry);
    }

    /// Keeps a report, dropping the oldest beyond `KEPT`.
    pub fn keep(&self, r: &Reported) -> Result<(), StoreError> {
        self.kept.push(r.at_ms, r)
    }

    /// Every kept report, oldest first.
    pub async fn all(&self) -> Result<Vec<Reported>, StoreError> {
        self.kept.all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(rid: &str, entry: Uuid) -> HitRecord {
        HitRecord {
            request_id: rid.into(),
            entry_id: entry,
            route: "m".into(),
            prompt: format!("asked {rid}"),
            cached_prompt: "cached".into(),
            similarity: Some(0.9),
        }
    }

    fn open(store: Option<Store>) -> Feedback {
        let stores = Stores {
            local: store,
            shared: None,
        };
        Feedback::open(&stores, &tokio_util::task::TaskTracker::new())
    }

    #[tokio::test]
    async fn reports_pair_with_remembered_hits() {
        let f = open(Some(Store::temporary().unwrap()));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        f.remember(hit("r1", a));
        f.remember(hit("r2", b));
        f.remember(hit("r3", a));
        assert_eq!(f.find(Some("r2"), None).unwrap().unwrap().entry_id, b);
        assert_eq!(
            f.find(None, Some(a)).unwrap().unwrap().request_id,
            "r3",
            "the latest hit on the entry"
        );
        assert!(matches!(
            f.find(Some("r2"), Some(a)),
            Err(FeedbackError::Mismatch(_))
        ));
        assert_eq!(f.find(Some("nope"), None).unwrap(), None);
        f.forget_entry(a);
        assert_eq!(f.find(None, Some(a)).unwrap(), None);
        let r = Reported {
            at_ms: 1,
            entry_id: a.to_string(),
            request_id: Some("r1".into()),
            route: "m".into(),
            prompt: Some("asked r1".into()),
            cached_prompt: "cached".into(),
            similarity: Some(0.9),
            source: "api".into(),
        };
        f.keep(&r).unwrap();
        assert_eq!(f.all().await.unwrap(), vec![r]);
    }

    #[test]
    fn recent_hits_are_bounded() {
        let f = open(None);
        let e = Uuid::new_v4();
        for i in 0..(RECENT + 5) {
            f.remember(hit(&i.to_string(), e));
        }
        assert_eq!(f.recent().len(), RECENT);
        assert_eq!(
            f.find(Some("0"), None).unwrap(),
            None,
            "the oldest went first"
        );
    }
}
