//! Counters behind budgets and rate limits: all-or-nothing reservation across every bucket a
//! request touches (key, team, customer), then settlement that replaces the reservation with
//! what was used.
//!
//! [`Counters`] is the embedded store: one lock over an in-memory map (so a reservation over
//! several buckets is atomic), with spend and windows written to the sled store every 100 ms and
//! at shutdown, so a restart resets neither a budget nor a window (reservations in flight died
//! with the process and are not restored).

use foldhash::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::period::Window;
use crate::store::{Store, trees};

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// USD spent in the window.
    Budget,
    /// Requests in the window.
    Requests,
    /// Tokens in the window.
    Tokens,
    /// Requests in flight.
    Concurrent,
    /// MCP tool calls in the window.
    ToolCalls,
}

/// One bucket a request is charged to.
#[derive(Debug, Clone)]
pub struct Charge {
    /// Bucket id, e.g. `team:search:budget0`.
    pub bucket: Arc<str>,
    /// What it counts.
    pub kind: Kind,
    /// Its limit.
    pub limit: f64,
    /// When it resets.
    pub window: Window,
    /// What this request reserves (worst-case USD, estimated tokens, 1 request).
    pub amount: f64,
}

/// The bucket that refused, and its state.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Index of the refusing charge.
    pub index: usize,
    /// Used in the current window.
    pub used: f64,
    /// Reserved by requests in flight.
    pub reserved: f64,
    /// When the window resets (ms since the epoch; `None`: never).
    pub resets_at_ms: Option<i64>,
}

/// A bucket's state as shown by the API and the rate-limit headers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    /// Used in the current window.
    pub used: f64,
    /// Reserved by requests in flight.
    pub reserved: f64,
    /// When the window resets (ms since the epoch; `None`: never).
    pub resets_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct State {
    /// Window start (ms since the epoch; 0: none yet).
    #[serde(rename = "s")]
    start: i64,
    /// Used in the window.
    #[serde(rename = "u")]
    used: f64,
    /// Reserved in flight (not persisted).
    #[serde(skip)]
    reserved: f64,
}

impl State {
    /// Moves to the current window; returns its end.
    fn roll(&mut self, window: Window, now: DateTime<Utc>) -> Option<i64> {
        let (start, end, fresh) = window.current(self.start, now);
        if fresh {
            self.used = 0.0;
        }
        self.start = start;
        end
    }

    fn fits(&self, kind: Kind, limit: f64, amount: f64) -> bool {
        // A tiny tolerance so that float sums of prices do not refuse an exact fit.
        let eps = 1e-9;
        match kind {
            Kind::Budget | Kind::Tokens => {
                self.used + self.reserved + amount <= limit + eps
                    && (amount > 0.0 || self.used < limit)
            }
            Kind::Requests | Kind::ToolCalls => self.used + amount <= limit + eps,
            Kind::Concurrent => self.reserved + amount <= limit + eps,
        }
    }

    fn take(&mut self, kind: Kind, amount: f64) {
        match kind {
            Kind::Budget | Kind::Tokens | Kind::Concurrent => self.reserved += amount,
            Kind::Requests | Kind::ToolCalls => self.used += amount,
        }
    }
}

/// What is left reserved after releasing `amount` (float sums of many reservations leave dust).
fn release(reserved: f64, amount: f64) -> f64 {
    let left = reserved - amount;
    if left < 1e-9 { 0.0 } else { left }
}

/// The embedded counter store.
pub struct Counters {
    map: Mutex<Inner>,
    store: Option<Store>,
}

#[derive(Default)]
struct Inner {
    states: HashMap<Arc<str>, State>,
    dirty: HashSet<Arc<str>>,
}

impl Counters {
    /// Counters loaded from the store's `gov_counters` tree (empty without a store).
    pub fn open(store: Option<Store>) -> Arc<Self> {
        let mut inner = Inner::default();
        if let Some(s) = &store
            && let Ok(tree) = s.tree(trees::GOV_COUNTERS)
        {
            for (k, v) in tree.iter().flatten() {
                let (Ok(k), Ok(st)) = (
                    String::from_utf8(k.to_vec()),
                    serde_json::from_slice::<State>(&v),
                ) else {
                    continue;
                };
                inner.states.insert(Arc::from(k), st);
            }
        }
        Arc::new(Self {
            map: Mutex::new(inner),
            store,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves every charge, or none: the first that does not fit is returned. On success, each
    /// bucket's state after the reservation.
    pub fn reserve(
        &self,
        charges: &[Charge],
        now: DateTime<Utc>,
    ) -> Result<Vec<Snapshot>, Refusal> {
        let mut inner = self.lock();
        for (i, c) in charges.iter().enumerate() {
            let st = inner.states.entry(c.bucket.clone()).or_default();
            let end = st.roll(c.window, now);
            if !st.fits(c.kind, c.limit, c.amount) {
                return Err(Refusal {
                    index: i,
                    used: st.used,
                    reserved: st.reserved,
                    resets_at_ms: end,
                });
            }
        }
        let Inner { states, dirty } = &mut *inner;
        let mut snaps = Vec::with_capacity(charges.len());
        for c in charges {
            let st = states.entry(c.bucket.clone()).or_default();
            st.take(c.kind, c.amount);
            snaps.push(Snapshot {
                used: st.used,
                reserved: st.reserved,
                resets_at_ms: c.window.current(st.start, now).1,
            });
            if matches!(c.kind, Kind::Requests | Kind::ToolCalls) {
                dirty.insert(c.bucket.clone());
            }
        }
        Ok(snaps)
    }

    /// Replaces reservations with what was used: `actual` USD for budgets, `tokens` for token
    /// buckets; request and tool-call counts stay; concurrency is released.
    pub fn settle(&self, charges: &[Charge], actual_usd: f64, tokens: f64, now: DateTime<Utc>) {
        let mut inner = self.lock();
        let Inner { states, dirty } = &mut *inner;
        for c in charges {
            let st = states.entry(c.bucket.clone()).or_default();
            st.roll(c.window, now);
            match c.kind {
                Kind::Budget => {
                    st.reserved = release(st.reserved, c.amount);
                    st.used += actual_usd.max(0.0);
                    dirty.insert(c.bucket.clone());
                }
                Kind::Tokens => {
                    st.reserved = release(st.reserved, c.amount);
                    st.used += tokens.max(0.0);
                    dirty.insert(c.bucket.clone());
                }
                Kind::Concurrent => st.reserved = release(st.reserved, c.amount),
                Kind::Requests | Kind::ToolCalls => {}
            }
        }
    }

    /// A bucket's state now.
    pub fn snapshot(&self, bucket: &str, window: Window, now: DateTime<Utc>) -> Snapshot {
        let inner = self.lock();
        let mut st = inner.states.get(bucket).copied().unwrap_or_default();
        let resets_at_ms = st.roll(window, now);
        Snapshot {
            used: st.used,
            reserved: st.reserved,
            resets_at_ms,
        }
    }

    /// Forgets a deleted entity's buckets (`prefix` such as `key:abc:`).
    pub fn forget(&self, prefix: &str) {
        let mut inner = self.lock();
        let gone: Vec<Arc<str>> = inner
            .states
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for k in gone {
            inner.states.remove(&k);
            inner.dirty.insert(k);
        }
    }

    /// Writes changed counters to the store.
    pub fn flush(&self) {
        let Some(store) = &self.store else { return };
        let batch: Vec<(Arc<str>, Option<State>)> = {
            let mut inner = self.lock();
            let dirty = std::mem::take(&mut inner.dirty);
            dirty
                .into_iter()
                .map(|k| {
                    let st = inner.states.get(&k).copied();
                    (k, st)
                })
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        let Ok(tree) = store.tree(trees::GOV_COUNTERS) else {
            return;
        };
        let mut b = sled::Batch::default();
        for (k, st) in batch {
            match st.and_then(|s| serde_json::to_vec(&s).ok()) {
                Some(v) => b.insert(k.as_bytes(), v),
                None => b.remove(k.as_bytes()),
            }
        }
        if let Err(e) = tree.apply_batch(b) {
            tracing::error!(error = %e, "governance counters could not be saved");
        }
    }

    /// Flushes every 100 ms until `stop`, then once more.
    pub async fn flush_loop(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = stop.cancelled() => break,
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.flush()).await;
        }
        self.flush();
    }
}

/// The counter store in use: embedded, or Redis (shared by several instances).
#[derive(Clone)]
pub enum AnyCounters {
    /// In memory, persisted to sled.
    Embedded(Arc<Counters>),
    /// In Redis.
    Redis(Arc<super::redis::RedisCounters>),
}

impl AnyCounters {
    /// Where the counters live (`embedded` or `redis`) and whether it answers now.
    pub async fn health(&self) -> (&'static str, bool) {
        match self {
            Self::Embedded(_) => ("embedded", true),
            Self::Redis(r) => ("redis", Box::pin(r.ping()).await),
        }
    }

    /// Reserves every charge or none; `Err` when the store cannot be reached. `lease` names the
    /// reservation in a shared store (empty: nothing to settle later).
    pub async fn reserve(
        &self,
        charges: &[Charge],
        lease: &str,
    ) -> Result<Result<Vec<Snapshot>, Refusal>, super::redis::Unreachable> {
        match self {
            Self::Embedded(c) => Ok(c.reserve(charges, Utc::now())),
            Self::Redis(r) => Box::pin(r.reserve(charges, lease)).await,
        }
    }

    /// A name for a reservation that is to be settled: unique in a shared store (a process-local
    /// store needs none).
    pub fn new_lease(&self) -> Arc<str> {
        match self {
            Self::Embedded(_) => Arc::from(""),
            Self::Redis(_) => Arc::from(uuid::Uuid::new_v4().simple().to_string()),
        }
    }

    /// Replaces reservations with what was used (Redis: in a tracked background task).
    pub fn settle(&self, charges: Vec<Charge>, lease: &str, usd: f64, tokens: f64) {
        match self {
            Self::Embedded(c) => c.settle(&charges, usd, tokens, Utc::now()),
            Self::Redis(r) => r.settle(charges, lease, usd, tokens),
        }
    }

    /// A bucket's state now (zeros when the store cannot be reached).
    pub async fn snapshot(&self, bucket: &str, window: Window) -> Snapshot {
        match self {
            Self::Embedded(c) => c.snapshot(bucket, window, Utc::now()),
            Self::Redis(r) => Box::pin(r.snapshot(bucket, window))
                .await
                .unwrap_or_default(),
        }
    }

    /// Forgets a deleted entity's buckets.
    pub async fn forget(&self, prefix: &str) {
        match self {
            Self::Embedded(c) => c.forget(prefix),
            Self::Redis(r) => {
                if let Err(e) = r.forget(prefix).await {
                    tracing::warn!(error = %e, "the counters of a deleted entity stay in redis until they expire");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::period::Period;
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn budget(window: Window) -> [Charge; 1] {
        [Charge {
            bucket: Arc::from("key:k:budget0"),
            kind: Kind::Budget,
            limit: 1.0,
            window,
            amount: 0.6,
        }]
    }

    /// Spends 0.6 of 1.0 at `spend`, is refused a second 0.6 at `refused` (resetting at
    /// `resets`), and admitted again at `fresh`.
    fn resets(c: &Counters, w: Window, spend: &str, refused: &str, resets: &str, fresh: &str) {
        let ch = budget(w);
        c.reserve(&ch, at(spend)).unwrap();
        c.settle(&ch, 0.6, 0.0, at(spend));
        let r = c.reserve(&ch, at(refused)).unwrap_err();
        assert_eq!(r.used, 0.6);
        assert_eq!(r.resets_at_ms, Some(at(resets).timestamp_millis()));
        let snaps = c.reserve(&ch, at(fresh)).unwrap();
        assert_eq!(snaps[0].used, 0.0, "a new window starts empty");
        c.settle(&ch, 0.0, 0.0, at(fresh));
    }

    #[test]
    fn calendar_aligned_budgets_reset_on_utc_boundaries() {
        let cal = |p: &str| Window::Calendar(Period::parse(p).unwrap());
        let c = Counters::open(None);
        resets(
            &c,
            cal("1d"),
            "2026-03-31T23:59:58Z",
            "2026-03-31T23:59:59.999Z",
            "2026-04-01T00:00:00Z",
            "2026-04-01T00:00:00.001Z",
        );
        let c = Counters::open(None);
        resets(
            &c,
            cal("1M"),
            "2026-01-31T12:00:00Z",
            "2026-01-31T23:59:59Z",
            "2026-02-01T00:00:00Z",
            "2026-02-01T00:00:01Z",
        );
        // Weeks start on Monday (2026-03-02 is one).
        let c = Counters::open(None);
        resets(
            &c,
            cal("1w"),
            "2026-03-01T10:00:00Z",
            "2026-03-01T23:00:00Z",
            "2026-03-02T00:00:00Z",
            "2026-03-02T00:00:00Z",
        );
        let c = Counters::open(None);
        resets(
            &c,
            cal("1y"),
            "2026-12-31T23:00:00Z",
            "2026-12-31T23:59:59Z",
            "2027-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        );
    }

    #[test]
    fn rolling_budgets_reset_a_period_after_first_use() {
        let c = Counters::open(None);
        resets(
            &c,
            Window::Rolling(Period::parse("1d").unwrap()),
            "2026-03-31T10:00:00Z",
            "2026-04-01T09:59:59Z",
            "2026-04-01T10:00:00Z",
            "2026-04-01T10:00:00Z",
        );
    }

    #[test]
    fn spend_and_windows_survive_a_restart_and_reset_after_it() {
        let store = Store::temporary().unwrap();
        let w = Window::Calendar(Period::parse("1d").unwrap());
        let ch = budget(w);
        let c = Counters::open(Some(store.clone()));
        c.reserve(&ch, at("2026-05-05T20:00:00Z")).unwrap();
        c.settle(&ch, 0.6, 0.0, at("2026-05-05T20:00:01Z"));
        c.flush();
        drop(c);
        let c = Counters::open(Some(store));
        let r = c.reserve(&ch, at("2026-05-05T23:00:00Z")).unwrap_err();
        assert_eq!(r.used, 0.6, "spend kept across the restart");
        assert_eq!(r.reserved, 0.0, "reservations are not persisted");
        c.reserve(&ch, at("2026-05-06T00:00:00Z")).unwrap();
    }
}
