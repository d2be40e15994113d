//! The router: resolve a model name to weighted targets and fallbacks, then run attempts with
//! the one retry policy (`retry.rs`), key rotation and circuit breakers (`breaker.rs`).

pub mod breaker;
pub mod retry;

use foldhash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tracing::Instrument;

use crate::chat::{ChatRequest, ChatStream, StreamError};
use crate::config::{Config, KeyConfig, ProviderKind, RouterConfig, env_hint};
use crate::providers::{Answer, AnyProvider, Call, ProviderError};
use crate::request::{ChatBackend, ChatBody, ChatOutcome, RequestContext, Served};
use crate::telemetry::metrics::Metrics;
use breaker::{BreakerKey, Breakers};

/// Why the router could not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No provider is configured at all.
    #[error("no provider is configured: set one of {0} (or pass --config)")]
    NoProviders(String),
    /// The model is neither a route nor `provider/model`.
    #[error("unknown model `{model}`: {hint}")]
    UnknownModel {
        /// What the client asked for.
        model: String,
        /// What it could ask for instead.
        hint: String,
    },
    /// The request cannot be served by the resolved providers.
    #[error("{0}")]
    Unsupported(String),
    /// Every target's breaker is open.
    #[error("every target for `{0}` is temporarily unavailable (circuit open); retry later")]
    Unavailable(String),
    /// The last upstream failure, after retries and fallbacks.
    #[error("{error} (provider `{}`, model `{}`, after {} attempt(s))", served.provider, served.model, served.attempts)]
    Upstream {
        /// The failure.
        error: ProviderError,
        /// Who failed last.
        served: Served,
    },
    /// The request deadline passed between attempts.
    #[error("request timed out after {attempts} upstream attempt(s)")]
    Deadline {
        /// Attempts made.
        attempts: u32,
    },
}

/// An answer kept as the upstream's JSON ([`ChatBody::Raw`]), decoded for a stage that reads
/// or changes all of it; the bytes stay with it as its JSON (`ChatOutcome::json`) until a stage
/// changes it. Any other outcome is returned as it is. An answer that does not decode is the
/// upstream's failure, as when it is decoded on arrival.
pub fn decode_raw(outcome: ChatOutcome) -> Result<ChatOutcome, RouterError> {
    let ChatOutcome {
        served,
        body,
        cache,
        mcp,
        json,
    } = outcome;
    let (body, json) = match body {
        ChatBody::Raw(raw) => match raw.decode() {
            Ok(resp) => (ChatBody::Complete(Box::new(resp)), Some(raw.bytes)),
            Err(e) => {
                return Err(RouterError::Upstream {
                    error: ProviderError::Decode(e.to_string()),
                    served,
                });
            }
        },
        other => (other, json),
    };
    Ok(ChatOutcome {
        served,
        body,
        cache,
        mcp,
        json,
    })
}

impl RouterError {
    /// Who was tried, for the response headers.
    pub fn served(&self) -> Option<&Served> {
        match self {
            Self::Upstream { served, .. } => Some(served),
            _ => None,
        }
    }
}

/// A provider with its keys and settings.
#[derive(Debug)]
pub struct ProviderSlot {
    /// Configured name.
    pub name: Arc<str>,
    /// Configured kind.
    pub kind: ProviderKind,
    /// Base URL (for display).
    pub base_url: String,
    /// The adapter.
    pub provider: AnyProvider,
    /// Weighted keys.
    pub keys: Vec<KeyConfig>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retries on one target.
    pub max_retries: u32,
    /// Models listed for this provider.
    pub models: Vec<String>,
}

/// A resolved target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Index into the provider table.
    pub provider: usize,
    /// Upstream model.
    pub model: Arc<str>,
    /// Relative weight.
    pub weight: f64,
}

/// A configured route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Route name.
    pub name: String,
    /// Weighted targets.
    pub targets: Vec<Target>,
    /// Ordered fallbacks.
    pub fallbacks: Vec<Target>,
}

/// Providers and routes; swapped whole when the configuration changes.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Providers in config order.
    pub providers: Vec<ProviderSlot>,
    by_name: HashMap<String, usize>,
    /// Routes in config order.
    pub routes: Vec<Route>,
    route_index: HashMap<String, usize>,
    bare: HashMap<String, usize>,
}

impl RouteTable {
    /// Builds the table from a validated config.
    pub fn build(cfg: &Config, client: &crate::providers::client::Client) -> Self {
        let mut t = RouteTable::default();
        for p in &cfg.providers {
            t.by_name.insert(p.name.clone(), t.providers.len());
            for m in &p.models {
                t.bare.entry(m.clone()).or_insert(t.providers.len());
            }
            t.providers.push(ProviderSlot {
                name: Arc::from(p.name.as_str()),
                kind: p.kind,
                base_url: p.base_url.clone(),
                provider: AnyProvider::new(p, client.clone()),
                keys: p.keys.clone(),
                timeout: p.timeout,
                max_retries: p.max_retries,
                models: p.models.clone(),
            });
        }
        let to_target =
            |by_name: &HashMap<String, usize>, provider: &str, model: &str, weight: f64| {
                by_name.get(provider).map(|&i| Target {
                    provider: i,
                    model: Arc::from(model),
                    weight,
                })
            };
        for r in &cfg.routes {
            let route = Route {
                name: r.model.clone(),
                targets: r
                    .targets
                    .iter()
                    .filter_map(|x| to_target(&t.by_name, &x.provider, &x.model, x.weight))
                    .collect(),
                fallbacks: r
                    .fallbacks
                    .iter()
                    .filter_map(|x| to_target(&t.by_name, &x.provider, &x.model, 1.0))
                    .collect(),
            };
            t.route_index.insert(route.name.clone(), t.routes.len());
            t.routes.push(route);
        }
        t
    }

    /// The ordered attempt plan for a model name: weighted targets (shuffled by weight), then fallbacks.
    pub fn plan(&self, model: &str) -> Result<Vec<Target>, RouterError> {
        if self.providers.is_empty() {
            return Err(RouterError::NoProviders(env_hint()));
        }
        if let Some(route) = self
            .route_index
            .get(model)
            .and_then(|&i| self.routes.get(i))
        {
            let mut plan = weighted_order(route.targets.clone());
            plan.extend(route.fallbacks.iter().cloned());
            return Ok(plan);
        }
        if let Some((p, m)) = model.split_once('/')
            && let Some(&i) = self.by_name.get(p)
            && !m.is_empty()
        {
            return Ok(vec![self.single(i, m)]);
        }
        if let Some(&i) = self.bare.get(model) {
            return Ok(vec![self.single(i, model)]);
        }
        if self.providers.len() == 1 && !model.is_empty() {
            return Ok(vec![self.single(0, model)]);
        }
        Err(RouterError::UnknownModel {
            model: model.to_owned(),
            hint: self.hint(),
        })
    }

    fn single(&self, provider: usize, model: &str) -> Target {
        Target {
            provider,
            model: Arc::from(model),
            weight: 1.0,
        }
    }

    fn hint(&self) -> String {
        let providers: Vec<&str> = self.providers.iter().map(|p| &*p.name).collect();
        let routes: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        let mut s = format!(
            "ask for `provider/model` (providers: {})",
            providers.join(", ")
        );
        if !routes.is_empty() {
            s.push_str(&format!(" or a route ({})", routes.join(", ")));
        }
        s
    }
}

/// Orders targets by repeated weighted draws without replacement.
fn weighted_order(mut pool: Vec<Target>) -> Vec<Target> {
    let mut out = Vec::with_capacity(pool.len());
    while !pool.is_empty() {
        let i = weighted_pick(pool.iter().map(|t| t.weight));
        out.push(pool.swap_remove(i));
    }
    out
}

/// Index drawn with probability proportional to its weight.
pub fn weighted_pick(weights: impl Iterator<Item = f64> + Clone) -> usize {
    let total: f64 = weights.clone().sum();
    let mut x = fastrand::f64() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        last = i;
        if x < w {
            return i;
        }
        x -= w;
    }
    last
}

/// The router.
#[derive(Debug)]
pub struct Router {
    table: ArcSwap<RouteTable>,
    cfg: RouterConfig,
    breakers: Breakers,
    metrics: Arc<Metrics>,
}

/// Why a key is not used for the rest of this request (or until a rate-limit wait is over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyUse {
    /// Usable.
    Open,
    /// 401/403: not used again in this request.
    Rejected,
    /// 429: usable again after waiting out the backoff.
    Limited,
    /// Its circuit breaker is open.
    Broken,
}

/// Per-request key bookkeeping for one provider.
struct KeyState {
    keys: Vec<KeyUse>,
}

impl Router {
    /// A router over this table.
    pub fn new(table: RouteTable, cfg: RouterConfig, metrics: Arc<Metrics>) -> Self {
        let breakers = Breakers::new(cfg.breaker_failures, cfg.breaker_cooldown);
        Self {
            table: ArcSwap::from_pointee(table),
            cfg,
            breakers,
            metrics,
        }
    }

    /// The current table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Puts a new table in place, atomically: requests in flight finish on the one they started
    /// with, new ones use this.
    pub fn replace(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    /// Breaker states, for metrics and the admin API.
    pub fn breakers(&self) -> Vec<(BreakerKey, breaker::State)> {
        self.breakers.snapshot()
    }

    /// Chat, streamed or not, through the attempt plan of `req.model`.
    async fn route_chat(
        &self,
        req: &ChatRequest,
        ctx: &RequestContext,
    ) -> Result<ChatOutcome, RouterError> {
        let table = self.table();
        let plan = table.plan(&req.model)?;
        if !req.is_stream() {
            let raw = ctx.raw_answer;
            let (answer, served) = self
                .run("chat", &table, &plan, ctx, |p, call| {
                    Box::pin(p.chat(req, call, raw))
                })
                .await?;
            let (body, json) = match answer {
                Answer::Decoded(resp, json) => (ChatBody::Complete(resp), json),
                Answer::Raw(raw) => (ChatBody::Raw(raw), None),
            };
            return Ok(ChatOutcome {
                served,
                body,
                cache: None,
                mcp: None,
                json,
            });
        }
        let (stream, served) = self
            .run("chat", &table, &plan, ctx, |p, call| {
                Box::pin(first_chunk(p, req, call, ctx.raw_answer))
            })
            .await?;
        let idle = table
            .providers
            .iter()
            .find(|p| p.name == served.provider)
            .map_or(Duration::from_secs(60), |p| p.timeout);
        Ok(ChatOutcome {
            served,
            body: ChatBody::Stream(Box::pin(Watched::new(stream, idle))),
            cache: None,
            mcp: None,
            json: None,
        })
    }

    /// Embeddings through the attempt plan of the body's `model`.
    pub async fn embed(
        &self,
        body: &Value,
        ctx: &RequestContext,
    ) -> Result<(Value, Served), RouterError> {
        let table = self.table();
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let plan: Vec<Target> = table
            .plan(model)?
            .into_iter()
            .filter(|t| {
                table
                    .providers
                    .get(t.provider)
                    .is_some_and(|p| p.provider.supports_embeddings())
            })
            .collect();
        if plan.is_empty() {
            return Err(RouterError::Unsupported(format!(
                "`{model}` resolves only to providers without an embeddings API (use an OpenAI-compatible provider)"
            )));
        }
        self.run("embeddings", &table, &plan, ctx, |p, call| {
            Box::pin(p.embed(body, call))
        })
        .await
    }

    /// Runs attempts over the plan until one succeeds or the policy gives up.
    async fn run<'a, T>(
        &self,
        operation: &'static str,
        table: &'a RouteTable,
        plan: &'a [Target],
        ctx: &RequestContext,
        op: impl Fn(&'a AnyProvider, Call<'a>) -> BoxFuture<'a, Result<T, ProviderError>>,
    ) -> Result<(T, Served), RouterError> {
        let mut attempts = 0u32;
        let mut last: Option<(ProviderError, Served)> = None;
        let mut skipped_open = false;
        for (ti, target) in plan.iter().enumerate() {
            let Some(slot) = table.providers.get(target.provider) else {
                continue;
            };
            let mut keys = KeyState {
                keys: vec![KeyUse::Open; slot.keys.len().max(1)],
            };
            let mut retries = 0u32;
            loop {
                let remaining = ctx.deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(last
                        .map_or(RouterError::Deadline { attempts }, |(error, served)| {
                            RouterError::Upstream { error, served }
                        }));
                }
                let Some(k) = self.pick_key(slot, target, &mut keys) else {
                    skipped_open = true;
                    break;
                };
                attempts += 1;
                if attempts > 1 {
                    self.metrics
                        .retries
                        .get_or_create(&provider_label(&slot.name))
                        .inc();
                }
                let bkey = breaker_key(slot, target, k);
                let call = Call {
                    model: &target.model,
                    key: slot.keys.get(k).map(|kc| &kc.secret),
                };
                let limit = slot.timeout.min(remaining);
                let started = Instant::now();
                let span = tracing::info_span!(
                    "upstream",
                    otel.name = format!("{operation} {}", target.model),
                    otel.kind = "client",
                    otel.status_code = tracing::field::Empty,
                    gen_ai.operation.name = operation,
                    gen_ai.provider.name = &*slot.name,
                    gen_ai.request.model = &*target.model,
                    switchyard.attempt = attempts,
                    error.type = tracing::field::Empty,
                );
                let attempt = op(&slot.provider, call).instrument(span.clone());
                let result = match tokio::time::timeout(limit, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(ProviderError::Timeout(limit)),
                };
                let served = Served {
                    provider: slot.name.clone(),
                    model: target.model.clone(),
                    attempts,
                };
                let spent = started.elapsed();
                ctx.spent.upstream(spent);
                let secs = spent.as_secs_f64();
                let err = match result {
                    Ok(v) => {
                        self.metrics.attempt(&slot.name, "ok", secs);
                        self.breakers.success(&bkey);
                        if ti > 0 {
                            self.metrics
                                .fallbacks
                                .get_or_create(&provider_label(&slot.name))
                                .inc();
                        }
                        return Ok((v, served));
                    }
                    Err(e) => e,
                };
                self.metrics.attempt(&slot.name, err.label(), secs);
                span.record("error.type", err.label());
                span.record("otel.status_code", "ERROR");
                // The final failure is logged once, where it is answered (api); attempts are in the metrics.
                tracing::debug!(request_id = %ctx.request_id, provider = %slot.name, model = %target.model, attempt = attempts, error = %err, "upstream attempt failed");
                if err.is_retryable() {
                    self.breakers.failure(&bkey);
                } else {
                    self.breakers.success(&bkey);
                }
                if err.is_key_problem()
                    && let Some(x) = keys.keys.get_mut(k)
                {
                    *x = if matches!(err, ProviderError::Status { status: 429, .. }) {
                        KeyUse::Limited
                    } else {
                        KeyUse::Rejected
                    };
                }
                let other_key = keys.keys.contains(&KeyUse::Open);
                let state = retry::State {
                    retries,
                    max_retries: slot.max_retries,
                    other_key,
                    remaining: ctx.deadline.saturating_duration_since(Instant::now()),
                };
                let action = retry::decide(&err, state, &self.cfg);
                last = Some((err, served));
                match action {
                    retry::Action::Fail => break,
                    retry::Action::NextKey => {}
                    retry::Action::NextTarget => break,
                    retry::Action::Retry(delay) => {
                        retries += 1;
                        // A rate-limited key may be used again after the wait; a rejected one may not.
                        for x in keys.keys.iter_mut().filter(|x| **x == KeyUse::Limited) {
                            *x = KeyUse::Open;
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            if let Some((e, _)) = &last
                && !e.is_retryable()
            {
                break;
            }
        }
        match last {
            Some((error, served)) => Err(RouterError::Upstream { error, served }),
            None if skipped_open => Err(RouterError::Unavailable(plan_name(plan, table))),
            None => Err(RouterError::Deadline { attempts }),
        }
    }

    /// A usable key (weighted among those still open and whose breaker allows traffic).
    fn pick_key(&self, slot: &ProviderSlot, target: &Target, keys: &mut KeyState) -> Option<usize> {
        loop {
            let candidates: Vec<usize> = (0..keys.keys.len())
                .filter(|&i| keys.keys[i] == KeyUse::Open)
                .collect();
            if candidates.is_empty() {
                return None;
            }
            let weights = candidates
                .iter()
                .map(|&i| slot.keys.get(i).map_or(1.0, |k| k.weight));
            let k = candidates[weighted_pick(weights)];
            if self.breakers.allow(&breaker_key(slot, target, k)) {
                return Some(k);
            }
            keys.keys[k] = KeyUse::Broken;
        }
    }
}

impl ChatBackend for Router {
    type Error = RouterError;

    async fn chat(
        &self,
        req: &ChatRequest,
        ctx: &RequestContext,
    ) -> Result<ChatOutcome, RouterError> {
        self.route_chat(req, ctx).await
    }
}

fn breaker_key(slot: &ProviderSlot, target: &Target, key: usize) -> BreakerKey {
    BreakerKey {
        provider: slot.name.clone(),
        model: target.model.clone(),
        key,
    }
}

fn provider_label(name: &str) -> crate::telemetry::metrics::ProviderLabels {
    crate::telemetry::metrics::ProviderLabels {
        provider: name.to_owned(),
    }
}

fn plan_name(plan: &[Target], table: &RouteTable) -> String {
    plan.iter()
        .filter_map(|t| {
            table
                .providers
                .get(t.provider)
                .map(|p| format!("{}/{}", p.name, t.model))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens a stream and waits for its first chunk, so a failure before the first byte can fall back.
async fn first_chunk(
    p: &AnyProvider,
    req: &ChatRequest,
    call: Call<'_>,
    raw: bool,
) -> Result<Opened, ProviderError> {
    let mut rest = p.chat_stream(req, call, raw).await?;
    match rest.next().await {
        Some(Ok(first)) => Ok(Opened { first, rest }),
        Some(Err(e)) => Err(ProviderError::Io(e.message)),
        None => Err(ProviderError::Io(
            "upstream closed the stream before sending anything".into(),
        )),
    }
}

/// A stream whose first chunk has come.
struct Opened {
    first: Box<crate::chat::Chunk>,
    rest: ChatStream,
}

/// What a streamed attempt gives the stages: its first chunk, then the rest, ended with an
/// error when the upstream sends nothing for `idle` while the stream waits for it.
///
/// One stream and one timer for all of it: the layers it replaced (the first chunk chained
/// before the rest, a generator with a timeout per chunk) were each polled for every chunk, and
/// each timeout read the clock and built a timer entry. The clock is read only when a wait
/// begins (the upstream has nothing yet), and the timer is set again only when it fires: if the
/// wait it was set for is over, for the current wait's end; a wait shorter than `idle` never
/// ends the stream, however long the stream is.
struct Watched {
    first: Option<Box<crate::chat::Chunk>>,
    rest: ChatStream,
    idle: Duration,
    /// When the current wait for the upstream began (`None`: not waiting).
    since: Option<tokio::time::Instant>,
    /// Made at the first wait.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
}

impl Watched {
    fn new(opened: Opened, idle: Duration) -> Self {
        Self {
            first: Some(opened.first),
            rest: opened.rest,
            idle,
            since: None,
            timer: None,
            ended: false,
        }
    }
}

impl futures_util::Stream for Watched {
    type Item = crate::chat::StreamItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;
        let this = &mut *self;
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.rest.poll_next_unpin(cx) {
            this.since = None;
            this.ended = item.is_none();
            return Poll::Ready(item);
        }
        let since = *this.since.get_or_insert_with(tokio::time::Instant::now);
        // An idle bound too large to add is as good as none (thirty years).
        let due = since
            .checked_add(this.idle)
            .unwrap_or_else(|| since + Duration::from_secs(30 * 365 * 86_400));
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        // The timer's deadline is never later than this wait's end (waits begin in order). If
        // it fires for an earlier wait, it is set for this one.
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= due {
                this.ended = true;
                return Poll::Ready(Some(Err(StreamError::new(format!(
                    "upstream sent nothing for {}",
                    seconds_or_ms(this.idle)
                )))));
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// `2s`, or `300 ms` for a time that is not whole seconds.
fn seconds_or_ms(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests;
