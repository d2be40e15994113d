//! The semantic cache: an exact tier on a canonical request hash, then a semantic tier (local
//! MiniLM embeddings, nearest neighbour within an exact partition, a guard against look-alike
//! prompts). Hits are replayed as JSON or as a live-looking stream; misses are stored after the
//! answer has been sent, by a tracked background task.
//!
//! ```text
//! lookup: fingerprint -> exact get -> (semantic) embed -> search(partition, ttl) -> guard -> hit
//! store:  answer complete (stream teed) -> embed if needed -> upsert -> evict / optimise
//! ```

pub mod embedder;
pub mod eval;
pub mod feedback;
pub mod guard;
pub mod index;
pub mod key;
pub mod replay;
pub mod stats;
pub mod verifier;
pub mod whatif;
#[rustfmt::skip]
mod words;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chat::{ChatResponse, ChatStream, unix_now};
use crate::config::cache::{Conversations, VERIFIER_FLOOR, Verifier};
use crate::config::{CacheConfig, CacheMode, CacheStore};
pub use crate::request::{CacheOptions, CacheStatus, Outcome, ShadowStatus};
use crate::request::{ChatBody, ChatOutcome, Served};
use crate::telemetry::metrics::{DirectionLabels, Metrics, OutcomeLabels, SimilarityLabels};
use crate::telemetry::prices::Prices;
use embedder::{Embedder, Model, OnnxEmbedder};
use index::{AnyIndex, EdgeIndex, Entry, IndexError, QdrantIndex, Selector, VectorIndex};
use key::Fingerprint;

/// Candidates fetched per semantic lookup (the best one that passes the guard wins).
const CANDIDATES: usize = 8;
/// Near misses are recorded down to this far below the threshold.
const NEAR_MISS_MARGIN: f32 = 0.15;
/// Semantic candidates the model verifier judges per lookup (the best ones; about 3 ms each).
const VERIFIER_CANDIDATES: usize = 2;
/// Entries deleted in one operation when the cache is over `max_entries`.
const EVICT_BATCH: usize = 10_000;
/// Housekeeping period: expiry sweep, eviction, index optimisation, analytics persistence.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// The fleet's cache analytics are compacted on the first tick and every ten minutes.
const COMPACT_EVERY_TICKS: u64 = 120;

/// A request the cache may store the answer of.
#[derive(Debug, Clone)]
pub struct Pending {
    fp: Fingerprint,
    /// The entry's id (from `fp.exact`), worked out once for the lookup and the store.
    id: uuid::Uuid,
    vector: Option<Vec<f32>>,
    ttl: Duration,
    skip: Option<SkipIf>,
    /// The route's mode compares meanings: the entry is stored with its vector.
    semantic: bool,
    /// Shadow mode: what would have been served, recorded with the live answer's first words.
    shadow: Option<whatif::Candidate>,
}

/// Decides, once the answer is complete, that it must not be stored.
#[derive(Clone)]
pub struct SkipIf(Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for SkipIf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SkipIf")
    }
}

impl Pending {
    /// Does not store the answer if `f` says so when it is complete.
    pub fn skip_if(&mut self, f: Arc<dyn Fn() -> bool + Send + Sync>) {
        self.skip = Some(SkipIf(f));
    }
}

/// A stored answer to serve.
#[derive(Debug)]
pub struct Hit {
    /// The answer (fresh id and timestamp).
    pub response: ChatResponse,
    /// Who served the original.
    pub served: Served,
    /// For the headers.
    pub status: CacheStatus,
    /// The entry that answered.
    pub entry_id: uuid::Uuid,
    /// The question asked (the trailing user turn(s)).
    pub asked: String,
    /// The cached question.
    pub cached_prompt: String,
}

/// Result of a lookup.
#[derive(Debug)]
pub enum Lookup {
    /// Serve this.
    Hit(Box<Hit>),
    /// Go upstream; store the answer when `pending` is set.
    Miss {
        /// For the headers.
        status: CacheStatus,
        /// What to store under.
        pending: Option<Box<Pending>>,
    },
    /// The cache is switched off in config: no header at all.
    Off,
}

/// State of a component loaded in the background.
#[derive(Debug, Clone, PartialEq)]
pub enum Component {
    /// Not needed (cache off, or exact mode for the embedder).
    Off,
    /// Being loaded.
    Loading,
    /// Ready.
    Ready,
    /// Could not be loaded; the reason.
    Failed(String),
}

impl Component {
    fn label(&self) -> String {
        match self {
            Self::Off => "off".into(),
            Self::Loading => "loading".into(),
            Self::Ready => "ready".into(),
            Self::Failed(r) => format!("unavailable: {r}"),
        }
    }
}

/// The cache stage.
pub struct Cache {
    config: CacheConfig,
    index: ArcSwapOption<AnyIndex>,
    embedder: ArcSwapOption<OnnxEmbedder>,
    verifier: ArcSwapOption<verifier::Verifier>,
    index_state: Mutex<Component>,
    embedder_state: Mutex<Component>,
    verifier_state: Mutex<Component>,
    stats: stats::Stats,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    writes: AtomicU64,
    entries: AtomicU64,
    prices: Arc<Prices>,
    candidates: whatif::Candidates,
    feedback: feedback::Feedback,
}

impl Cache {
    /// Creates the cache and starts loading its store and model in the background.
    pub fn start(
        config: CacheConfig,
        data_dir: &Path,
        stores: crate::store::Stores,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
        prices: Arc<Prices>,
    ) -> Arc<Self> {
        let enabled = config.enabled;
        let semantic = enabled && config.needs_embedder();
        let cache = Arc::new(Self {
            index: ArcSwapOption::empty(),
            embedder: ArcSwapOption::empty(),
            verifier: ArcSwapOption::empty(),
            verifier_state: Mutex::new(if semantic && config.verifier == Verifier::Model {
                Component::Loading
            } else {
                Component::Off
            }),
            index_state: Mutex::new(if enabled {
                Component::Loading
            } else {
                Component::Off
            }),
            embedder_state: Mutex::new(if semantic {
                Component::Loading
            } else {
                Component::Off
            }),
            stats: match stores.shared.clone() {
                Some(pg) => stats::Stats::shared(pg),
                None => stats::Stats::load(stores.local.clone()),
            },
            candidates: whatif::Candidates::open(&stores, &tasks),
            feedback: feedback::Feedback::open(&stores, &tasks),
            metrics,
            tasks: tasks.clone(),
            writes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            prices,
            config,
        });
        if !enabled {
            return cache;
        }
        let dir = data_dir.join("cache").join("edge");
        let c = cache.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move { c.open_index(dir, stop).await });
        if semantic {
            let c = cache.clone();
            tasks.spawn(async move { c.load_embedder().await });
        }
        let c = cache.clone();
        tasks.spawn(async move { c.maintenance(shutdown).await });
        cache
    }

    /// Opens the store; a Qdrant server that cannot be reached is retried with backoff (up to
    /// 30 s apart) until it answers or the gateway stops, serving uncached meanwhile.
    async fn open_index(self: Arc<Self>, dir: std::path::PathBuf, shutdown: CancellationToken) {
        let mut delay = Duration::from_secs(1);
        loop {
            if self.try_open_index(dir.clone()).await || shutdown.is_cancelled() {
                return;
            }
            if self.config.store == CacheStore::Embedded {
                return;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    async fn try_open_index(&self, dir: std::path::PathBuf) -> bool {
        let dims = embedder::DIMENSIONS;
        let result: Result<AnyIndex, IndexError> = match &self.config.store {
            CacheStore::Embedded => {
                match tokio::task::spawn_blocking(move || EdgeIndex::open(&dir, dims)).await {
                    Ok(Ok((idx, recovered))) => {
                        if let Some(r) = recovered {
                            tracing::error!("semantic cache: {r}");
                        }
                        Ok(AnyIndex::Edge(idx))
                    }
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(IndexError::Task(e.to_string())),
                }
            }
            CacheStore::Qdrant {
                url,
                collection,
                api_key,
            } => QdrantIndex::open(url, collection, api_key.as_ref().map(|k| k.expose()), dims)
                .await
                .map(AnyIndex::Qdrant),
        };
        match result {
            Ok(idx) => {
                let n = idx.count().await.unwrap_or(0);
                self.entries.store(n, Ordering::Relaxed);
                self.metrics.cache_entries.set(n as i64);
                self.index.store(Some(Arc::new(idx)));
                self.set(&self.index_state, Component::Ready);
                tracing::info!(entries = n, "semantic cache store ready");
                true
            }
            Err(e) => {
                let retrying = if self.config.store == CacheStore::Embedded {
                    ""
                } else {
                    " (retrying)"
                };
                tracing::error!(error = %e, "semantic cache store unavailable{retrying}; serving uncached");
                self.set(
                    &self.index_state,
                    Component::Failed(format!("{e}{retrying}")),
                );
                false
            }
        }
    }

    async fn load_embedder(self: Arc<Self>) {
        let dir = self.config.embedding_model.clone();
        let runtime = self.config.onnx_runtime.clone();
        let started = Instant::now();
        let loaded = tokio::task::spawn_blocking(move || {
            Model::load(&dir, &runtime).and_then(OnnxEmbedder::start)
        })
        .await;
        match loaded {
            Ok(Ok(e)) => {
                self.embedder.store(Some(Arc::new(e)));
                self.set(&self.embedder_state, Component::Ready);
                tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    model = %self.config.embedding_model.display(),
                    "embedding model loaded"
                );
            }
            Ok(Err(e)) => {
                tracing::error!("semantic cache: {e}");
                self.set(&self.embedder_state, Component::Failed(e.to_string()));
            }
            Err(e) => {
                tracing::error!(error = %e, "semantic cache: the embedding model crashed while loading");
                self.set(&self.embedder_state, Component::Failed(e.to_string()));
            }
        }
        if self.config.verifier == Verifier::Model {
            self.load_verifier().await;
        }
    }

    /// Loads the learned verifier (after the embedder: ONNX Runtime is loaded by then).
    async fn load_verifier(&self) {
        let dir = self.config.verifier_model.clone();
        let tokenizer = self.config.embedding_model.clone();
        let threshold = self.config.verifier_threshold;
        let conversations = (self.config.conversations == Conversations::Meaning)
            .then(|| self.config.conversation_model.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            let load = |c: Option<&std::path::Path>| {
                verifier::Verifier::load(&dir, &tokenizer, threshold, c)
            };
            match load(conversations.as_deref()) {
                Ok(v) => Ok((v, None)),
                // Without its conversation model the verifier still judges questions.
                Err(e) if conversations.is_some() => load(None).map(|v| (v, Some(e))),
                Err(e) => Err(e),
            }
        })
        .await;
        match loaded {
            Ok(Ok((v, conversation_error))) => {
                if let Some(e) = conversation_error {
                    tracing::error!(
                        "cache conversation verifier: {e}; earlier turns must match exactly"
                    );
                }
                tracing::info!(
                    threshold = v.threshold,
                    model = %self.config.verifier_model.display(),
                    conversations = v.reads_conversations(),
                    "cache verifier loaded"
                );
                self.verifier.store(Some(Arc::new(v)));
                self.set(&self.verifier_state, Component::Ready);
            }
            Ok(Err(e)) => {
                tracing::error!("semantic cache verifier: {e}; using the guard instead");
                self.set(&self.verifier_state, Component::Failed(e.to_string()));
            }
            Err(e) => {
                tracing::error!(error = %e, "semantic cache: the verifier crashed while loading; using the guard instead");
                self.set(&self.verifier_state, Component::Failed(e.to_string()));
            }
        }
    }

    fn set(&self, slot: &Mutex<Component>, v: Component) {
        if let Ok(mut s) = slot.lock() {
            *s = v;
        }
    }

    fn get(slot: &Mutex<Component>) -> Component {
        slot.lock().map(|s| s.clone()).unwrap_or(Component::Loading)
    }

    /// Ready when nothing is still loading (a failed part is reported, not waited for).
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let index = Self::get(&self.index_state);
        let embedder = Self::get(&self.embedder_state);
        let verifier = Self::get(&self.verifier_state);
        let ready = index != Component::Loading
            && embedder != Component::Loading
            && verifier != Component::Loading;
        let mut parts = serde_json::json!({"store": index.label(), "embedder": embedder.label()});
        if verifier != Component::Off {
            parts["verifier"] = verifier.label().into();
        }
        (ready, parts)
    }

    async fn maintenance(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_writes = 0;
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(MAINTENANCE_EVERY) => {}
            }
            if let Some(idx) = self.index.load_full() {
                let writes = self.writes.load(Ordering::Relaxed);
                if let Err(e) = self.housekeeping(&idx, writes != last_writes).await {
                    tracing::warn!(error = %e, "semantic cache housekeeping failed");
                }
                last_writes = writes;
            }
            if let Err(e) = self.stats.persist().await {
                tracing::warn!(error = %e, "cache analytics could not be saved");
            }
            ticks += 1;
            if ticks % COMPACT_EVERY_TICKS == 1
                && let Err(e) = self.stats.compact().await
            {
                tracing::warn!(error = %e, "the fleet's cache analytics could not be compacted");
            }
        }
        if let Err(e) = self.stats.persist().await {
            tracing::warn!(error = %e, "cache analytics could not be saved");
        }
    }

    async fn housekeeping(&self, idx: &AnyIndex, wrote: bool) -> Result<(), IndexError> {
        idx.delete_where(Selector {
            model: None,
            expired_at: Some(unix_now()),
        })
        .await?;
        self.evict(idx).await?;
        if wrote {
            idx.maintain().await?;
        }
        Ok(())
    }

    /// Deletes the least recently used entries beyond `max_entries`.
    async fn evict(&self, idx: &AnyIndex) -> Result<(), IndexError> {
        let mut n = idx.count().await?;
        if n > self.config.max_entries {
            let excess = (n - self.config.max_entries) as usize;
            // Deleted in batches (one at a time, a busy cache spent more on eviction than on
            // storing answers).
            let ids = idx.least_used(excess).await?;
            for batch in ids.chunks(EVICT_BATCH) {
                idx.delete_many(batch.to_vec()).await?;
            }
            n = idx.count().await?;
        }
        self.entries.store(n, Ordering::Relaxed);
        self.metrics.cache_entries.set(n as i64);
        Ok(())
    }

    fn count_lookup(&self, route: &str, outcome: Outcome, started: Instant) {
        self.metrics
            .cache_lookup(outcome.label(), started.elapsed().as_secs_f64());
        self.stats.lookup(route, outcome);
    }

    fn similarity(&self, result: &str, sim: f32) {
        self.metrics
            .cache_similarity
            .get_or_create(&SimilarityLabels {
                result: result.into(),
            })
            .observe(f64::from(sim));
    }

    /// Looks a request up, under the policy of its route (`[[routes]] cache`, else `[cache]`).
    pub async fn lookup(&self, req: &crate::chat::ChatRequest, opts: &CacheOptions) -> Lookup {
        if !self.config.enabled {
            return Lookup::Off;
        }
        let policy = self.config.policy(&req.model);
        if policy.mode == CacheMode::Off {
            return Lookup::Off;
        }
        let shadow = (policy.mode == CacheMode::Shadow).then_some(ShadowStatus {
            outcome: Outcome::Miss,
            similarity: None,
        });
        let started = Instant::now();
        let route = req.model.as_str();
        let bypass = |me: &Self| {
            me.count_lookup(route, Outcome::Bypass, started);
            Lookup::Miss {
                status: CacheStatus {
                    outcome: Outcome::Bypass,
                    similarity: None,
                    best_candidate: None,
                    shadow: None,
                },
                pending: None,
            }
        };
        if !opts.store {
            return bypass(self);
        }
        let by_meaning = self.config.conversations == Conversations::Meaning
            && self.config.verifier == Verifier::Model;
        let Ok(fp) = key::fingerprint_with(req, &opts.partition, by_meaning) else {
            return bypass(self);
        };
        let Some(idx) = self.index.load_full() else {
            return bypass(self);
        };
        let mut pending = Pending {
            id: key::point_id(&fp.exact),
            fp,
            vector: None,
            ttl: opts.ttl.unwrap_or(policy.ttl),
            skip: None,
            semantic: policy.mode.semantic(),
            shadow: None,
        };
        let miss_near = |me: &Self, pending: Pending, best: Option<f32>| {
            me.count_lookup(route, Outcome::Miss, started);
            Lookup::Miss {
                status: CacheStatus {
                    outcome: Outcome::Miss,
                    similarity: None,
                    best_candidate: best,
                    shadow,
                },
                pending: Some(Box::new(pending)),
            }
        };
        let miss = |me: &Self, pending: Pending| miss_near(me, pending, None);
        if !opts.lookup {
            return miss(self, pending);
        }
        // The learned verifier, when configured and loaded, judges candidates from a lower
        // similarity floor (or the threshold the config sets); otherwise the guard does, from
        // the threshold.
        let model = match self.config.verifier {
            Verifier::Model => self.verifier.load_full(),
            Verifier::Guard => None,
        };
        let threshold = opts.threshold.unwrap_or(if model.is_some() {
            policy.configured.unwrap_or(VERIFIER_FLOOR)
        } else {
            policy.threshold
        });
        let now = unix_now();
        match idx.get(pending.id).await {
            Ok(Some(e)) if e.exact == pending.fp.exact && e.expires > now => {
                if shadow.is_some() {
                    return self.shadow_hit(route, pending, e, None, threshold, started);
                }
                let asked = e.prompt.clone();
                if let Some(hit) = self.serve(&idx, e, Outcome::HitExact, None, asked) {
                    self.count_lookup(route, Outcome::HitExact, started);
                    return Lookup::Hit(Box::new(hit));
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cache lookup failed; treating as a miss"),
        }
        if !pending.semantic {
            return miss(self, pending);
        }
        let Some(text) = pending.fp.text.clone() else {
            return miss(self, pending);
        };
        let Some(embedder) = self.embedder.load_full() else {
            return miss(self, pending);
        };
        // The semantic steps' futures are boxed: an exact-mode lookup does not carry their size.
        let vector = match Box::pin(embedder.embed(text.clone())).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "embedding failed; treating as a miss");
                return miss(self, pending);
            }
        };
        let floor = (threshold - NEAR_MISS_MARGIN).max(0.0);
        let candidates = Box::pin(idx.search(
            vector.clone(),
            &pending.fp.partition,
            now,
            floor,
            CANDIDATES,
        ))
        .await;
        pending.vector = Some(vector);
        let mut candidates = match candidates {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cache search failed; treating as a miss");
                return miss(self, pending);
            }
        };
        // The guard's view of the question, only when the guard judges.
        let query = (model.is_none() && self.config.guard).then(|| guard::features(&text));
        // Candidates with the same earlier turns first (by similarity within each group): with
        // conversations judged by meaning, a partition holds many contexts.
        candidates.sort_by_key(|c| c.entry.context != pending.fp.context);
        let mut best_rejected = None;
        let mut verified = 0;
        for c in candidates {
            if c.score < threshold {
                if best_rejected.is_none() {
                    best_rejected = Some((c, "below_threshold".to_owned()));
                }
                continue;
            }
            let verdict = match &model {
                Some(_) if verified >= VERIFIER_CANDIDATES => break,
                Some(v) => {
                    verified += 1;
                    let cached = verifier::Side {
                        context: &c.entry.context,
                        last: &c.entry.prompt,
                    };
                    let asked = verifier::Side {
                        context: &pending.fp.context,
                        last: &text,
                    };
                    Box::pin(v.accepts(cached, asked)).await
                }
                // The guard judges questions only: earlier turns must be the same.
                None if c.entry.context != pending.fp.context => Err("context".to_owned()),
                None => match &query {
                    Some(q) => guard::check(q, &guard::features(&c.entry.prompt))
                        .map_err(|r| r.label().to_owned()),
                    None => Ok(()),
                },
            };
            if let Err(reason) = verdict {
                if best_rejected.is_none() {
                    best_rejected = Some((c, reason));
                }
                continue;
            }
            let score = c.score;
            if shadow.is_some() {
                self.similarity("shadow", score);
                return self.shadow_hit(route, pending, c.entry, Some(score), threshold, started);
            }
            let cached_prompt = c.entry.prompt.clone();
            if let Some(hit) = self.serve(
                &idx,
                c.entry,
                Outcome::HitSemantic,
                Some(score),
                text.clone(),
            ) {
                self.candidate(route, &text, cached_prompt, score, threshold, "hit");
                self.similarity("hit", score);
                self.stats.hit_similarity(score);
                self.count_lookup(route, Outcome::HitSemantic, started);
                return Lookup::Hit(Box::new(hit));
            }
        }
        let best = best_rejected.as_ref().map(|(c, _)| c.score);
        if let Some((c, reason)) = best_rejected {
            let result = if reason == "below_threshold" {
                "below_threshold"
            } else {
                "guard"
            };
            self.similarity(result, c.score);
            self.candidate(
                route,
                &text,
                c.entry.prompt.clone(),
                c.score,
                threshold,
                &reason,
            );
            self.stats.near_miss(stats::NearMiss {
                at: now,
                route: route.to_owned(),
                prompt: text,
                cached_prompt: c.entry.prompt,
                similarity: c.score,
                reason,
            });
        }
        miss_near(self, pending, best)
    }

    /// Shadow mode found `e` (semantic: at `similarity`): counted, and kept in `pending` to be
    /// recorded beside the live answer once it is complete. Nothing is served: the lookup is a
    /// miss that says what would have been.
    fn shadow_hit(
        &self,
        route: &str,
        mut pending: Pending,
        e: Entry,
        similarity: Option<f32>,
        threshold: f32,
        started: Instant,
    ) -> Lookup {
        let outcome = if similarity.is_some() {
            Outcome::HitSemantic
        } else {
            Outcome::HitExact
        };
        self.stats.shadow(route, outcome);
        self.metrics
            .cache_shadow_hits
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label().into(),
            })
            .inc();
        pending.shadow = Some(whatif::Candidate {
            at_ms: crate::chat::unix_now_ms(),
            route: route.to_owned(),
            prompt: pending.fp.text.clone().unwrap_or_default(),
            cached_prompt: e.prompt,
            similarity: similarity.unwrap_or(1.0),
            threshold,
            result: whatif::SHADOW.to_owned(),
            shadow: Some(whatif::ShadowDetail {
                tier: outcome.label().to_owned(),
                entry_id: e.id.to_string(),
                cached_answer: whatif::first_words_of_json(&e.response),
                live_answer: None,
            }),
        });
        self.count_lookup(route, Outcome::Miss, started);
        Lookup::Miss {
            status: CacheStatus {
                outcome: Outcome::Miss,
                similarity: None,
                best_candidate: similarity,
                shadow: Some(ShadowStatus {
                    outcome,
                    similarity,
                }),
            },
            pending: Some(Box::new(pending)),
        }
    }

    /// Keeps a semantic candidate for the threshold what-if.
    fn candidate(
        &self,
        route: &str,
        prompt: &str,
        cached_prompt: String,
        similarity: f32,
        threshold: f32,
        result: &str,
    ) {
        let c = whatif::Candidate {
            at_ms: crate::chat::unix_now_ms(),
            route: route.to_owned(),
            prompt: prompt.to_owned(),
            cached_prompt,
            similarity,
            threshold,
            result: result.to_owned(),
            shadow: None,
        };
        if let Err(e) = self.candidates.record(&c) {
            tracing::debug!(error = %e, "cache candidate not kept");
        }
    }

    /// The threshold what-if at `t` (see whatif.rs).
    pub async fn what_if(
        &self,
        t: f32,
        route: Option<&str>,
    ) -> Result<whatif::WhatIf, crate::store::StoreError> {
        let all = self.candidates.all().await?;
        Ok(whatif::report(&all, t, self.config.threshold, route))
    }

    /// Turns an entry into a hit, recording the hit in the background.
    fn serve(
        &self,
        idx: &Arc<AnyIndex>,
        e: Entry,
        outcome: Outcome,
        similarity: Option<f32>,
        asked: String,
    ) -> Option<Hit> {
        let response: ChatResponse = match serde_json::from_str(&e.response) {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(id = %e.id, error = %err, "unreadable cache entry dropped");
                let idx = idx.clone();
                self.tasks.spawn(async move {
                    let _ = idx.delete(e.id).await;
                });
                return None;
            }
        };
        let model = format!("{}/{}", e.provider, e.served_model);
        self.stats.model_hit(&model, outcome);
        let cost = self
            .prices
            .estimate(&e.served_model, e.prompt_tokens, e.completion_tokens);
        self.stats
            .saved(&e.model, &model, e.prompt_tokens, e.completion_tokens, cost);
        for (direction, n) in [("input", e.prompt_tokens), ("output", e.completion_tokens)] {
            self.metrics
                .cache_saved_tokens
                .get_or_create(&DirectionLabels {
                    direction: direction.into(),
                })
                .inc_by(n);
        }
        self.stats.entry_hit(stats::TopEntry {
            id: e.id,
            route: e.model.clone(),
            model: model.clone(),
            prompt: e.prompt.clone(),
            hits: e.hits + 1,
            last_hit: unix_now(),
        });
        let idx = idx.clone();
        let (id, hits) = (e.id, e.hits + 1);
        self.tasks.spawn(async move {
            if let Err(err) = idx.touch(id, hits, unix_now()).await {
                tracing::debug!(error = %err, "cache hit count not updated");
            }
        });
        Some(Hit {
            response: replay::fresh(response),
            served: Served {
                provider: e.provider.into(),
                model: e.served_model.into(),
                attempts: 0,
            },
            status: CacheStatus {
                outcome,
                similarity,
                best_candidate: None,
                shadow: None,
            },
            entry_id: e.id,
            asked,
            cached_prompt: e.prompt,
        })
    }

    /// Remembers a hit served under `request_id`, so that a report can name it.
    pub fn remember_hit(&self, request_id: &str, route: &str, hit: &Hit) {
        self.feedback.remember(feedback::HitRecord {
            request_id: request_id.to_owned(),
            entry_id: hit.entry_id,
            route: route.to_owned(),
            prompt: hit.asked.clone(),
            cached_prompt: hit.cached_prompt.clone(),
            similarity: hit.status.similarity,
        });
    }

    /// A served answer reported wrong, by entry id and/or the hit's request id: the entry is
    /// removed, the report counted, and the pair of questions kept.
    pub async fn report_wrong(
        &self,
        entry: Option<uuid::Uuid>,
        request_id: Option<&str>,
        source: &str,
    ) -> Result<feedback::Reported, feedback::FeedbackError> {
        use feedback::FeedbackError as E;
        let rec = self.feedback.find(request_id, entry)?;
        let entry_id = match (entry, &rec) {
            (Some(e), _) => e,
            (None, Some(h)) => h.entry_id,
            (None, None) => {
                return Err(E::NotFound(format!(
                    "no recent cache hit has the request id `{}`",
                    request_id.unwrap_or_default()
                )));
            }
        };
        let idx = self
            .index
            .load_full()
            .ok_or_else(|| E::Unavailable("the cache store is not open (see /ready)".into()))?;
        let stored = idx
            .get(entry_id)
            .await
            .map_err(|e| E::Unavailable(e.to_string()))?;
        if stored.is_none() && rec.is_none() {
            return Err(E::NotFound(format!("no cache entry {entry_id}")));
        }
        if stored.is_some() {
            idx.delete(entry_id)
                .await
                .map_err(|e| E::Unavailable(e.to_string()))?;
        }
        self.feedback.forget_entry(entry_id);
        let (route, cached_prompt) = match (&rec, &stored) {
            (Some(h), _) => (h.route.clone(), h.cached_prompt.clone()),
            (None, Some(e)) => (e.model.clone(), e.prompt.clone()),
            (None, None) => (String::new(), String::new()),
        };
        let r = feedback::Reported {
            at_ms: crate::chat::unix_now_ms(),
            entry_id: entry_id.to_string(),
            request_id: rec.as_ref().map(|h| h.request_id.clone()),
            route,
            prompt: rec.as_ref().map(|h| h.prompt.clone()),
            cached_prompt,
            similarity: rec.as_ref().and_then(|h| h.similarity),
            source: source.to_owned(),
        };
        if let Err(e) = self.feedback.keep(&r) {
            tracing::warn!(error = %e, "a reported cache pair could not be kept");
        }
        self.stats.reported_wrong(&r.route);
        self.metrics
            .cache_feedback
            .get_or_create(&OutcomeLabels {
                outcome: "wrong".into(),
            })
            .inc();
        self.recount().await;
        Ok(r)
    }

    /// The kept reports, oldest first.
    pub async fn reported(&self) -> Result<Vec<feedback::Reported>, crate::store::StoreError> {
        self.feedback.all().await
    }

    /// Serves a hit as the client asked: JSON, or a replayed stream.
    pub fn hit_outcome(&self, hit: Hit, stream: bool) -> ChatOutcome {
        let body = if stream {
            ChatBody::Stream(replay::stream(
                replay::chunks(&hit.response, true),
                self.config.replay_delay,
            ))
        } else {
            ChatBody::Complete(Box::new(hit.response))
        };
        ChatOutcome {
            served: hit.served,
            body,
            cache: Some(hit.status),
            mcp: None,
            json: None,
        }
    }

    /// Arranges for the answer in `outcome` to be stored once it is complete: now for JSON,
    /// at the end of the stream for streams (a stream that fails or is dropped stores nothing).
    /// A complete answer is stored as the upstream's JSON when the outcome carries it, or as
    /// `serde_json` writes it, and comes back with that JSON (`json`), which the OpenAI edge
    /// sends as it is: the answer is encoded once at most.
    pub fn capture(self: &Arc<Self>, outcome: ChatOutcome, pending: Pending) -> ChatOutcome {
        let served = outcome.served.clone();
        let mut json = outcome.json;
        let body = match outcome.body {
            ChatBody::Complete(resp) => {
                let stored = self.store_later(
                    pending,
                    AnswerRef::Decoded(&resp),
                    &served,
                    json.clone(),
                    true,
                );
                json = stored.or(json);
                ChatBody::Complete(resp)
            }
            ChatBody::Raw(raw) => {
                // Stored as the bytes the client gets.
                let given = Some(raw.bytes.clone());
                self.store_later(pending, AnswerRef::Raw(&raw), &served, given, false);
                ChatBody::Raw(raw)
            }
            ChatBody::Stream(stream) => ChatBody::Stream(self.tee(stream, pending, served.clone())),
        };
        ChatOutcome {
            served,
            body,
            cache: outcome.cache,
            mcp: outcome.mcp,
            json,
        }
    }

    fn tee(
        self: &Arc<Self>,
        mut stream: ChatStream,
        pending: Pending,
        served: Served,
    ) -> ChatStream {
        let cache = self.clone();
        Box::pin(async_stream::stream! {
            let mut acc = crate::chat::StreamCollector::default();
            let mut failed = false;
            while let Some(item) = stream.next().await {
                match &item {
                    Ok(chunk) => acc.push(chunk),
                    Err(_) => failed = true,
                }
                yield item;
            }
            if !failed {
                let answer = acc.finish();
                cache.store_later(pending, AnswerRef::Decoded(&answer), &served, None, false);
            }
        })
    }

    /// Stores an answer in the background, if it is one worth keeping: as `given` (the
    /// upstream's own JSON of it, when a stage has it) or as `serde_json` writes it. With `send`,
    /// returns the JSON it is stored as, for the OpenAI edge to send.
    fn store_later(
        &self,
        mut pending: Pending,
        answer: AnswerRef<'_>,
        served: &Served,
        given: Option<bytes::Bytes>,
        send: bool,
    ) -> Option<bytes::Bytes> {
        if let Some(mut c) = pending.shadow.take() {
            if let Some(d) = c.shadow.as_mut() {
                d.live_answer = Some(match answer {
                    AnswerRef::Decoded(resp) => whatif::first_words(resp),
                    AnswerRef::Raw(raw) => raw
                        .decode()
                        .map(|r| whatif::first_words(&r))
                        .unwrap_or_default(),
                });
            }
            if let Err(e) = self.candidates.record(&c) {
                tracing::debug!(error = %e, "shadow hit not kept");
            }
        }
        let idx = self.index.load_full()?;
        if pending.skip.as_ref().is_some_and(|f| (f.0)()) {
            tracing::debug!(
                "answer built on MCP tool results; not cached (cache_tool_answers = false)"
            );
            count_write(&self.metrics, "skipped");
            return None;
        }
        let checked = match answer {
            AnswerRef::Decoded(resp) => storable(resp),
            AnswerRef::Raw(raw) => {
                storable_parts(raw.choices, raw.finish_reason.as_deref(), raw.said)
            }
        };
        if let Err(why) = checked {
            tracing::debug!(why, "answer not cached");
            count_write(&self.metrics, "skipped");
            return None;
        }
        let embedder = match (&pending.vector, &pending.fp.text, pending.semantic) {
            (None, Some(_), true) => self.embedder.load_full(),
            _ => None,
        };
        // The entry is built now, from the answer the client is getting (no copy of it kept);
        // only the embedding (when needed) and the write wait in the background.
        let Pending {
            fp,
            id,
            vector,
            ttl,
            ..
        } = pending;
        // The upstream's own JSON (it was read without error, so it is UTF-8) is kept as it came.
        let given = given.and_then(|b| {
            let text = std::str::from_utf8(&b).ok()?.to_owned();
            Some((text, b))
        });
        let (json, sent) = match (given, answer) {
            (Some((text, bytes)), _) => (text, send.then_some(bytes)),
            (None, AnswerRef::Raw(_)) => {
                count_write(&self.metrics, "skipped");
                return None;
            }
            (None, AnswerRef::Decoded(resp)) => {
                let Ok(json) = serde_json::to_string(resp) else {
                    count_write(&self.metrics, "skipped");
                    return None;
                };
                // The client's copy: a memcpy, where encoding the answer again was not.
                let copy = send.then(|| bytes::Bytes::copy_from_slice(json.as_bytes()));
                (json, copy)
            }
        };
        let now = unix_now();
        let (prompt_tokens, completion_tokens) = match answer {
            AnswerRef::Decoded(resp) => resp
                .usage
                .as_ref()
                .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens)),
            AnswerRef::Raw(raw) => raw.tokens.unwrap_or_default(),
        };
        // The question's text again only for the embedding.
        let text = embedder.as_ref().and_then(|_| fp.text.clone());
        let entry = Entry {
            id,
            schema: key::SCHEMA,
            exact: fp.exact,
            partition: fp.partition,
            model: fp.model,
            provider: served.provider.to_string(),
            served_model: served.model.to_string(),
            prompt: fp.text.unwrap_or_default(),
            context: fp.context,
            response: json,
            prompt_tokens,
            completion_tokens,
            created: now,
            // Whole seconds, rounded up: an entry lives at least its TTL, never less.
            expires: now.saturating_add(ttl.as_secs()).saturating_add(1),
            last_used: now,
            hits: 0,
        };
        let metrics = self.metrics.clone();
        self.writes.fetch_add(1, Ordering::Relaxed);
        let then: index::Then = Box::new(move |result| {
            let outcome = match result {
                Ok(()) => "stored",
                Err(e) => {
                    tracing::warn!(error = %e, "answer could not be cached");
                    "failed"
                }
            };
            count_write(&metrics, outcome);
        });
        match (vector, embedder, text) {
            (None, Some(e), Some(t)) => {
                // The embedding waits for the model, on a task that then waits for the store.
                self.tasks.spawn(async move {
                    let vector = e.embed(t).await.ok();
                    then(idx.upsert(entry, vector).await);
                });
            }
            (vector, _, _) => idx.upsert_then(entry, vector, &self.tasks, then),
        }
        sent
    }

    /// `GET /api/cache/stats`.
    pub async fn stats_json(&self) -> serde_json::Value {
        let entries = match self.index.load_full() {
            Some(idx) => idx.count().await.ok(),
            None => None,
        };
        let (ready, parts) = self.readiness();
        let mut snap = self.stats.fleet().await;
        // Entries evicted or expired since their last hit leave the most-served list.
        if let Some(idx) = self.index.load_full() {
            let mut gone = Vec::new();
            for t in &snap.top_entries {
                if matches!(idx.get(t.id).await, Ok(None)) {
                    gone.push(t.id);
                }
            }
            if !gone.is_empty() {
                self.stats.forget_entries(|t| !gone.contains(&t.id));
                snap.top_entries.retain(|t| !gone.contains(&t.id));
            }
        }
        stats::report(&self.config, &snap, entries, ready, parts)
    }

    /// The store, when it is open (admin API).
    pub fn index(&self) -> Option<Arc<AnyIndex>> {
        self.index.load_full()
    }

    /// Refreshes the entry gauge after an admin delete.
    pub async fn recount(&self) {
        if let Some(idx) = self.index.load_full()
            && let Ok(n) = idx.count().await
        {
            self.entries.store(n, Ordering::Relaxed);
            self.metrics.cache_entries.set(n as i64);
        }
    }

    /// The embedding thread's batching figures, when the model is loaded.
    pub fn batch_stats(&self) -> Option<embedder::BatchStats> {
        self.embedder.load_full().map(|e| e.batch_stats())
    }
}

/// Counts a write of an answer (`switchyard_cache_writes_total`).
fn count_write(metrics: &Metrics, outcome: &'static str) {
    metrics
        .cache_writes
        .get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
}

/// Whether an answer is worth storing: one complete choice, not filtered.
fn storable(resp: &ChatResponse) -> Result<(), &'static str> {
    let first = resp.choices.first();
    let said = first.is_some_and(|c| {
        c.message
            .content
            .as_ref()
            .is_some_and(|t| !t.as_text().is_empty())
            || c.message.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
    });
    let finish = first.and_then(|c| c.finish_reason.as_deref());
    storable_parts(resp.choices.len(), finish, said)
}

/// [`storable`] from what it reads: how many choices, the first one's finish reason and whether
/// it says anything (text or tool calls).
fn storable_parts(choices: usize, finish: Option<&str>, said: bool) -> Result<(), &'static str> {
    if choices != 1 {
        return Err("not exactly one choice");
    }
    match finish {
        Some("stop" | "length" | "tool_calls" | "function_call") => {}
        Some(_) => return Err("finish reason not cacheable"),
        None => return Err("answer cut short"),
    }
    if !said {
        return Err("empty answer");
    }
    Ok(())
}

/// A complete answer as the cache reads it for storing.
#[derive(Clone, Copy)]
enum AnswerRef<'a> {
    Decoded(&'a ChatResponse),
    Raw(&'a crate::chat::RawAnswer),
}
