//! What every stage shares about one request, below all of them: the context the edge builds
//! (request id, deadline, per-request cache and MCP options from headers, time spent), the
//! outcome (a complete answer or a stream, who served it, what the cache and the tool loop did),
//! and the [`ChatBackend`] seam. Stages import this module; it imports no stage.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};

use crate::chat::{ChatRequest, ChatResponse, ChatStream};
use crate::config::Secret;
use crate::config::cache::MAX_TTL_SECONDS;

// The request headers the gateway reads, as names made once: a lookup by `&str` parses the name
// again on every request.
const CACHE_THRESHOLD: HeaderName = HeaderName::from_static("x-switchyard-cache-threshold");
const CACHE_FEEDBACK: HeaderName = HeaderName::from_static("x-switchyard-cache-feedback");
const CACHE_TTL: HeaderName = HeaderName::from_static("x-switchyard-cache-ttl");
const MCP_MODE: HeaderName = HeaderName::from_static("x-switchyard-mcp");
const MCP_SERVERS: HeaderName = HeaderName::from_static("x-switchyard-mcp-servers");
const MCP_TOOLS: HeaderName = HeaderName::from_static("x-switchyard-mcp-tools");
const MCP_MAX_ITERATIONS: HeaderName = HeaderName::from_static("x-switchyard-mcp-max-iterations");

/// Per-request data every stage may read.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// `x-request-id` (the client's, or a new UUID).
    pub request_id: String,
    /// When the request must be answered by.
    pub deadline: Instant,
    /// Cache controls from the headers, or what was wrong with them.
    pub cache: Result<CacheOptions, String>,
    /// MCP controls from the headers, or what was wrong with them.
    pub mcp: Result<McpOptions, String>,
    /// Where the request's time went, filled in by the stages (for the log and the overhead metric).
    pub spent: Arc<Spent>,
    /// The key the client sent (`Authorization: Bearer`, `x-api-key`, `api-key`), if any.
    pub credential: Option<Secret>,
    /// Governed requests: which MCP tools the key may run (set by admission).
    pub tool_gate: Option<Arc<dyn ToolGate>>,
    /// Plugins that see the MCP tools the gateway runs (set by the plugin stage).
    pub tool_hooks: Option<Arc<dyn ToolHooks>>,
    /// The ingress answers in OpenAI's JSON (a complete answer, or a stream's chunks), and no
    /// stage is to change it: an OpenAI upstream's answer may then travel as its bytes, read only
    /// for what the stages need ([`ChatBody::Raw`]), and each streamed chunk with its JSON
    /// (`chat::Chunk`). Set by the OpenAI chat ingress; the pipeline clears it when plugins run.
    pub raw_answer: bool,
}

/// A virtual key's own plugin choices: opt-in plugins it adds, and plugins it turns off (a
/// mandatory plugin stays on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPlugins {
    /// Names of `[[plugins]]` to run although they are not on by default.
    pub add: Vec<String>,
    /// Names of `[[plugins]]` not to run (ignored for mandatory ones).
    pub remove: Vec<String>,
}

/// What sees the MCP tools the gateway runs for a request: the plugins' tool hooks.
pub trait ToolHooks: Send + Sync + std::fmt::Debug {
    /// Before a call: may change its JSON-encoded arguments, or refuse it (`Err`: the message the
    /// model gets as the tool's result).
    fn before(&self, tool: &str, arguments: &mut String) -> Result<(), String>;
    /// After: may change the result text.
    fn after(&self, tool: &str, result: &mut String);
}

/// Which MCP tools a governed caller may see and run; each run is counted against its
/// `tool_calls_per_minute`.
pub trait ToolGate: Send + Sync + std::fmt::Debug {
    /// Whether the caller may see (and so be offered) `tool` (`server__tool`).
    fn allows(&self, tool: &str) -> bool;
    /// Checks and counts one call of `tool` about to run; the error says why it may not.
    fn check<'a>(
        &'a self,
        tool: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<(), ToolRefusal>>;
}

/// Why a governed caller may not run a tool now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ToolRefusal {
    /// Outside the key's `mcp_tools` (`tool_not_allowed`).
    #[error("{0} (tool_not_allowed)")]
    NotAllowed(String),
    /// The key's `tool_calls_per_minute` is reached (`rate_limit_exceeded`).
    #[error("{message} (rate_limit_exceeded)")]
    RateLimited {
        /// What was reached.
        message: String,
        /// Seconds until the window resets.
        retry_after: u64,
    },
    /// The counter store cannot be reached (`governance_store_unavailable`).
    #[error("{0}")]
    Unavailable(String),
}

impl ToolRefusal {
    /// The error code, as in the HTTP errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAllowed(_) => "tool_not_allowed",
            Self::RateLimited { .. } => "rate_limit_exceeded",
            Self::Unavailable(_) => "governance_store_unavailable",
        }
    }
}

/// Time a request spent outside the gateway, and the tools it ran; shared by the stages.
#[derive(Debug, Default)]
pub struct Spent {
    upstream_us: AtomicU64,
    tools_us: AtomicU64,
    tools: Mutex<Vec<String>>,
    who: Mutex<Option<Who>>,
    rate: Mutex<Option<RateHeaders>>,
}

/// The `x-ratelimit-*` values of a governed key (its tightest level).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RateHeaders {
    /// (limit, remaining, reset in ms) for requests.
    pub requests: Option<(u64, u64, u64)>,
    /// (limit, remaining, reset in ms) for tokens.
    pub tokens: Option<(u64, u64, u64)>,
}

impl RateHeaders {
    /// Whether the key has a request or token limit to report.
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }
}

/// The virtual key of a governed request, with its team and customer (for the log).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Who {
    /// Key id.
    pub key: String,
    /// Its team.
    pub team: Option<String>,
    /// Its customer.
    pub customer: Option<String>,
}

impl Spent {
    /// Notes whose request this is (also when governance refused it).
    pub fn who(&self, w: Who) {
        if let Ok(mut slot) = self.who.lock() {
            *slot = Some(w);
        }
    }

    /// Notes the key's rate-limit state at admission (for the headers of every answer, errors
    /// included).
    pub fn rate_limits(&self, h: &RateHeaders) {
        if !h.is_empty()
            && let Ok(mut slot) = self.rate.lock()
        {
            *slot = Some(h.clone());
        }
    }

    /// The rate-limit state noted at admission.
    pub fn rate(&self) -> Option<RateHeaders> {
        self.rate.lock().ok().and_then(|r| r.clone())
    }

    /// Whose request this is, when known.
    pub fn whose(&self) -> Option<Who> {
        self.who.lock().ok().and_then(|w| w.clone())
    }

    /// Adds an upstream attempt's time (to the first chunk for streams).
    pub fn upstream(&self, d: Duration) {
        self.upstream_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Adds the wall time of one round of MCP tool calls (parallel calls overlap).
    pub fn tool_round(&self, d: Duration) {
        self.tools_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Notes one MCP tool call the gateway ran.
    pub fn tool(&self, exposed: &str) {
        if let Ok(mut t) = self.tools.lock() {
            t.push(exposed.to_owned());
        }
    }

    /// Upstream time so far.
    pub fn upstream_time(&self) -> Duration {
        Duration::from_micros(self.upstream_us.load(Ordering::Relaxed))
    }

    /// Wall time of tool rounds so far.
    pub fn tool_time(&self) -> Duration {
        Duration::from_micros(self.tools_us.load(Ordering::Relaxed))
    }

    /// The tools run so far, in call order.
    pub fn tools(&self) -> Vec<String> {
        self.tools.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Who served a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// Provider name.
    pub provider: Arc<str>,
    /// Upstream model.
    pub model: Arc<str>,
    /// Upstream attempts made, failed ones included.
    pub attempts: u32,
}

/// A complete answer or a stream of chunks.
pub enum ChatBody {
    /// Non-streaming answer, boxed: the outcome is moved up through every stage (about ten
    /// times a request), and the answer inline made each move copy 600 bytes and more.
    Complete(Box<ChatResponse>),
    /// Non-streaming answer kept as the upstream's OpenAI JSON (only when the context allows it,
    /// `RequestContext::raw_answer`): sent as it came, decoded only by a stage that needs all of
    /// it.
    Raw(Box<crate::chat::RawAnswer>),
    /// Streaming answer; the first chunk has already arrived.
    Stream(ChatStream),
}

/// The answer and who gave it.
pub struct ChatOutcome {
    /// Who served it.
    pub served: Served,
    /// What they said.
    pub body: ChatBody,
    /// What the cache did (`None` when it is off).
    pub cache: Option<CacheStatus>,
    /// What the tool loop did (`None` when no MCP tools were offered).
    pub mcp: Option<Arc<McpReport>>,
    /// A complete `body` already written as OpenAI JSON by a stage that needed it (the cache,
    /// storing the answer), so the OpenAI edge sends these bytes instead of encoding it again.
    /// `None` for streams, and set back to `None` by any stage that may change the answer after
    /// it was written (the plugins' response hooks).
    pub json: Option<bytes::Bytes>,
}

/// Anything that answers a chat request with canonical types: the router today; the MCP tool
/// loop will wrap a backend and be one too.
pub trait ChatBackend: Send + Sync {
    /// What a failed answer says (the router's error for the router).
    type Error;

    /// Answers `req`, streamed or not, and says who served it.
    fn chat(
        &self,
        req: &ChatRequest,
        ctx: &RequestContext,
    ) -> impl std::future::Future<Output = Result<ChatOutcome, Self::Error>> + Send;
}

// === cache options and status ===

/// Per-request cache controls, from headers.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheOptions {
    /// Look the request up (`Cache-Control: no-cache` turns it off).
    pub lookup: bool,
    /// Store the answer (`Cache-Control: no-store` turns it off).
    pub store: bool,
    /// `x-switchyard-cache-threshold`.
    pub threshold: Option<f32>,
    /// `x-switchyard-cache-ttl` (seconds).
    pub ttl: Option<Duration>,
    /// Set by the pipeline: requests that differ in it never share entries (the MCP mode).
    pub partition: String,
    /// `x-switchyard-cache-feedback: wrong[; request-id=ID]`: a cached answer to report (the hit's
    /// request id; `None`: this request's own `x-request-id`).
    pub wrong: Option<Option<String>>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            lookup: true,
            store: true,
            threshold: None,
            ttl: None,
            partition: String::new(),
            wrong: None,
        }
    }
}

/// Parses `x-switchyard-cache-feedback`: `wrong`, or `wrong; request-id=<id>`.
fn parse_feedback(v: &str) -> Result<Option<String>, String> {
    let bad = || {
        format!(
            "x-switchyard-cache-feedback must be `wrong` or `wrong; request-id=<the hit's x-request-id>`, got `{}`",
            v.chars().take(60).collect::<String>()
        )
    };
    let mut parts = v.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|p| p.eq_ignore_ascii_case("wrong"))
    {
        return Err(bad());
    }
    let mut id = None;
    for p in parts.filter(|p| !p.is_empty()) {
        let (k, val) = p.split_once('=').ok_or_else(bad)?;
        let val = val.trim().trim_matches('"');
        if !k.trim().eq_ignore_ascii_case("request-id")
            || val.is_empty()
            || val.len() > 200
            || !val.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(bad());
        }
        id = Some(val.to_owned());
    }
    Ok(id)
}

impl CacheOptions {
    /// Reads `Cache-Control`, `x-switchyard-cache-threshold` and `x-switchyard-cache-ttl`.
    pub fn from_headers(h: &HeaderMap) -> Result<Self, String> {
        let mut o = Self::default();
        for v in h.get_all(axum::http::header::CACHE_CONTROL) {
            let v = v.to_str().unwrap_or_default().to_ascii_lowercase();
            for d in v.split(',').map(str::trim) {
                match d {
                    "no-cache" => o.lookup = false,
                    "no-store" => {
                        o.lookup = false;
                        o.store = false;
                    }
                    _ => {}
                }
            }
        }
        if let Some(v) = h.get(CACHE_THRESHOLD) {
            let s = v.to_str().unwrap_or_default().trim();
            match s.parse::<f32>() {
                Ok(t) if t > 0.0 && t <= 1.0 => o.threshold = Some(t),
                _ => {
                    return Err(format!(
                        "x-switchyard-cache-threshold must be a number in (0, 1], got `{}`",
                        shown(s)
                    ));
                }
            }
        }
        if let Some(v) = h.get(CACHE_FEEDBACK) {
            o.wrong = Some(parse_feedback(v.to_str().unwrap_or_default().trim())?);
        }
        if let Some(v) = h.get(CACHE_TTL) {
            let s = v.to_str().unwrap_or_default().trim();
            match s.parse::<u64>() {
                Ok(t) if t > 0 && t <= MAX_TTL_SECONDS => o.ttl = Some(Duration::from_secs(t)),
                _ => {
                    return Err(format!(
                        "x-switchyard-cache-ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS} (10 years), got `{}`",
                        shown(s)
                    ));
                }
            }
        }
        Ok(o)
    }
}

/// A header value as an error message quotes it: its first 40 characters.
fn shown(s: &str) -> String {
    s.chars().take(40).collect()
}

/// What the response headers say about the cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheStatus {
    /// `x-switchyard-cache`.
    pub outcome: Outcome,
    /// `x-switchyard-cache-similarity` (semantic hits).
    pub similarity: Option<f32>,
    /// Similarity of the best semantic candidate that was not served (misses; for the log).
    pub best_candidate: Option<f32>,
    /// Shadow mode: what would have been served (`x-switchyard-cache-shadow`).
    pub shadow: Option<ShadowStatus>,
}

/// What a lookup in shadow mode would have done.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowStatus {
    /// `hit-exact`, `hit-semantic` or `miss`.
    pub outcome: Outcome,
    /// Similarity of a semantic hit.
    pub similarity: Option<f32>,
}

/// What a lookup came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Same request seen before.
    #[serde(rename = "hit-exact")]
    HitExact,
    /// A similar enough request seen before.
    #[serde(rename = "hit-semantic")]
    HitSemantic,
    /// Looked up, not found (the answer will be stored).
    #[serde(rename = "miss")]
    Miss,
    /// Not looked up and not stored.
    #[serde(rename = "bypass")]
    Bypass,
}

impl Outcome {
    /// Header value and metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::HitExact => "hit-exact",
            Self::HitSemantic => "hit-semantic",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

// === MCP options and report ===

/// `x-switchyard-mcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inject tools, run the model's calls of them, loop.
    Auto,
    /// Inject tools, return calls to the client.
    Inject,
    /// Nothing injected.
    Off,
}

impl Mode {
    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Inject => "inject",
            Self::Off => "off",
        }
    }
}

/// Per-request MCP controls, from headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpOptions {
    /// `x-switchyard-mcp` (default `auto`).
    pub mode: Mode,
    /// `x-switchyard-mcp-servers`: only these servers.
    pub servers: Option<Vec<String>>,
    /// `x-switchyard-mcp-tools`: only these prefixed tools.
    pub tools: Option<Vec<String>>,
    /// `x-switchyard-mcp-max-iterations`: at most this many tool rounds (never more than config).
    pub max_iterations: Option<u32>,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Auto,
            servers: None,
            tools: None,
            max_iterations: None,
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive, RFC 7235).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn list(h: &HeaderMap, name: &HeaderName) -> Result<Option<Vec<String>>, String> {
    let Some(v) = h.get(name) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| format!("{name} must be a comma-separated list of names"))?;
    Ok(Some(
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

impl McpOptions {
    /// Reads the `x-switchyard-mcp*` headers.
    pub fn from_headers(h: &HeaderMap) -> Result<Self, String> {
        let mut o = Self::default();
        if let Some(v) = h.get(MCP_MODE) {
            let s = v.to_str().unwrap_or_default().trim().to_ascii_lowercase();
            o.mode = match s.as_str() {
                "auto" => Mode::Auto,
                "inject" => Mode::Inject,
                "off" => Mode::Off,
                _ => {
                    return Err(format!(
                        "x-switchyard-mcp must be `auto`, `inject` or `off`, got `{s}`"
                    ));
                }
            };
        }
        o.servers = list(h, &MCP_SERVERS)?;
        o.tools = list(h, &MCP_TOOLS)?;
        if let Some(v) = h.get(MCP_MAX_ITERATIONS) {
            let s = v.to_str().unwrap_or_default().trim();
            o.max_iterations = Some(s.parse::<u32>().map_err(|_| {
                format!("x-switchyard-mcp-max-iterations must be a whole number >= 0, got `{s}`")
            })?);
        }
        Ok(o)
    }
}

/// What the tool loop did for one request; read for the response headers and the cache.
#[derive(Debug, Default)]
pub struct McpReport {
    tool_calls: AtomicU32,
    rounds: AtomicU32,
    limited: AtomicBool,
}

impl McpReport {
    /// Tools the gateway ran.
    pub fn tool_calls(&self) -> u32 {
        self.tool_calls.load(Ordering::Relaxed)
    }
    /// Tool rounds (model turns whose gateway calls were run).
    pub fn rounds(&self) -> u32 {
        self.rounds.load(Ordering::Relaxed)
    }
    /// Whether the loop stopped at its iteration bound.
    pub fn limited(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }
    pub(crate) fn add_round(&self, calls: usize) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.tool_calls
            .fetch_add(u32::try_from(calls).unwrap_or(u32::MAX), Ordering::Relaxed);
    }
    pub(crate) fn set_limited(&self) {
        self.limited.store(true, Ordering::Relaxed);
    }
}
