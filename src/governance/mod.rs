//! Governance: virtual keys, the customer -> team -> key hierarchy, budgets that hold under
//! concurrency, rate limits, per-key model access.
//!
//! `admit(credential, request) -> Permit` checks the key and reserves a worst-case estimate in
//! every bucket above it at once (budgets in USD, requests, tokens, concurrency); the
//! [`Permit`] settles with the actual cost when the answer ends, or refunds when it is dropped
//! unsettled (an error, a client that left).

pub mod counters;
pub mod directory;
pub mod glob;
pub mod period;
pub mod redis;
pub mod views;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::Digest;

use crate::config::governance::GovernanceConfig;
use crate::store::Store;
use crate::telemetry::prices::Prices;
use counters::{AnyCounters, Charge, Counters, Kind, Refusal, Snapshot};
pub use directory::{Directory, EntityKind};

/// The prefix of generated virtual keys.
pub const KEY_PREFIX: &str = "sk-sy-";

/// Output tokens assumed for a request without `max_tokens` (the worst case reserved).
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// Why a request or an admin call was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GovernanceError {
    /// Missing, unknown or expired key (401 `invalid_api_key`).
    #[error("{0}")]
    InvalidKey(String),
    /// The key is disabled (403 `key_disabled`).
    #[error("{0}")]
    KeyDisabled(String),
    /// The model or route is outside the key's list (403 `model_not_allowed`).
    #[error("{0}")]
    ModelNotAllowed(String),
    /// The MCP tool is outside the key's list (403 `tool_not_allowed`).
    #[error("{0}")]
    ToolNotAllowed(String),
    /// A budget cannot pay (402 `budget_exceeded`).
    #[error("{0}")]
    BudgetExceeded(String),
    /// A rate limit is reached (429 `rate_limit_exceeded`).
    #[error("{message}")]
    RateLimited {
        /// What was reached and when it resets.
        message: String,
        /// Seconds until it resets.
        retry_after: u64,
        /// The key's limits, for the `x-ratelimit-*` headers.
        headers: RateHeaders,
    },
    /// A model without a price under a USD budget (400 `model_unpriced`).
    #[error("{0}")]
    Unpriced(String),
    /// Bad admin input (400).
    #[error("{0}")]
    Invalid(String),
    /// An admin change that conflicts (409).
    #[error("{0}")]
    Conflict(String),
    /// No such entity (404).
    #[error("{0}")]
    NotFound(String),
    /// The store failed (500).
    #[error("the governance store failed: {0}")]
    Store(String),
    /// Redis cannot be reached and `fail_closed` is set (503 `governance_store_unavailable`).
    #[error("{0}")]
    StoreUnavailable(String),
}

pub use crate::request::{RateHeaders, ToolRefusal};

/// Who a governed request is.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Key id.
    pub key: String,
    /// Its team.
    pub team: Option<String>,
    /// Its customer (the team's, or the key's own).
    pub customer: Option<String>,
    /// Allowed MCP tools (globs); `None`: none.
    pub mcp_tools: Option<Vec<String>>,
    /// The cache partition its answers share (`cache_scope`).
    pub cache_partition: String,
    /// Plugins the key adds, and those it turns off (mandatory ones stay on).
    pub plugins: crate::request::KeyPlugins,
    /// Its `tool_calls_per_minute`.
    tool_limit: Option<Charge>,
    /// Its MCP tool gate, made when first asked for (`Governance::tools_of`).
    tools: std::sync::OnceLock<Arc<ToolPermit>>,
}

impl Principal {
    /// Whether the key may see and run an MCP tool (`server__tool`).
    pub fn tool_allowed(&self, tool: &str) -> bool {
        self.mcp_tools
            .as_deref()
            .is_some_and(|g| glob::any(g, tool))
    }
}

/// What admission needs to know about a request.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// The model or route asked for.
    pub model: &'a str,
    /// Upstream models it may be served by (for the worst-case price).
    pub candidates: Vec<std::sync::Arc<str>>,
    /// Prompt tokens (estimated).
    pub prompt_tokens: u64,
    /// `max_tokens` or the default worst case.
    pub max_output_tokens: u64,
}

/// An admitted request's reservations; settle it with what the answer cost.
pub struct Permit {
    counters: AnyCounters,
    charges: Vec<Charge>,
    lease: Arc<str>,
    settled: bool,
    /// Who it is (shared by the key's requests until the directory changes).
    pub principal: Arc<Principal>,
    /// The key's rate-limit headers after this request.
    pub headers: RateHeaders,
    /// The prompt tokens estimated at admission (charged for a stream cut before its usage).
    pub prompt_tokens: u64,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.principal.key)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// Replaces the reservations with the actual cost and tokens.
    pub fn settle(mut self, usd: f64, tokens: u64) {
        self.settled = true;
        let charges = std::mem::take(&mut self.charges);
        self.counters
            .settle(charges, &self.lease, usd, tokens as f64);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            let charges = std::mem::take(&mut self.charges);
            self.counters.settle(charges, &self.lease, 0.0, 0.0);
        }
    }
}

/// A governed caller's MCP tools: its globs, and its `tool_calls_per_minute`.
pub struct ToolPermit {
    counters: AnyCounters,
    key: String,
    globs: Option<Vec<String>>,
    limit: Option<Charge>,
}

impl std::fmt::Debug for ToolPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolPermit")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl crate::request::ToolGate for ToolPermit {
    fn allows(&self, tool: &str) -> bool {
        self.globs.as_deref().is_some_and(|g| glob::any(g, tool))
    }

    fn check<'a>(
        &'a self,
        tool: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), ToolRefusal>> {
        Box::pin(async move {
            if !self.allows(tool) {
                return Err(ToolRefusal::NotAllowed(format!(
                    "the virtual key `{}` may not run the MCP tool `{tool}`",
                    self.key
                )));
            }
            let Some(c) = &self.limit else { return Ok(()) };
            match self.counters.reserve(std::slice::from_ref(c), "").await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(r)) => {
                    let wait = r
                        .resets_at_ms
                        .map_or(1, |e| (e - Utc::now().timestamp_millis()).max(0) / 1000 + 1);
                    Err(ToolRefusal::RateLimited {
                        message: format!(
                            "the virtual key `{}` reached its limit of {} tool calls per minute; retry after {wait}s",
                            self.key, c.limit
                        ),
                        retry_after: u64::try_from(wait).unwrap_or(1),
                    })
                }
                Err(e) => Err(ToolRefusal::Unavailable(format!(
                    "the governance store cannot be reached, so the tool call is not run: {e}"
                ))),
            }
        })
    }
}

/// Governance state: the directory of keys and their owners, and the counters.
pub struct Governance {
    config: GovernanceConfig,
    dir: Arc<directory::Handle>,
    counters: AnyCounters,
    prices: Arc<Prices>,
    /// Redis was unreachable and `fail_closed` is off: admissions let through unchecked.
    pub fail_open_admits: std::sync::atomic::AtomicU64,
}

/// SHA-256 of a secret, hex: what the store keeps.
pub fn hash_secret(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = sha2::Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

impl Governance {
    /// Loads the config's entities and the store's, and the counters; with Redis, connects and
    /// starts the background work (embedded: the counter flush; Redis: the entity version poll).
    pub async fn start(
        config: GovernanceConfig,
        store: Option<Store>,
        pg: Option<Arc<crate::store::postgres::Postgres>>,
        prices: Arc<Prices>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<Arc<Self>, GovernanceError> {
        let (counters, persist) = match (&config.store, &config.redis_url) {
            (crate::config::governance::GovStore::Redis, Some(url)) => {
                let (r, conn) =
                    redis::RedisCounters::connect(url, config.reservation_ttl, tasks.clone())
                        .await
                        .map_err(|e| {
                            GovernanceError::StoreUnavailable(format!(
                                "cannot reach the governance store at {}: {}",
                                redis::safe_url(url),
                                crate::providers::redact::scrub(&e.to_string())
                            ))
                        })?;
                (
                    AnyCounters::Redis(Arc::new(r)),
                    directory::Persist::Redis(conn),
                )
            }
            _ => {
                let c = Counters::open(store.clone());
                tasks.spawn(c.clone().flush_loop(shutdown.clone()));
                (AnyCounters::Embedded(c), directory::Persist::Sled(store))
            }
        };
        // With a fleet's Postgres, the definitions live there whatever holds the counters.
        let persist = match pg {
            Some(pg) => directory::Persist::Postgres(pg),
            None => persist,
        };
        let dir = Arc::new(directory::Handle::open(&config, persist).await?);
        if dir.on_postgres()
            && !dir.load().keys.is_empty()
            && matches!(counters, AnyCounters::Embedded(_))
        {
            tracing::warn!(
                "virtual keys are shared through postgres but their budgets and rate limits are counted by each instance alone: set [governance] store = \"redis\" and redis_url to hold them across the fleet"
            );
        }
        // Postgres: the application's watcher refreshes on every notification and poll.
        if dir.shared() && !dir.on_postgres() {
            tasks.spawn(dir.clone().poll(shutdown.clone()));
        }
        Ok(Arc::new(Self {
            config,
            dir,
            counters,
            prices,
            fail_open_admits: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The config.
    pub fn config(&self) -> &GovernanceConfig {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> &AnyCounters {
        &self.counters
    }

    /// The directory handle (admin API).
    pub fn directory(&self) -> &directory::Handle {
        &self.dir
    }

    /// Checks that key `key` may use `model` (a model a plugin rewrote the request to after
    /// admission); an unknown key may use nothing.
    pub fn check_model(&self, key: &str, model: &str) -> Result<(), GovernanceError> {
        let dir = self.dir.load();
        match dir.keys.get(key) {
            Some(k) if model_allowed(&k.spec, model) => Ok(()),
            _ => Err(GovernanceError::ModelNotAllowed(format!(
                "the virtual key `{key}` may not use the model `{model}` (a plugin rewrote the request to it)"
            ))),
        }
    }

    /// The MCP tool gate of an admitted request's key (made once per key and directory).
    pub fn tools_of(&self, p: &Principal) -> Arc<ToolPermit> {
        p.tools
            .get_or_init(|| {
                Arc::new(ToolPermit {
                    counters: self.counters.clone(),
                    key: p.key.clone(),
                    globs: p.mcp_tools.clone(),
                    limit: p.tool_limit.clone(),
                })
            })
            .clone()
    }

    /// The MCP tool gate of a key (by id), for `/mcp`.
    pub fn tool_permit(&self, key: &str) -> Option<Arc<ToolPermit>> {
        let dir = self.dir.load();
        Some(self.tools_of(dir.principals.get(key)?))
    }

    /// The key, team and customer a credential names, whatever admission said (for the log).
    pub fn who(&self, credential: Option<&str>) -> Option<crate::request::Who> {
        let dir = self.dir.load();
        let (id, _) = dir.by_hash.get(&hash_secret(credential?.trim()))?;
        let p = dir.principals.get(id)?;
        Some(crate::request::Who {
            key: p.key.clone(),
            team: p.team.clone(),
            customer: p.customer.clone(),
        })
    }

    /// The key id of a credential for `/mcp` (no model, no budget): `Ok(None)` ungoverned.
    pub fn identify_caller(
        &self,
        credential: Option<&str>,
    ) -> Result<Option<String>, GovernanceError> {
        let dir = self.dir.load();
        let k = identify(
            &dir,
            self.config.require_virtual_key,
            credential,
            Utc::now(),
        )?;
        Ok(k.map(|k| k.spec.id.clone()))
    }

    /// Whether any key exists (governance can apply).
    pub fn has_keys(&self) -> bool {
        !self.dir.load().keys.is_empty()
    }

    /// Checks the credential and reserves the request's worst case. `Ok(None)`: ungoverned (no
    /// key and none required).
    /// `ask` is called only for a governed request (the estimates cost a little).
    pub async fn admit<'a>(
        &self,
        credential: Option<&str>,
        ask: impl FnOnce() -> Ask<'a>,
    ) -> Result<Option<Permit>, GovernanceError> {
        let now = Utc::now();
        let dir = self.dir.load_full();
        let Some(k) = identify(&dir, self.config.require_virtual_key, credential, now)? else {
            return Ok(None);
        };
        // Looked up before anything is reserved (the index holds every key of its directory).
        let Some(principal) = dir.principals.get(&k.spec.id).cloned() else {
            return Err(GovernanceError::InvalidKey("unknown virtual key".into()));
        };
        let ask = &ask();
        if !model_allowed(&k.spec, ask.model) {
            return Err(GovernanceError::ModelNotAllowed(format!(
                "the virtual key `{}` may not use the model `{}`",
                k.spec.id, ask.model
            )));
        }
        let worst = self.worst_case(ask);
        let chain = dir.chain(k);
        let has_budget = chain.iter().any(|e| !e.budgets.is_empty());
        let worst_usd = match worst {
            Some(usd) => usd,
            None if has_budget && !self.config.allow_unpriced => {
                return Err(GovernanceError::Unpriced(format!(
                    "the model `{}` has no price, so a USD budget cannot be checked: add it to [prices], or set [governance] unpriced_models = \"allow\"",
                    ask.model
                )));
            }
            None => 0.0,
        };
        let tokens = (ask.prompt_tokens + ask.max_output_tokens) as f64;
        let mut charges = Vec::new();
        for e in &chain {
            e.charges(worst_usd, tokens, &mut charges);
        }
        k.level.model_charges(ask.model, tokens, &mut charges);
        let lease = self.counters.new_lease();
        let snaps = match self.counters.reserve(&charges, &lease).await {
            Ok(Ok(s)) => s,
            Ok(Err(r)) => return Err(refusal(&charges, &r, &chain, worst_usd, ask, now)),
            Err(e) if self.config.fail_closed => {
                return Err(GovernanceError::StoreUnavailable(format!(
                    "the governance store cannot be reached, so budgets and limits cannot be checked ({e}); retry shortly"
                )));
            }
            Err(e) => {
                let n = self
                    .fail_open_admits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::warn!(error = %e, "governance store unreachable: admitting without budget and limit checks ([governance] fail_closed = false)");
                }
                charges.clear();
                Vec::new()
            }
        };
        let headers = rate_headers(&charges, &snaps, now);
        Ok(Some(Permit {
            counters: self.counters.clone(),
            charges,
            lease,
            settled: false,
            principal,
            headers,
            prompt_tokens: ask.prompt_tokens,
        }))
    }

    /// The most the request can cost over its candidate models; `None` when one has no price.
    fn worst_case(&self, ask: &Ask<'_>) -> Option<f64> {
        // An unknown model reaches no provider (the router answers 404): it costs nothing.
        let mut worst: f64 = 0.0;
        for m in &ask.candidates {
            let price = self.prices.price(m)?;
            worst = worst.max(crate::telemetry::prices::usd(
                price,
                ask.prompt_tokens,
                ask.max_output_tokens,
            ));
        }
        Some(worst)
    }
}

/// The key a credential names, `None` for an ungoverned request.
fn identify<'d>(
    dir: &'d Directory,
    require: bool,
    credential: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<&'d directory::KeyEntry>, GovernanceError> {
    let Some(token) = credential.map(str::trim).filter(|t| !t.is_empty()) else {
        if require {
            return Err(GovernanceError::InvalidKey(
                "a virtual key is required: send `Authorization: Bearer sk-sy-...` (or `x-api-key`, `api-key`)".into(),
            ));
        }
        return Ok(None);
    };
    let found = dir.by_hash.get(&hash_secret(token));
    let Some((id, valid_until)) = found else {
        if require || token.starts_with(KEY_PREFIX) {
            return Err(GovernanceError::InvalidKey(
                "the virtual key is not valid (unknown, deleted or rotated out)".into(),
            ));
        }
        return Ok(None);
    };
    if valid_until.is_some_and(|t| now.timestamp_millis() >= t) {
        return Err(GovernanceError::InvalidKey(
            "this secret of the virtual key was rotated and its grace period is over".into(),
        ));
    }
    let Some(k) = dir.keys.get(id) else {
        return Err(GovernanceError::InvalidKey("unknown virtual key".into()));
    };
    if k.expires_ms.is_some_and(|t| now.timestamp_millis() >= t) {
        return Err(GovernanceError::InvalidKey(format!(
            "the virtual key `{}` expired at {}",
            k.spec.id,
            k.spec.expires_at.as_deref().unwrap_or_default()
        )));
    }
    if !k.spec.active {
        return Err(GovernanceError::KeyDisabled(format!(
            "the virtual key `{}` is disabled",
            k.spec.id
        )));
    }
    Ok(Some(k))
}

fn model_allowed(k: &crate::config::governance::KeySpec, model: &str) -> bool {
    let allowed = k.models.as_deref().is_none_or(|g| glob::any(g, model));
    allowed && !glob::any(&k.deny_models, model)
}

/// The `x-ratelimit-*` values: the tightest request and token limits over the levels.
fn rate_headers(charges: &[Charge], snaps: &[Snapshot], now: DateTime<Utc>) -> RateHeaders {
    let mut h = RateHeaders::default();
    let now_ms = now.timestamp_millis();
    for (c, s) in charges.iter().zip(snaps) {
        let slot = match c.kind {
            Kind::Requests => &mut h.requests,
            Kind::Tokens => &mut h.tokens,
            _ => continue,
        };
        let limit = c.limit as u64;
        let remaining = (c.limit - s.used - s.reserved).max(0.0) as u64;
        let reset = s
            .resets_at_ms
            .map_or(0, |e| u64::try_from(e - now_ms).unwrap_or(0));
        if slot.is_none_or(|(_, r, _)| remaining < r) {
            *slot = Some((limit, remaining, reset));
        }
    }
    h
}

/// The error for a refused reservation, naming the level and when it resets.
fn refusal(
    charges: &[Charge],
    r: &Refusal,
    chain: &[&directory::Level],
    worst_usd: f64,
    ask: &Ask<'_>,
    now: DateTime<Utc>,
) -> GovernanceError {
    let Some(c) = charges.get(r.index) else {
        return GovernanceError::Store("refusal without a bucket".into());
    };
    let level = chain
        .iter()
        .find(|l| c.bucket.starts_with(&l.prefix))
        .map_or_else(|| c.bucket.to_string(), |l| l.name.clone());
    let resets = match r.resets_at_ms {
        Some(ms) => DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(String::new, |t| {
            format!(
                "resets at {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }),
        None => "never resets".into(),
    };
    let wait_ms = r
        .resets_at_ms
        .map_or(0, |e| e - now.timestamp_millis())
        .max(0);
    match c.kind {
        Kind::Budget => {
            let left = (c.limit - r.used).max(0.0);
            if worst_usd > left {
                GovernanceError::BudgetExceeded(format!(
                    "the {level} budget of ${:.4} has ${left:.4} left, less than this request's worst case of ${worst_usd:.4} ({} prompt tokens + {} output tokens); lower `max_tokens` or wait: it {resets}",
                    c.limit, ask.prompt_tokens, ask.max_output_tokens
                ))
            } else {
                GovernanceError::BudgetExceeded(format!(
                    "the {level} budget of ${:.4} is spent or reserved by requests in flight (${:.4} spent, ${:.4} reserved); it {resets}",
                    c.limit, r.used, r.reserved
                ))
            }
        }
        kind => {
            let what = match kind {
                Kind::Requests => "requests per minute",
                Kind::Tokens => "tokens per minute",
                Kind::Concurrent => "concurrent requests",
                _ => "tool calls per minute",
            };
            let mut headers = RateHeaders::default();
            let limit = c.limit as u64;
            let remaining = (c.limit - r.used - r.reserved).max(0.0) as u64;
            let reset = u64::try_from(wait_ms).unwrap_or(0);
            match kind {
                Kind::Requests => headers.requests = Some((limit, remaining, reset)),
                Kind::Tokens => headers.tokens = Some((limit, remaining, reset)),
                _ => {}
            }
            let retry_after = if kind == Kind::Concurrent {
                1
            } else {
                (wait_ms as u64).div_ceil(1000).max(1)
            };
            let scope = c
                .bucket
                .split_once(":model:")
                .and_then(|(_, rest)| rest.rsplit_once(':'))
                .map(|(glob, _)| format!(" for models `{glob}`"))
                .unwrap_or_default();
            GovernanceError::RateLimited {
                message: format!(
                    "the {level} limit of {limit} {what}{scope} is reached; retry after {retry_after}s"
                ),
                retry_after,
                headers,
            }
        }
    }
}

/// OpenAI's duration format for `x-ratelimit-reset-*`: `1s`, `6m0s`, `1h2m3s`, `250ms`.
pub fn openai_duration(ms: u64) -> String {
    // Written digit by digit: `format!` costs several times more, on every governed answer.
    let mut out = String::with_capacity(16);
    let mut put = |n: u64, unit: &str| {
        out.push_str(itoa::Buffer::new().format(n));
        out.push_str(unit);
    };
    if ms < 1000 {
        put(ms, "ms");
        return out;
    }
    let secs = ms.div_ceil(1000);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        put(h, "h");
    }
    if h > 0 || m > 0 {
        put(m, "m");
    }
    put(s, "s");
    out
}

/// The credential a request carries: `Authorization: Bearer` (any case), `x-api-key`, `api-key`,
/// `x-goog-api-key` (the Google GenAI SDK's).
pub fn credential(headers: &axum::http::HeaderMap) -> Option<String> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::request::bearer);
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(openai_duration(250), "250ms");
        assert_eq!(openai_duration(1000), "1s");
        assert_eq!(openai_duration(360_000), "6m0s");
        assert_eq!(openai_duration(3_723_000), "1h2m3s");
        assert_eq!(openai_duration(3_600_000), "1h0m0s");
        assert_eq!(openai_duration(59_001), "1m0s");
    }
}
