//! The request log: one record per request in the sled store (`request_log` tree, keyed by
//! time), written by one background task from a bounded queue so a log write never delays an
//! answer (a full queue drops the record and counts it in
//! `switchyard_log_records_dropped_total`). Retention by age and by count runs every minute.
//! Queries scan newest first with filters and a cursor; usage aggregates scan a time range.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::LogsConfig;
use crate::store::{Store, StoreError, trees};
use crate::telemetry::metrics::Metrics;

/// One request, as logged. No secrets: keys appear only as a virtual key's id.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogRecord {
    /// Unix milliseconds when the request arrived.
    pub at_ms: u64,
    /// `x-request-id`.
    pub request_id: String,
    /// `chat`, `messages` or `embeddings`.
    pub endpoint: String,
    /// The model (or route) the client asked for.
    pub model: String,
    /// Provider that served it (empty when none did).
    pub provider: String,
    /// Upstream model that served it.
    pub served_model: String,
    /// Upstream attempts, failed ones included (0 for cache hits).
    pub attempts: u32,
    /// HTTP status answered.
    pub status: u16,
    /// Streamed answer.
    pub stream: bool,
    /// Milliseconds to the last byte.
    pub latency_ms: f64,
    /// Milliseconds to the first streamed chunk (streams only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Milliseconds spent waiting on providers (to the first chunk for streams).
    #[serde(default)]
    pub upstream_ms: f64,
    /// Milliseconds spent in MCP tools the gateway ran.
    #[serde(default)]
    pub tools_ms: f64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Estimated cost in USD of the upstream calls (0 for cache hits).
    pub cost_usd: f64,
    /// Estimated USD a cache hit saved.
    #[serde(default)]
    pub saved_usd: f64,
    /// `hit-exact`, `hit-semantic`, `miss`, `bypass` (absent when the cache is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// Similarity of a semantic hit, or of the best candidate not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    /// MCP tools the gateway ran, as `server__tool`, in call order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_tools: Vec<String>,
    /// Virtual key id (when governance is on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key's team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The key's customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// The error answered, when the status is not 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Request body (only with `[logs] log_bodies = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<serde_json::Value>,
    /// Response body (only with `[logs] log_bodies = true`; streams: the assembled answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<serde_json::Value>,
}

/// Filters of `GET /api/logs` and `GET /api/usage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    /// Unix milliseconds, inclusive.
    pub from: Option<u64>,
    /// Unix milliseconds, exclusive.
    pub to: Option<u64>,
    /// Requested or served model (exact, or `provider/model`).
    pub model: Option<String>,
    /// Provider name.
    pub provider: Option<String>,
    /// A status code (`429`) or class (`2xx`, `4xx`, `5xx`, `error` = not 2xx).
    pub status: Option<String>,
    /// Cache outcome (`hit` = either kind of hit).
    pub cache: Option<String>,
    /// Virtual key id.
    pub key: Option<String>,
    /// Team id.
    pub team: Option<String>,
    /// Customer id.
    pub customer: Option<String>,
    /// Endpoint.
    pub endpoint: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<usize>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// `GET /api/usage`: seconds per series point (default: the range in about 48 points, >= 60 s).
    pub bucket: Option<u64>,
}

impl LogQuery {
    /// Whether `r` passes every filter (time included).
    pub fn matches(&self, r: &LogRecord) -> bool {
        let eq = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
        let model_ok = self.model.as_deref().is_none_or(|m| {
            m == r.model || m == r.served_model || m == format!("{}/{}", r.provider, r.served_model)
        });
        let status_ok = self.status.as_deref().is_none_or(|s| match s {
            "2xx" => (200..300).contains(&r.status),
            "4xx" => (400..500).contains(&r.status),
            "5xx" => r.status >= 500,
            "error" => !(200..300).contains(&r.status),
            code => code.parse::<u16>().is_ok_and(|c| c == r.status),
        });
        let cache_ok = self.cache.as_deref().is_none_or(|c| match c {
            "hit" => r.cache.as_deref().is_some_and(|o| o.starts_with("hit")),
            "off" => r.cache.is_none(),
            other => r.cache.as_deref() == Some(other),
        });
        model_ok
            && status_ok
            && cache_ok
            && eq(&self.provider, &r.provider)
            && eq(&self.endpoint, &r.endpoint)
            && self
                .key
                .as_deref()
                .is_none_or(|k| r.key.as_deref() == Some(k))
            && self
                .team
                .as_deref()
                .is_none_or(|t| r.team.as_deref() == Some(t))
            && self
                .customer
                .as_deref()
                .is_none_or(|c| r.customer.as_deref() == Some(c))
            && self.from.is_none_or(|f| r.at_ms >= f)
            && self.to.is_none_or(|t| r.at_ms < t)
    }

    /// Checks the values a filter cannot ignore.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = &self.status
            && !matches!(s.as_str(), "2xx" | "4xx" | "5xx" | "error")
            && s.parse::<u16>().is_err()
        {
            return Err(format!(
                "`status` must be a code like 429 or one of 2xx, 4xx, 5xx, error; got `{s}`"
            ));
        }
        if let Some(c) = &self.cache
            && !matches!(
                c.as_str(),
                "hit" | "hit-exact" | "hit-semantic" | "miss" | "bypass" | "off"
            )
        {
            return Err(format!(
                "`cache` must be one of hit, hit-exact, hit-semantic, miss, bypass, off; got `{c}`"
            ));
        }
        if let (Some(f), Some(t)) = (self.from, self.to)
            && f > t
        {
            return Err("`from` is after `to`".into());
        }
        if let Some(c) = &self.cursor
            && decode_cursor(c).is_none()
            && decode_pg_cursor(c).is_none()
        {
            return Err("`cursor` is not one this API returned".into());
        }
        Ok(())
    }
}

/// One page of records, newest first.
#[derive(Debug, Serialize)]
pub struct LogPage {
    /// `list`.
    pub object: &'static str,
    /// The records.
    pub data: Vec<LogRecord>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Aggregates for one group.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// Answers that were not 2xx.
    pub errors: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Estimated USD spent upstream.
    pub cost_usd: f64,
    /// Cache hits (exact and semantic).
    pub cache_hits: u64,
    /// Cache lookups that could hit (hits and misses).
    pub cache_lookups: u64,
    /// Estimated USD the cache saved.
    pub saved_usd: f64,
    /// MCP tools the gateway ran.
    pub mcp_tool_calls: u64,
    /// Sum of latencies (ms), for the mean.
    #[serde(skip)]
    latency_sum: f64,
    /// Mean latency in ms.
    pub mean_latency_ms: f64,
}

impl Totals {
    fn add(&mut self, r: &LogRecord) {
        self.requests += 1;
        if !(200..300).contains(&r.status) {
            self.errors += 1;
        }
        self.input_tokens = self.input_tokens.saturating_add(r.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(r.output_tokens);
        self.cost_usd += r.cost_usd;
        self.saved_usd += r.saved_usd;
        match r.cache.as_deref() {
            Some(o) if o.starts_with("hit") => {
                self.cache_hits += 1;
                self.cache_lookups += 1;
            }
            Some("miss") => self.cache_lookups += 1,
            _ => {}
        }
        self.mcp_tool_calls += r.mcp_tools.len() as u64;
        self.latency_sum += r.latency_ms;
        self.mean_latency_ms = self.latency_sum / self.requests as f64;
    }
}

/// `GET /api/usage`: totals, groups and a time series over a range.
#[derive(Debug, Serialize)]
pub struct Usage {
    /// Range start (unix ms) actually used.
    pub from: u64,
    /// Range end (unix ms, exclusive).
    pub to: u64,
    /// Everything in range.
    pub total: Totals,
    /// By requested model.
    pub by_model: BTreeMap<String, Totals>,
    /// By provider (`none` for requests no provider served).
    pub by_provider: BTreeMap<String, Totals>,
    /// By virtual key (`none` without one).
    pub by_key: BTreeMap<String, Totals>,
    /// Seconds per series bucket.
    pub bucket_seconds: u64,
    /// One point per bucket, empty ones included (up to 2,000 buckets; beyond that only those
    /// with data): `[start unix ms, totals]`, oldest first.
    pub series: Vec<(u64, Totals)>,
}

/// The log and its writer.
pub struct RequestLog {
    config: LogsConfig,
    store: Option<Store>,
    /// The fleet's shared log (`[server] state = "postgres"`): records go there instead, and
    /// queries read every instance's records.
    shared: Option<Shared>,
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
    seq: AtomicU64,
    count: AtomicU64,
    /// One zstd context for every chunk (made on the first), instead of one made and freed per
    /// chunk. Only the writer thread compresses, so the lock is never contended.
    zstd: std::sync::Mutex<Option<zstd::bulk::Compressor<'static>>>,
}

/// The Postgres log and the runtime the writer thread reaches it through.
struct Shared {
    pg: Arc<crate::store::postgres::Postgres>,
    runtime: tokio::runtime::Handle,
}

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

impl RequestLog {
    /// Opens the log and starts its writer and retention tasks.
    pub fn start(
        config: LogsConfig,
        store: Option<Store>,
        shared: Option<Arc<crate::store::postgres::Postgres>>,
        metrics: Arc<Metrics>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.queue);
        let count = store
            .as_ref()
            .and_then(|s| s.tree(trees::REQUEST_LOG).ok())
            .map_or(0, |t| {
                t.iter().keys().flatten().map(|k| key_count(&k)).sum()
            });
        let shared = shared.map(|pg| Shared {
            pg,
            runtime: tokio::runtime::Handle::current(),
        });
        let log = Arc::new(Self {
            config,
            store,
            shared,
            tx,
            metrics,
            seq: AtomicU64::new(0),
            count: AtomicU64::new(count),
            zstd: std::sync::Mutex::new(None),
        });
        if log.enabled() {
            // Writing is blocking work (sled, or Postgres through the runtime's handle): its own
            // thread, so a burst of records never holds up a runtime worker. The server calls
            // `finish` once it has drained its connections, so the records of requests answered
            // during a graceful shutdown are written too. It holds the log weakly: once the
            // gateway is gone (a runtime dropped without a shutdown) the queue's sender goes
            // with it and the thread ends.
            let w = Arc::downgrade(&log);
            tasks.spawn_blocking(move || writer(&w, rx));
            tasks.spawn(retention(log.clone(), shutdown.clone()));
        }
        log
    }

    /// Tells the writer to write what is queued and stop: the last step of a graceful shutdown,
    /// after the server has answered its last request.
    pub async fn finish(&self) {
        if self.enabled() {
            let _ = self.tx.send(Msg::Stop).await;
        }
    }

    /// Whether bodies are kept.
    pub fn log_bodies(&self) -> bool {
        self.config.log_bodies
    }

    /// Whether records are written at all.
    pub fn enabled(&self) -> bool {
        self.config.enabled && (self.store.is_some() || self.shared.is_some())
    }

    /// Queues a record; never waits. A full queue drops it and counts the drop.
    pub fn record(&self, rec: LogRecord) {
        if !self.enabled() {
            return;
        }
        if self.tx.try_send(Msg::Record(Box::new(rec))).is_err() {
            self.metrics.log_dropped.inc();
        }
    }

    fn tree(&self) -> Result<Option<sled::Tree>, StoreError> {
        match &self.store {
            Some(s) => s.tree(trees::REQUEST_LOG).map(Some),
            None => Ok(None),
        }
    }

    /// Writes a chunk: the records the writer drained at once, as one JSON array under one key
    /// (one sled insert per chunk instead of per record).
    fn write_chunk(&self, recs: &[LogRecord]) -> Result<(), StoreError> {
        if let Some(sh) = &self.shared {
            let rows: Vec<crate::store::postgres::LogRow> = recs
                .iter()
                .map(|r| {
                    (
                        i64::try_from(r.at_ms).unwrap_or(i64::MAX),
                        r.request_id.clone(),
                        serde_json::to_string(r).unwrap_or_default(),
                    )
                })
                .collect();
            sh.runtime.block_on(sh.pg.log_append(&rows))?;
            self.count.fetch_add(recs.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        let (Some(store), Some(min)) = (&self.store, recs.iter().map(|r| r.at_ms).min()) else {
            return Ok(());
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let n = u16::try_from(recs.len()).unwrap_or(u16::MAX);
        let key = chunk_key(min, seq, n);
        let json = serde_json::to_vec(recs).map_err(|e| StoreError::Record {
            key: trees::REQUEST_LOG.into(),
            message: e.to_string(),
        })?;
        // Compressed: sled's memory grows with the bytes it holds, not only its page cache
        // (docs/performance.md, memory), and a chunk's records repeat most of their text.
        let compressed = {
            let mut zstd = self
                .zstd
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ctx = match zstd.take() {
                Some(ctx) => Ok(ctx),
                None => zstd::bulk::Compressor::new(CHUNK_ZSTD_LEVEL),
            };
            // The context is kept only after a good chunk: an error leaves none to reuse.
            ctx.and_then(|mut ctx| {
                let out = ctx.compress(&json)?;
                *zstd = Some(ctx);
                Ok(out)
            })
        };
        let bytes = compressed.map_err(|e| StoreError::Record {
            key: trees::REQUEST_LOG.into(),
            message: format!("cannot compress a chunk: {e}"),
        })?;
        // Time-ordered keys only: a second tree keyed by request id (random keys) cost 2.5 times
        // the whole write (bench/requestlog.rs), so lookups by id scan instead.
        store.tree(trees::REQUEST_LOG)?.insert(&key[..], bytes)?;
        self.count.fetch_add(u64::from(n), Ordering::Relaxed);
        Ok(())
    }

    #[cfg(test)]
    fn write(&self, rec: &LogRecord) -> Result<(), StoreError> {
        self.write_chunk(std::slice::from_ref(rec))
    }

    /// Deletes chunks older than the retention and, beyond `max_records`, the oldest.
    /// Returns how many records were deleted.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<u64, StoreError> {
        if let Some(sh) = &self.shared {
            let cutoff = now_ms.saturating_sub(self.config.retention.as_millis() as u64);
            return sh.runtime.block_on(sh.pg.log_prune(
                i64::try_from(cutoff).unwrap_or(i64::MAX),
                i64::try_from(self.config.max_records).unwrap_or(i64::MAX),
            ));
        }
        let Some(tree) = self.tree()? else {
            return Ok(0);
        };
        let cutoff = now_ms.saturating_sub(self.config.retention.as_millis() as u64);
        let mut deleted = 0u64;
        loop {
            let over = self.count.load(Ordering::Relaxed) > self.config.max_records;
            let Some((k, _)) = tree.first()? else { break };
            if key_time(&k) >= cutoff && !over {
                break;
            }
            tree.remove(&k)?;
            let n = key_count(&k);
            let _ = self
                .count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(n))
                });
            deleted += n;
        }
        Ok(deleted)
    }

    /// Records stored now.
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// True when no record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One page, newest first, from the fleet's log when it is shared, else from this store.
    pub async fn page(&self, q: &LogQuery) -> Result<LogPage, StoreError> {
        let Some(sh) = &self.shared else {
            return self.query(q);
        };
        let limit = q.limit.unwrap_or(50).clamp(1, 500);
        let mut page = LogPage {
            object: "list",
            data: Vec::new(),
            next_cursor: None,
        };
        let from = q.from.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        let to =
            q.to.map_or(i64::MAX, |t| i64::try_from(t).unwrap_or(i64::MAX));
        let mut before = q.cursor.as_deref().and_then(decode_pg_cursor);
        loop {
            let rows = sh.pg.log_page(from, to, before, 500).await?;
            let n = rows.len();
            for (at, id, v) in rows {
                before = Some((at, id));
                let Ok(rec) = serde_json::from_value::<LogRecord>(v) else {
                    continue;
                };
                if !q.matches(&rec) {
                    continue;
                }
                if page.data.len() == limit {
                    // This record starts the next page: the cursor points just past it.
                    page.next_cursor = Some(format!("pg-{at}-{}", id + 1));
                    return Ok(page);
                }
                page.data.push(rec);
            }
            if n < 500 {
                return Ok(page);
            }
        }
    }

    /// The newest record with this request id, from the fleet's log when it is shared.
    pub async fn find(&self, request_id: &str) -> Result<Option<LogRecord>, StoreError> {
        match &self.shared {
            Some(sh) => Ok(sh
                .pg
                .log_by_id(request_id)
                .await?
                .and_then(|v| serde_json::from_value(v).ok())),
            None => self.get(request_id),
        }
    }

    /// Usage over `q`'s range, from the fleet's log when it is shared.
    pub async fn usage_of(
        &self,
        q: &LogQuery,
        now_ms: u64,
        bucket: Duration,
    ) -> Result<Usage, StoreError> {
        let Some(sh) = &self.shared else {
            return self.usage(q, now_ms, bucket);
        };
        let mut acc = UsageAcc::new(q, now_ms, bucket);
        let (from, to) = (
            i64::try_from(acc.u.from).unwrap_or(i64::MAX),
            i64::try_from(acc.u.to).unwrap_or(i64::MAX),
        );
        sh.pg
            .log_scan(from, to, |v| {
                if let Ok(r) = serde_json::from_value::<LogRecord>(v) {
                    acc.add(&r);
                }
            })
            .await?;
        Ok(acc.finish())
    }

    /// One page, newest first.
    pub fn query(&self, q: &LogQuery) -> Result<LogPage, StoreError> {
        let limit = q.limit.unwrap_or(50).clamp(1, 500);
        let mut page = LogPage {
            object: "list",
            data: Vec::new(),
            next_cursor: None,
        };
        let Some(tree) = self.tree()? else {
            return Ok(page);
        };
        let (start, end) = key_range(q.from, q.to);
        let cursor = q.cursor.as_deref().and_then(decode_cursor);
        let end = match cursor {
            // The cursor's chunk is included (the rest of it comes first).
            Some((k, _)) => end.min(next_key(k)),
            None => end,
        };
        for item in tree.range(start..end).rev() {
            let (k, v) = item?;
            let mut recs = decode_chunk(&v);
            if let Some((ck, idx)) = cursor
                && k.as_ref() == ck.as_slice()
            {
                recs.truncate(idx);
            }
            for (i, rec) in recs.into_iter().enumerate().rev() {
                if !q.matches(&rec) {
                    continue;
                }
                if page.data.len() == limit {
                    // At least one more: the next page starts with this record.
                    page.next_cursor = Some(encode_cursor(&k, i + 1));
                    return Ok(page);
                }
                page.data.push(rec);
            }
        }
        Ok(page)
    }

    /// The newest record with this request id: a scan from the newest chunk (the id's bytes are
    /// looked for before a chunk is decoded), so its cost grows with the record's age.
    pub fn get(&self, request_id: &str) -> Result<Option<LogRecord>, StoreError> {
        let Some(tree) = self.tree()? else {
            return Ok(None);
        };
        let needle = serde_json::to_string(request_id).unwrap_or_default();
        for item in tree.iter().rev() {
            let (_, v) = item?;
            let json = chunk_json(&v);
            if !contains(&json, needle.as_bytes()) {
                continue;
            }
            if let Some(r) = decode_chunk(&json)
                .into_iter()
                .rev()
                .find(|r| r.request_id == request_id)
            {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Aggregates over `q`'s range and filters, with a series of `bucket` buckets.
    pub fn usage(&self, q: &LogQuery, now_ms: u64, bucket: Duration) -> Result<Usage, StoreError> {
        let mut acc = UsageAcc::new(q, now_ms, bucket);
        let Some(tree) = self.tree()? else {
            return Ok(acc.u);
        };
        let (start, end) = key_range(Some(acc.u.from), Some(acc.u.to));
        for item in tree.range(start..end) {
            let (_, v) = item?;
            for r in decode_chunk(&v) {
                acc.add(&r);
            }
        }
        Ok(acc.finish())
    }
}

/// Usage being added up, record by record.
struct UsageAcc {
    u: Usage,
    q: LogQuery,
    bucket_ms: u64,
    series: BTreeMap<u64, Totals>,
}

impl UsageAcc {
    fn new(q: &LogQuery, now_ms: u64, bucket: Duration) -> Self {
        let to = q.to.unwrap_or(now_ms + 1);
        let from = q.from.unwrap_or_else(|| to.saturating_sub(86_400_000));
        let bucket_ms = (bucket.as_millis() as u64).max(1000);
        Self {
            u: Usage {
                from,
                to,
                total: Totals::default(),
                by_model: BTreeMap::new(),
                by_provider: BTreeMap::new(),
                by_key: BTreeMap::new(),
                bucket_seconds: bucket_ms / 1000,
                series: Vec::new(),
            },
            q: LogQuery {
                from: Some(from),
                to: Some(to),
                ..q.clone()
            },
            bucket_ms,
            series: BTreeMap::new(),
        }
    }

    fn add(&mut self, r: &LogRecord) {
        if !self.q.matches(r) {
            return;
        }
        let u = &mut self.u;
        u.total.add(r);
        u.by_model.entry(r.model.clone()).or_default().add(r);
        let provider = if r.provider.is_empty() {
            "none"
        } else {
            &r.provider
        };
        u.by_provider.entry(provider.to_owned()).or_default().add(r);
        let key = r.key.clone().unwrap_or_else(|| "none".into());
        u.by_key.entry(key).or_default().add(r);
        self.series
            .entry(r.at_ms - r.at_ms % self.bucket_ms)
            .or_default()
            .add(r);
    }

    fn finish(mut self) -> Usage {
        let (from, to, bucket_ms) = (self.u.from, self.u.to, self.bucket_ms);
        // Empty buckets are shown as zeros (for charts), unless the range holds too many.
        let first = from - from % bucket_ms;
        if (to - first) / bucket_ms <= 2_000 {
            let mut b = first;
            while b < to {
                self.series.entry(b).or_default();
                b += bucket_ms;
            }
        }
        self.u.series = self.series.into_iter().collect();
        self.u
    }
}

fn decode_pg_cursor(s: &str) -> Option<(i64, i64)> {
    let rest = s.strip_prefix("pg-")?;
    let (at, id) = rest.split_once('-')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

/// Chunk key: the earliest record's unix ms, a sequence number and the record count, big-endian.
type Key = [u8; 14];

fn chunk_key(at_ms: u64, seq: u64, n: u16) -> Key {
    let mut k = [0u8; 14];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..12].copy_from_slice(&(seq as u32).to_be_bytes());
    k[12..].copy_from_slice(&n.to_be_bytes());
    k
}

fn key_time(k: &[u8]) -> u64 {
    k.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

fn key_count(k: &[u8]) -> u64 {
    k.get(12..14)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, |b| u64::from(u16::from_be_bytes(b)))
}

/// The smallest key after `k`.
fn next_key(k: Key) -> Key {
    let mut n = k;
    for b in n.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return n;
        }
    }
    [0xff; 14]
}

/// How far a chunk's records may start after its key time (a chunk is what was queued at once;
/// a record's time is its request's start, so long requests finish late): ranges scan this much
/// wider, and records are filtered by their own time.
const CHUNK_SPREAD_MS: u64 = 3_600_000;

fn key_range(from: Option<u64>, to: Option<u64>) -> (Key, Key) {
    let start = from.map_or([0u8; 14], |f| {
        chunk_key(f.saturating_sub(CHUNK_SPREAD_MS), 0, 0)
    });
    let end = to.map_or([0xffu8; 14], |t| chunk_key(t, 0, 0));
    (start, end)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// zstd level of stored chunks (the fastest: the writer runs beside the request path).
const CHUNK_ZSTD_LEVEL: i32 = 1;
/// How a zstd frame begins (RFC 8878); a chunk written before compression is a JSON array.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A stored chunk's JSON: decompressed, or as it was written before chunks were compressed.
/// A chunk that does not decompress reads as empty (as one that does not parse).
fn chunk_json(v: &[u8]) -> Cow<'_, [u8]> {
    if v.starts_with(&ZSTD_MAGIC) {
        Cow::Owned(zstd::stream::decode_all(v).unwrap_or_default())
    } else {
        Cow::Borrowed(v)
    }
}

fn decode_chunk(v: &[u8]) -> Vec<LogRecord> {
    serde_json::from_slice(&chunk_json(v)).unwrap_or_default()
}

fn encode_cursor(key: &[u8], idx: usize) -> String {
    let mut s: String = key.iter().map(|b| format!("{b:02x}")).collect();
    s.push_str(&format!("-{idx}"));
    s
}

fn decode_cursor(s: &str) -> Option<(Key, usize)> {
    let (hex, idx) = s.split_once('-')?;
    if hex.len() != 28 || !hex.is_ascii() {
        return None;
    }
    let mut k = [0u8; 14];
    for (i, slot) in k.iter_mut().enumerate() {
        *slot = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some((k, idx.parse().ok()?))
}

/// What the writer thread receives.
enum Msg {
    /// A record to write.
    Record(Box<LogRecord>),
    /// Write what is queued before this, flush, stop.
    Stop,
}

/// Records written as one chunk at most.
const CHUNK: usize = 256;
/// How often the writer wakes to drain the queue. It is never woken per record: on a busy core
/// a wake-up per request cost more than the write itself.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

/// The writer thread: every `DRAIN_EVERY`, takes what is queued and writes it in chunks of up to
/// `CHUNK` records, until `Stop`, or until the log is dropped (its sender with it).
fn writer(log: &std::sync::Weak<RequestLog>, mut rx: mpsc::Receiver<Msg>) {
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut stop = false;
    while !stop {
        std::thread::sleep(DRAIN_EVERY);
        loop {
            match rx.try_recv() {
                Ok(Msg::Record(r)) => chunk.push(*r),
                Ok(Msg::Stop) | Err(mpsc::error::TryRecvError::Disconnected) => stop = true,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            let drained = stop || rx.is_empty();
            if chunk.len() == CHUNK || (drained && !chunk.is_empty()) {
                let Some(log) = log.upgrade() else { return };
                let mut tries = 0u32;
                while let Err(e) = log.write_chunk(&chunk) {
                    tries += 1;
                    // A shared log that is down: hold the chunk and try again (new records
                    // wait in the bounded queue; those beyond it are dropped and counted).
                    if log.shared.is_none() || stop || tries >= 600 {
                        log.metrics.log_dropped.inc_by(chunk.len() as u64);
                        tracing::warn!(error = %e, records = chunk.len(), "request log records not written");
                        break;
                    }
                    if tries == 1 {
                        tracing::warn!(error = %e, "the shared request log is unreachable; holding records and retrying every second");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                chunk.clear();
            }
            if drained {
                break;
            }
        }
    }
    if let Some(log) = log.upgrade()
        && let Some(s) = &log.store
    {
        let _ = s.flush();
    }
}

async fn retention(log: Arc<RequestLog>, shutdown: CancellationToken) {
    loop {
        // Deleting may take a while after a long stop: off the runtime's workers.
        let l = log.clone();
        let done =
            tokio::task::spawn_blocking(move || l.enforce_retention(crate::chat::unix_now_ms()))
                .await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "request log retention failed");
        }
        tokio::select! {
            () = tokio::time::sleep(RETENTION_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_records: u64, days: u64) -> Arc<RequestLog> {
        let (tx, _rx) = mpsc::channel(1);
        Arc::new(RequestLog {
            config: LogsConfig {
                max_records,
                retention: Duration::from_secs(days * 86_400),
                ..LogsConfig::default()
            },
            store: Some(Store::temporary().unwrap()),
            shared: None,
            tx,
            metrics: Arc::new(Metrics::new()),
            seq: AtomicU64::new(0),
            count: AtomicU64::new(0),
            zstd: std::sync::Mutex::new(None),
        })
    }

    fn rec(at_ms: u64, id: &str) -> LogRecord {
        LogRecord {
            at_ms,
            request_id: id.into(),
            status: 200,
            ..LogRecord::default()
        }
    }

    #[test]
    fn retention_drops_old_records_then_the_oldest_beyond_the_bound() {
        let day = 86_400_000;
        let now = 100 * day;
        let l = log(3, 30);
        for (i, at) in [now - 40 * day, now - 31 * day, now - 5 * day, now - 4 * day]
            .into_iter()
            .enumerate()
        {
            l.write(&rec(at, &format!("r{i}"))).unwrap();
        }
        assert_eq!(
            l.enforce_retention(now).unwrap(),
            2,
            "two are older than 30 days"
        );
        assert_eq!(l.len(), 2);
        assert!(
            l.get("r0").unwrap().is_none(),
            "a deleted record is not found"
        );
        for i in 4..7 {
            l.write(&rec(now - day + i, &format!("r{i}"))).unwrap();
        }
        assert_eq!(l.enforce_retention(now).unwrap(), 2, "5 records, bound 3");
        let page = l.query(&LogQuery::default()).unwrap();
        let ids: Vec<_> = page.data.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["r6", "r5", "r4"]);
    }

    #[test]
    fn chunks_are_stored_compressed_and_chunks_written_before_still_read() {
        let l = log(100, 30);
        let recs: Vec<_> = (0..50).map(|i| rec(1_000 + i, &format!("c{i}"))).collect();
        l.write_chunk(&recs).unwrap();
        let tree = l.tree().unwrap().unwrap();
        let (_, stored) = tree.iter().next().unwrap().unwrap();
        let json = serde_json::to_vec(&recs).unwrap();
        assert!(stored.starts_with(&ZSTD_MAGIC), "stored as a zstd frame");
        assert!(
            stored.len() * 4 < json.len(),
            "{} of {} bytes",
            stored.len(),
            json.len()
        );
        // A chunk as the log wrote it before compression: plain JSON under its key.
        let old = vec![rec(5_000, "old-1"), rec(5_001, "old-2")];
        tree.insert(
            &chunk_key(5_000, 99, 2)[..],
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        // Damaged bytes that look like a frame read as nothing, not as an error.
        let mut bad = ZSTD_MAGIC.to_vec();
        bad.extend_from_slice(b"not a frame");
        tree.insert(&chunk_key(6_000, 100, 1)[..], bad).unwrap();
        assert_eq!(l.get("c17").unwrap().unwrap().at_ms, 1_017);
        assert_eq!(l.get("old-2").unwrap().unwrap().at_ms, 5_001);
        assert!(l.get("c50").unwrap().is_none());
        let page = l
            .query(&LogQuery {
                limit: Some(3),
                ..LogQuery::default()
            })
            .unwrap();
        let ids: Vec<_> = page.data.iter().map(|r| r.request_id.as_str()).collect();
        assert_eq!(ids, ["old-2", "old-1", "c49"]);
    }

    #[test]
    fn pages_run_across_and_inside_chunks_newest_first() {
        let l = log(100, 30);
        let now = crate::chat::unix_now_ms();
        l.write_chunk(&[rec(now - 50, "a"), rec(now - 40, "b"), rec(now - 30, "c")])
            .unwrap();
        l.write_chunk(&[rec(now - 20, "d"), rec(now - 10, "e")])
            .unwrap();
        assert_eq!(l.len(), 5);
        let mut seen = Vec::new();
        let mut cursor = None;
        for _ in 0..5 {
            let page = l
                .query(&LogQuery {
                    limit: Some(2),
                    cursor: cursor.clone(),
                    ..LogQuery::default()
                })
                .unwrap();
            seen.push(
                page.data
                    .iter()
                    .map(|r| r.request_id.clone())
                    .collect::<Vec<_>>(),
            );
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, [vec!["e", "d"], vec!["c", "b"], vec!["a"]]);
        assert_eq!(l.get("b").unwrap().unwrap().request_id, "b");
        let u = l
            .usage(&LogQuery::default(), now + 1, Duration::from_secs(60))
            .unwrap();
        assert_eq!(u.total.requests, 5);
        let only = LogQuery {
            from: Some(now - 35),
            ..LogQuery::default()
        };
        assert_eq!(
            l.query(&only).unwrap().data.len(),
            3,
            "c, d, e start after from"
        );
    }

    #[test]
    fn cursors_are_checked() {
        let q = LogQuery {
            cursor: Some("zz".into()),
            ..LogQuery::default()
        };
        assert!(q.validate().is_err());
        assert_eq!(
            decode_cursor(&encode_cursor(&chunk_key(5, 7, 3), 2)),
            Some((chunk_key(5, 7, 3), 2))
        );
    }
}
