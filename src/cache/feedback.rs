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
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{Store, StoreError, trees};

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
    store: Option<Store>,
    seq: AtomicU64,
    count: AtomicU64,
}

impl Feedback {
    /// Opens the `cache_feedback` tree (no store: reports still remove entries, nothing is kept).
    pub fn open(store: Option<Store>) -> Self {
        let count = store
            .as_ref()
            .and_then(|s| s.tree(trees::CACHE_FEEDBACK).ok())
            .map_or(0, |t| t.len() as u64);
        Self {
            recent: Mutex::new(VecDeque::new()),
            store,
            seq: AtomicU64::new(0),
            count: AtomicU64::new(count),
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
        let Some(store) = &self.store else {
            return Ok(());
        };
        let tree = store.tree(trees::CACHE_FEEDBACK)?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) as u32;
        let mut key = [0u8; 12];
        key[..8].copy_from_slice(&r.at_ms.to_be_bytes());
        key[8..].copy_from_slice(&seq.to_be_bytes());
        let bytes = serde_json::to_vec(r).map_err(|e| StoreError::Record {
            key: trees::CACHE_FEEDBACK.into(),
            message: e.to_string(),
        })?;
        tree.insert(key, bytes)?;
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 > KEPT && tree.pop_min()?.is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every kept report, oldest first.
    pub fn all(&self) -> Result<Vec<Reported>, StoreError> {
        all_in(self.store.as_ref())
    }
}

/// The reports kept in `store` (for `cache-eval --feedback`, which opens the store itself).
pub fn all_in(store: Option<&Store>) -> Result<Vec<Reported>, StoreError> {
    let Some(store) = store else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in store.tree(trees::CACHE_FEEDBACK)?.iter() {
        let (_, v) = item?;
        if let Ok(r) = serde_json::from_slice(&v) {
            out.push(r);
        }
    }
    Ok(out)
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

    #[test]
    fn reports_pair_with_remembered_hits() {
        let f = Feedback::open(Some(Store::temporary().unwrap()));
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
        assert_eq!(f.all().unwrap(), vec![r]);
    }

    #[test]
    fn recent_hits_are_bounded() {
        let f = Feedback::open(None);
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
