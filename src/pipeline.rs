//! The request path in one function. Each stage is a module; they meet here through plain data.
//!
//! ```text
//! api parses -> RequestContext (request id, deadline, cache and MCP options from headers)
//!   mcp           restore held tool rounds; inject the registered servers' tools (server__tool)
//!   cache.lookup  exact tier, then semantic tier -> hit: replay as JSON or a live-looking stream
//!   mcp loop      x-switchyard-mcp: auto -> run gateway tool calls, call the model again (below)
//!   router.chat   resolve model -> weighted targets + fallbacks -> attempts (retry, breaker, keys)
//!                 streams: the first chunk is awaited, so a failure before it falls back
//!   settle        token metrics (counted as the stream passes)
//!   cache.capture store the answer once complete (streams teed), in a tracked background task
//! api encodes, sets x-request-id and the x-switchyard-* headers
//! ```
//! Governance and plugins take their places in this function as they are built
//! (see docs/architecture.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tracing::Instrument;

use crate::app::AppState;
use crate::cache::{CacheOptions, CacheStatus, Lookup};
use crate::chat::{ChatRequest, ChatResponse, ChatStream};
use crate::error::GatewayError;
use crate::mcp::{McpOptions, McpReport, Mode, Plan, ToolLoop};
use crate::router::RouterError;
use crate::telemetry::metrics::Metrics;

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
}

/// Time a request spent outside the gateway, and the tools it ran; shared by the stages.
#[derive(Debug, Default)]
pub struct Spent {
    upstream_us: AtomicU64,
    tools_us: AtomicU64,
    tools: Mutex<Vec<String>>,
}

impl Spent {
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
// Moved a handful of times per request; boxing the response would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum ChatBody {
    /// Non-streaming answer.
    Complete(ChatResponse),
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
}

/// Anything that answers a chat request with canonical types: the router today; the MCP tool
/// loop will wrap a backend and be one too.
pub trait ChatBackend: Send + Sync {
    /// Answers `req`, streamed or not, and says who served it.
    fn chat(
        &self,
        req: &ChatRequest,
        ctx: &RequestContext,
    ) -> impl std::future::Future<Output = Result<ChatOutcome, RouterError>> + Send;
}

/// Runs a chat request through every stage.
pub async fn chat(
    state: &AppState,
    mut req: ChatRequest,
    ctx: &RequestContext,
) -> Result<ChatOutcome, GatewayError> {
    let mut opts = ctx.cache.clone().map_err(GatewayError::BadRequest)?;
    let mcp_opts = ctx.mcp.clone().map_err(GatewayError::BadRequest)?;
    // A client continuing after a mixed turn gets the gateway's held rounds back in its history.
    state.mcp.continuations.restore(&mut req.messages);
    let plan = Plan::prepare(&state.mcp, &mcp_opts, &req).map_err(GatewayError::BadRequest)?;
    if let Some(plan) = &plan {
        // Injected before the lookup: the offered tools and the mode are part of the cache key.
        plan.inject(&mut req);
        opts.partition = format!("mcp={}", plan.mode.as_str());
    }
    let span = tracing::info_span!(
        "cache.lookup",
        switchyard.cache.outcome = tracing::field::Empty,
        switchyard.cache.similarity = tracing::field::Empty,
    );
    let lookup = state
        .cache
        .lookup(&req, &opts)
        .instrument(span.clone())
        .await;
    record_lookup(&span, &lookup);
    let (status, mut pending) = match lookup {
        Lookup::Hit(hit) => return Ok(state.cache.hit_outcome(*hit, req.is_stream())),
        Lookup::Miss { status, pending } => (Some(status), pending),
        Lookup::Off => (None, None),
    };
    let report = plan.as_ref().map(|p| p.report.clone());
    if let (Some(p), Some(r)) = (pending.as_mut(), &report)
        && !state.config.cache.cache_tool_answers
    {
        // Tool results go stale: an answer built on them is not stored.
        let r = r.clone();
        p.skip_if(Arc::new(move || r.tool_calls() > 0));
    }
    let outcome = match plan {
        Some(plan) if plan.mode == Mode::Auto && req.n.is_none_or(|n| n <= 1) => {
            let tool_loop = ToolLoop {
                backend: state.router.clone(),
                hub: state.mcp.clone(),
                plan,
            };
            tool_loop.run(req, ctx).await?
        }
        _ => ChatBackend::chat(state.router.as_ref(), &req, ctx).await?,
    };
    let mut outcome = settle(outcome, &state.metrics);
    if let Some(p) = pending {
        outcome = state.cache.capture(outcome, *p);
    }
    outcome.cache = status;
    outcome.mcp = report;
    Ok(outcome)
}

/// Puts the cache's outcome on its trace span.
fn record_lookup(span: &tracing::Span, lookup: &Lookup) {
    let (outcome, sim) = match lookup {
        Lookup::Hit(h) => (h.status.outcome.label(), h.status.similarity),
        Lookup::Miss { status, .. } => (status.outcome.label(), status.best_candidate),
        Lookup::Off => ("off", None),
    };
    span.record("switchyard.cache.outcome", outcome);
    if let Some(s) = sim {
        span.record("switchyard.cache.similarity", f64::from(s));
    }
}

/// Counts tokens: now for a complete answer, as the usage chunk passes for a stream.
fn settle(outcome: ChatOutcome, metrics: &Arc<Metrics>) -> ChatOutcome {
    let provider = outcome.served.provider.clone();
    let body = match outcome.body {
        ChatBody::Complete(resp) => {
            if let Some(u) = &resp.usage {
                metrics.usage(&provider, u.prompt_tokens, u.completion_tokens);
            }
            ChatBody::Complete(resp)
        }
        ChatBody::Stream(stream) => {
            let metrics = metrics.clone();
            ChatBody::Stream(Box::pin(stream.inspect(move |item| {
                if let Ok(chunk) = item
                    && let Some(u) = &chunk.usage
                {
                    metrics.usage(&provider, u.prompt_tokens, u.completion_tokens);
                }
            })))
        }
    };
    ChatOutcome {
        served: outcome.served,
        body,
        cache: outcome.cache,
        mcp: outcome.mcp,
    }
}
