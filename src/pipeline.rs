//! The request path in one function. Each stage is a module; they meet here through plain data.
//!
//! ```text
//! api parses -> RequestContext (request id, deadline, cache options from headers)
//!   cache.lookup  exact tier, then semantic tier -> hit: replay as JSON or a live-looking stream
//!   router.chat   resolve model -> weighted targets + fallbacks -> attempts (retry, breaker, keys)
//!                 streams: the first chunk is awaited, so a failure before it falls back
//!   settle        token metrics (counted as the stream passes)
//!   cache.capture store the answer once complete (streams teed), in a tracked background task
//! api encodes, sets x-request-id and the x-switchyard-* headers
//! ```
//! Governance, plugins and the MCP tool loop take their places in this function as they are
//! built (see docs/architecture.md).

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use crate::app::AppState;
use crate::cache::{CacheOptions, CacheStatus, Lookup};
use crate::chat::{ChatRequest, ChatResponse, ChatStream};
use crate::error::GatewayError;
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
    req: ChatRequest,
    ctx: &RequestContext,
) -> Result<ChatOutcome, GatewayError> {
    let opts = ctx.cache.clone().map_err(GatewayError::BadRequest)?;
    let (status, pending) = match state.cache.lookup(&req, &opts).await {
        Lookup::Hit(hit) => return Ok(state.cache.hit_outcome(*hit, req.is_stream())),
        Lookup::Miss { status, pending } => (Some(status), pending),
        Lookup::Off => (None, None),
    };
    let outcome = ChatBackend::chat(state.router.as_ref(), &req, ctx).await?;
    let mut outcome = settle(outcome, &state.metrics);
    if let Some(p) = pending {
        outcome = state.cache.capture(outcome, *p);
    }
    outcome.cache = status;
    Ok(outcome)
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
    }
}
