//! Cache analytics: lookups by outcome, tokens and estimated cost saved, similarity histograms of
//! hits and near misses, guard rejections and the latest near misses, per route and per model.
//! Kept in memory, persisted to the sled store every few seconds and at shutdown. In a fleet
//! (`[server] state = "postgres"`) each instance writes its own figures to a row of its own and
//! the stats endpoint shows the sum of every row (rows of instances gone for ten minutes are
//! folded into one `archive` row, so the table stays as small as the fleet).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub use crate::request::Outcome;
use crate::store::postgres::Postgres;
use crate::store::{Store, StoreError, trees};

/// Histogram buckets: [0.50, 0.52), ..., [0.98, 1.00].
pub const BUCKETS: usize = 25;
const BUCKET_LOW: f32 = 0.5;
const BUCKET_WIDTH: f32 = 0.02;
const NEAR_MISSES_KEPT: usize = 50;
const TOP_KEPT: usize = 20;
const KEY: &str = "v1";

/// Counters for one slice (all, a route, a model).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    /// Exact hits.
    pub hit_exact: u64,
    /// Semantic hits.
    pub hit_semantic: u64,
    /// Misses.
    pub miss: u64,
    /// Bypasses.
    pub bypass: u64,
    /// Prompt tokens not sent upstream.
    pub saved_prompt_tokens: u64,
    /// Completion tokens not generated upstream.
    pub saved_completion_tokens: u64,
    /// Estimated USD saved (telemetry/prices.rs).
    pub saved_cost_usd: f64,
    /// Shadow mode: exact hits that would have been served.
    #[serde(default)]
    pub shadow_hit_exact: u64,
    /// Shadow mode: semantic hits that would have been served.
    #[serde(default)]
    pub shadow_hit_semantic: u64,
    /// Cached answers reported wrong (and removed).
    #[serde(default)]
    pub reported_wrong: u64,
}

impl Counts {
    /// Adds another slice's counts.
    fn merge(&mut self, o: &Counts) {
        self.hit_exact += o.hit_exact;
        self.hit_semantic += o.hit_semantic;
        self.miss += o.miss;
        self.bypass += o.bypass;
        self.saved_prompt_tokens = self
            .saved_prompt_tokens
            .saturating_add(o.saved_prompt_tokens);
        self.saved_completion_tokens = self
            .saved_completion_tokens
            .saturating_add(o.saved_completion_tokens);
        self.saved_cost_usd += o.saved_cost_usd;
        self.shadow_hit_exact += o.shadow_hit_exact;
        self.shadow_hit_semantic += o.shadow_hit_semantic;
        self.reported_wrong += o.reported_wrong;
    }

    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::HitExact => self.hit_exact += 1,
            Outcome::HitSemantic => self.hit_semantic += 1,
            Outcome::Miss => self.miss += 1,
            Outcome::Bypass => self.bypass += 1,
        }
    }

    /// Hits over lookups that could hit (bypasses excluded); 0 when none.
    pub fn hit_rate(&self) -> f64 {
        let hits = self.hit_exact + self.hit_semantic;
        let looked = hits + self.miss;
        if looked == 0 {
            0.0
        } else {
            hits as f64 / looked as f64
        }
    }
}

/// A semantic candidate that was not served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NearMiss {
    /// Unix seconds.
    pub at: u64,
    /// Requested model.
    pub route: String,
    /// The new prompt.
    pub prompt: String,
    /// The cached prompt it was compared with.
    pub cached_prompt: String,
    /// Cosine similarity.
    pub similarity: f32,
    /// `below_threshold` or the guard's reason.
    pub reason: String,
}

/// An entry among the most served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopEntry {
    /// Entry id.
    pub id: uuid::Uuid,
    /// Requested model or route.
    pub route: String,
    /// Provider/model of the stored answer.
    pub model: String,
    /// The cached prompt.
    pub prompt: String,
    /// Times served.
    pub hits: u64,
    /// Unix seconds of the latest hit.
    pub last_hit: u64,
}

/// Everything the stats endpoint shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Unix seconds of the first recorded lookup.
    pub since: u64,
    /// All lookups.
    pub total: Counts,
    /// By requested model (route or provider/model).
    pub by_route: BTreeMap<String, Counts>,
    /// By the provider/model that served the cached answer (hits only).
    pub by_model: BTreeMap<String, Counts>,
    /// Similarities of semantic hits, per bucket.
    pub hit_similarity: Vec<u64>,
    /// Similarities of best candidates not served (below threshold or rejected by the guard).
    pub near_miss_similarity: Vec<u64>,
    /// Guard rejections by reason.
    pub guard_rejections: BTreeMap<String, u64>,
    /// The latest near misses, newest first.
    pub recent_near_misses: VecDeque<NearMiss>,
    /// The most served entries (by their hit count at their latest hit), most first.
    #[serde(default)]
    pub top_entries: Vec<TopEntry>,
}

impl Snapshot {
    /// Adds another instance's figures: counts and histograms summed, the newest near misses
    /// and the most served entries of both kept.
    pub fn merge(&mut self, o: &Snapshot) {
        if o.since != 0 && (self.since == 0 || o.since < self.since) {
            self.since = o.since;
        }
        self.total.merge(&o.total);
        for (mine, theirs) in [
            (&mut self.by_route, &o.by_route),
            (&mut self.by_model, &o.by_model),
        ] {
            for (k, v) in theirs {
                mine.entry(k.clone()).or_default().merge(v);
            }
        }
        for (mine, theirs) in [
            (&mut self.hit_similarity, &o.hit_similarity),
            (&mut self.near_miss_similarity, &o.near_miss_similarity),
        ] {
            mine.resize(BUCKETS, 0);
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
        for (k, v) in &o.guard_rejections {
            *self.guard_rejections.entry(k.clone()).or_default() += v;
        }
        self.recent_near_misses
            .extend(o.recent_near_misses.iter().cloned());
        self.recent_near_misses
            .make_contiguous()
            .sort_by_key(|n| std::cmp::Reverse(n.at));
        self.recent_near_misses.truncate(NEAR_MISSES_KEPT);
        for t in &o.top_entries {
            match self.top_entries.iter_mut().find(|m| m.id == t.id) {
                Some(m) if m.hits < t.hits => *m = t.clone(),
                Some(_) => {}
                None => self.top_entries.push(t.clone()),
            }
        }
        self.top_entries
            .sort_by(|a, b| b.hits.cmp(&a.hits).then(b.last_hit.cmp(&a.last_hit)));
        self.top_entries.truncate(TOP_KEPT);
    }
}

/// Lower bounds of the histogram buckets.
pub fn bucket_bounds() -> Vec<f32> {
    (0..BUCKETS)
        .map(|i| BUCKET_LOW + BUCKET_WIDTH * i as f32)
        .collect()
}

fn bucket(sim: f32) -> Option<usize> {
    if !(BUCKET_LOW..=1.0001).contains(&sim) {
        return None;
    }
    Some((((sim - BUCKET_LOW) / BUCKET_WIDTH) as usize).min(BUCKETS - 1))
}

/// Where the figures are kept.
enum Backend {
    /// The embedded store (none: kept in memory only).
    Sled(Option<Store>),
    /// A fleet's Postgres, under this instance's own row.
    Postgres {
        /// The database.
        pg: Arc<Postgres>,
        /// This process's row.
        instance: String,
    },
}

/// The row instances gone for a while are folded into.
const ARCHIVE: &str = "archive";
/// How long a row may go unwritten before it counts as an instance gone (instances write every
/// few seconds while they have something to write, and at shutdown).
const GONE_AFTER_MS: i64 = 10 * 60 * 1000;

/// Live analytics.
pub struct Stats {
    inner: Mutex<Snapshot>,
    dirty: AtomicBool,
    backend: Backend,
}

impl Stats {
    /// A fleet instance's figures, starting empty in a row of its own.
    pub fn shared(pg: Arc<Postgres>) -> Self {
        let mut snap = Snapshot::default();
        snap.hit_similarity.resize(BUCKETS, 0);
        snap.near_miss_similarity.resize(BUCKETS, 0);
        Self {
            inner: Mutex::new(snap),
            dirty: AtomicBool::new(false),
            backend: Backend::Postgres {
                pg,
                instance: uuid::Uuid::new_v4().to_string(),
            },
        }
    }

    /// Loads the last snapshot from `store` (a snapshot that does not decode starts fresh).
    pub fn load(store: Option<Store>) -> Self {
        let mut snap = store
            .as_ref()
            .and_then(|s| match s.get::<Snapshot>(trees::CACHE_STATS, KEY) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cache analytics could not be read; starting fresh");
                    None
                }
            })
            .unwrap_or_default();
        snap.hit_similarity.resize(BUCKETS, 0);
        snap.near_miss_similarity.resize(BUCKETS, 0);
        Self {
            inner: Mutex::new(snap),
            dirty: AtomicBool::new(false),
            backend: Backend::Sled(store),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Snapshot)) {
        if let Ok(mut s) = self.inner.lock() {
            if s.since == 0 {
                s.since = crate::chat::unix_now();
            }
            f(&mut s);
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Counts a lookup.
    pub fn lookup(&self, route: &str, outcome: Outcome) {
        self.with(|s| {
            s.total.add(outcome);
            s.by_route.entry(route.to_owned()).or_default().add(outcome);
        });
    }

    /// Counts a shadow-mode hit (the lookup itself counts as a miss).
    pub fn shadow(&self, route: &str, outcome: Outcome) {
        let add = |c: &mut Counts| match outcome {
            Outcome::HitExact => c.shadow_hit_exact += 1,
            _ => c.shadow_hit_semantic += 1,
        };
        self.with(|s| {
            add(&mut s.total);
            add(s.by_route.entry(route.to_owned()).or_default());
        });
    }

    /// Counts a cached answer reported wrong.
    pub fn reported_wrong(&self, route: &str) {
        self.with(|s| {
            s.total.reported_wrong += 1;
            s.by_route
                .entry(route.to_owned())
                .or_default()
                .reported_wrong += 1;
        });
    }

    /// Counts what a hit saved.
    pub fn saved(&self, route: &str, model: &str, prompt: u64, completion: u64, cost: f64) {
        self.with(|s| {
            for c in [
                &mut s.total,
                s.by_route.entry(route.to_owned()).or_default(),
            ] {
                c.saved_prompt_tokens = c.saved_prompt_tokens.saturating_add(prompt);
                c.saved_completion_tokens = c.saved_completion_tokens.saturating_add(completion);
                c.saved_cost_usd += cost;
            }
            let m = s.by_model.entry(model.to_owned()).or_default();
            m.saved_prompt_tokens = m.saved_prompt_tokens.saturating_add(prompt);
            m.saved_completion_tokens = m.saved_completion_tokens.saturating_add(completion);
            m.saved_cost_usd += cost;
        });
    }

    /// Counts a hit against the model that served the original answer.
    pub fn model_hit(&self, model: &str, outcome: Outcome) {
        self.with(|s| s.by_model.entry(model.to_owned()).or_default().add(outcome));
    }

    /// Records the similarity of a semantic hit.
    pub fn hit_similarity(&self, sim: f32) {
        self.with(|s| {
            if let Some(b) = bucket(sim)
                && let Some(slot) = s.hit_similarity.get_mut(b)
            {
                *slot += 1;
            }
        });
    }

    /// Records a near miss.
    pub fn near_miss(&self, miss: NearMiss) {
        self.with(|s| {
            if let Some(b) = bucket(miss.similarity)
                && let Some(slot) = s.near_miss_similarity.get_mut(b)
            {
                *slot += 1;
            }
            if miss.reason != "below_threshold" {
                *s.guard_rejections.entry(miss.reason.clone()).or_default() += 1;
            }
            s.recent_near_misses.push_front(miss);
            s.recent_near_misses.truncate(NEAR_MISSES_KEPT);
        });
    }

    /// Notes a hit on an entry for the most-served list (`hits` is the entry's own count).
    pub fn entry_hit(&self, e: TopEntry) {
        self.with(|s| {
            s.top_entries.retain(|t| t.id != e.id);
            s.top_entries.push(e);
            s.top_entries
                .sort_by(|a, b| b.hits.cmp(&a.hits).then(b.last_hit.cmp(&a.last_hit)));
            s.top_entries.truncate(TOP_KEPT);
        });
    }

    /// Drops deleted entries from the most-served list.
    pub fn forget_entries(&self, keep: impl Fn(&TopEntry) -> bool) {
        self.with(|s| s.top_entries.retain(|t| keep(t)));
    }

    /// A copy of the current figures.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The figures of every instance of the fleet, this one's live (this one's alone without a
    /// fleet, or when the database cannot be read: said in the log).
    pub async fn fleet(&self) -> Snapshot {
        let mut snap = self.snapshot();
        let Backend::Postgres { pg, instance } = &self.backend else {
            return snap;
        };
        match pg.cache_stats_all().await {
            Ok(rows) => {
                for (name, _, v) in rows {
                    if &name == instance {
                        continue;
                    }
                    match serde_json::from_value::<Snapshot>(v) {
                        Ok(other) => snap.merge(&other),
                        Err(e) => {
                            tracing::warn!(row = %name, error = %e, "cache analytics of another instance could not be read");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the fleet's cache analytics cannot be read; showing this instance's");
            }
        }
        snap
    }

    /// Writes the figures to the store when they changed.
    pub async fn persist(&self) -> Result<(), StoreError> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let written = match &self.backend {
            Backend::Sled(None) => Ok(()),
            Backend::Sled(Some(store)) => store
                .put(trees::CACHE_STATS, KEY, &self.snapshot())
                .and_then(|()| store.flush()),
            Backend::Postgres { pg, instance } => match serde_json::to_value(self.snapshot()) {
                Ok(v) => pg.cache_stats_put(instance, now_ms(), &v).await,
                Err(e) => Err(StoreError::Record {
                    key: trees::CACHE_STATS.into(),
                    message: e.to_string(),
                }),
            },
        };
        if written.is_err() {
            // Written next time.
            self.dirty.store(true, Ordering::Relaxed);
        }
        written
    }

    /// Folds the rows of instances gone for ten minutes into one (fleet only).
    pub async fn compact(&self) -> Result<(), StoreError> {
        let Backend::Postgres { pg, instance } = &self.backend else {
            return Ok(());
        };
        let (tx, rows) = pg
            .cache_stats_begin(now_ms() - GONE_AFTER_MS, ARCHIVE)
            .await?;
        let mut archive = Snapshot::default();
        let mut folded = Vec::new();
        for (name, v) in rows {
            if &name == instance {
                continue;
            }
            // A row that does not decode is kept as it is (and reported by `fleet`).
            if let Ok(s) = serde_json::from_value::<Snapshot>(v) {
                archive.merge(&s);
                if name != ARCHIVE {
                    folded.push(name);
                }
            }
        }
        if folded.is_empty() {
            return Ok(());
        }
        let v = serde_json::to_value(&archive).map_err(|e| StoreError::Record {
            key: trees::CACHE_STATS.into(),
            message: e.to_string(),
        })?;
        tx.commit(ARCHIVE, now_ms(), &v, &folded).await
    }
}

fn now_ms() -> i64 {
    i64::try_from(crate::chat::unix_now_ms()).unwrap_or(i64::MAX)
}

/// The body of `GET /api/cache/stats`.
pub fn report(
    config: &crate::config::CacheConfig,
    snap: &Snapshot,
    entries: Option<u64>,
    ready: bool,
    components: serde_json::Value,
) -> serde_json::Value {
    use crate::config::CacheStore;
    let store = match &config.store {
        CacheStore::Embedded => "embedded",
        CacheStore::Qdrant { .. } => "qdrant",
    };
    let slices = |m: &BTreeMap<String, Counts>| {
        m.iter()
            .map(|(k, v)| (k.clone(), slice_json(v)))
            .collect::<serde_json::Map<_, _>>()
    };
    serde_json::json!({
        "enabled": config.enabled,
        "ready": ready,
        "components": components,
        "mode": config.mode.as_str(),
        "store": store,
        "threshold": config.threshold,
        "ttl_seconds": config.ttl.as_secs(),
        "max_entries": config.max_entries,
        "entries": entries,
        "since": snap.since,
        "lookups": counts_json(&snap.total),
        "hit_rate": snap.total.hit_rate(),
        "saved": {
            "prompt_tokens": snap.total.saved_prompt_tokens,
            "completion_tokens": snap.total.saved_completion_tokens,
            "cost_usd": snap.total.saved_cost_usd,
        },
        "similarity": {
            "bucket_lower_bounds": bucket_bounds(),
            "hits": snap.hit_similarity,
            "near_misses": snap.near_miss_similarity,
        },
        "guard_rejections": snap.guard_rejections,
        "by_route": slices(&snap.by_route),
        "by_model": slices(&snap.by_model),
        "recent_near_misses": snap.recent_near_misses,
        "top_entries": snap.top_entries,
    })
}

fn counts_json(c: &Counts) -> serde_json::Value {
    serde_json::json!({
        "hit-exact": c.hit_exact,
        "hit-semantic": c.hit_semantic,
        "miss": c.miss,
        "bypass": c.bypass,
        "shadow-hit-exact": c.shadow_hit_exact,
        "shadow-hit-semantic": c.shadow_hit_semantic,
        "reported-wrong": c.reported_wrong,
    })
}

fn slice_json(c: &Counts) -> serde_json::Value {
    serde_json::json!({
        "lookups": counts_json(c),
        "hit_rate": c.hit_rate(),
        "saved": {
            "prompt_tokens": c.saved_prompt_tokens,
            "completion_tokens": c.saved_completion_tokens,
            "cost_usd": c.saved_cost_usd,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(at: u64) -> NearMiss {
        NearMiss {
            at,
            route: "r".into(),
            prompt: format!("p{at}"),
            cached_prompt: "c".into(),
            similarity: 0.9,
            reason: "negation".into(),
        }
    }

    #[test]
    fn instances_figures_add_up() {
        let (a, b) = (Stats::load(None), Stats::load(None));
        a.lookup("r", Outcome::HitExact);
        a.lookup("r", Outcome::Miss);
        a.saved("r", "p/m", 10, 5, 0.5);
        a.hit_similarity(0.97);
        a.near_miss(near(1));
        b.lookup("r", Outcome::Miss);
        b.lookup("s", Outcome::HitSemantic);
        b.saved("s", "p/m", 1, 1, 0.25);
        b.hit_similarity(0.97);
        b.near_miss(near(3));
        let id = uuid::Uuid::new_v4();
        let top = |hits| TopEntry {
            id,
            route: "r".into(),
            model: "p/m".into(),
            prompt: "q".into(),
            hits,
            last_hit: hits,
        };
        a.entry_hit(top(2));
        b.entry_hit(top(5));
        let mut m = a.snapshot();
        m.merge(&b.snapshot());
        assert_eq!(
            (m.total.hit_exact, m.total.hit_semantic, m.total.miss),
            (1, 1, 2)
        );
        assert_eq!(m.by_route["r"].miss, 2);
        assert_eq!(m.by_route["s"].hit_semantic, 1);
        assert!((m.by_model["p/m"].saved_cost_usd - 0.75).abs() < 1e-9);
        assert_eq!(m.hit_similarity.iter().sum::<u64>(), 2);
        assert_eq!(m.guard_rejections["negation"], 2);
        let ats: Vec<u64> = m.recent_near_misses.iter().map(|n| n.at).collect();
        assert_eq!(ats, [3, 1], "newest first");
        assert_eq!(m.top_entries.len(), 1);
        assert_eq!(m.top_entries[0].hits, 5, "an entry's highest count");
    }
}
