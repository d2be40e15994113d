//! `RequestGuard`: follows one client request from arrival to its last byte, then records it:
//! metrics (requests, latency, overhead, time to first token, cost) and one request log record.
//! Streams move the guard into the body, so it records when the stream ends or the client leaves.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use tracing::Span;

use crate::app::AppState;
use crate::cache::CacheStatus;
use crate::chat::{ChatChunk, ChatResponse, StreamCollector, Usage};
use crate::governance::Permit;
use crate::request::{RequestContext, Served, Spent};
use crate::telemetry::otel;
use crate::telemetry::requestlog::LogRecord;

/// The trace operation of an endpoint (GenAI `gen_ai.operation.name`).
fn operation(endpoint: &str) -> &'static str {
    if endpoint == "embeddings" {
        "embeddings"
    } else {
        "chat"
    }
}

/// Tracks a request; records it when dropped.
pub struct RequestGuard {
    state: AppState,
    endpoint: &'static str,
    started: Instant,
    spent: Arc<Spent>,
    stream: bool,
    status: u16,
    first_chunk: Option<Instant>,
    rec: Box<LogRecord>,
    collector: Option<StreamCollector>,
    span: Span,
    /// Governed requests: settled with the cost when the request ends.
    permit: Option<Permit>,
    /// Characters of text and tool arguments streamed to the client (to estimate the output of a
    /// stream cut before its usage chunk).
    streamed_chars: usize,
}

impl RequestGuard {
    /// Starts tracking a request, with its trace span (continuing the caller's `traceparent`).
    pub fn new(
        state: &AppState,
        endpoint: &'static str,
        ctx: &RequestContext,
        headers: &HeaderMap,
    ) -> Self {
        state.metrics.in_flight.inc();
        let span = otel::request_span(operation(endpoint), &ctx.request_id, headers);
        let at_ms = crate::chat::unix_now_ms();
        Self {
            state: state.clone(),
            endpoint,
            started: Instant::now(),
            spent: ctx.spent.clone(),
            stream: false,
            status: 200,
            first_chunk: None,
            rec: Box::new(LogRecord {
                at_ms,
                request_id: ctx.request_id.clone(),
                endpoint: endpoint.to_owned(),
                ..LogRecord::default()
            }),
            collector: None,
            span,
            permit: None,
            streamed_chars: 0,
        }
    }

    /// The request's trace span (streams are polled inside it).
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// Whether bodies are to be kept (`[logs] log_bodies`).
    pub fn log_bodies(&self) -> bool {
        self.state.log.log_bodies()
    }

    /// Notes what was asked for; `body` is kept only with `log_bodies`.
    pub fn request(&mut self, model: &str, body: impl FnOnce() -> Option<serde_json::Value>) {
        model.clone_into(&mut self.rec.model);
        self.span.record("gen_ai.request.model", model);
        otel::rename(&self.span, format!("{} {model}", operation(self.endpoint)));
        if self.log_bodies() {
            self.rec.request_body = body();
        }
    }

    /// Takes the permit of a governed request (settled when the request ends) and notes who it is.
    pub fn permit(&mut self, permit: Option<Permit>) {
        if let Some(p) = &permit {
            self.rec.key = Some(p.principal.key.clone());
            self.rec.team.clone_from(&p.principal.team);
            self.rec.customer.clone_from(&p.principal.customer);
        }
        self.permit = permit;
    }

    /// Records the final status.
    pub fn finish(&mut self, status: StatusCode, stream: bool) {
        self.status = status.as_u16();
        self.stream = stream;
    }

    /// Records an error answer (its message is what the client saw: already free of secrets).
    pub fn error(&mut self, status: StatusCode, message: String, served: Option<&Served>) {
        self.finish(status, false);
        self.rec.error = Some(message);
        if let Some(s) = served {
            self.served(s);
        }
    }

    /// Notes who served the request and what the cache did.
    pub fn outcome(&mut self, served: &Served, cache: Option<&CacheStatus>) {
        self.served(served);
        if let Some(c) = cache {
            self.rec.cache = Some(c.outcome.label().to_owned());
            self.rec.similarity = c.similarity.or(c.best_candidate);
        }
    }

    fn served(&mut self, s: &Served) {
        s.provider.as_ref().clone_into(&mut self.rec.provider);
        s.model.as_ref().clone_into(&mut self.rec.served_model);
        self.rec.attempts = s.attempts;
    }

    /// Notes a complete answer.
    pub fn response(&mut self, resp: &ChatResponse) {
        if let Some(u) = &resp.usage {
            self.usage(u);
        }
        if self.log_bodies() {
            self.rec.response_body = serde_json::to_value(resp).ok();
        }
    }

    /// [`Self::response`] for an answer kept as the upstream's JSON.
    pub fn raw_response(&mut self, raw: &crate::chat::RawAnswer) {
        if let Some((prompt, completion)) = raw.tokens {
            self.tokens(prompt, completion);
        }
        if self.log_bodies() {
            self.rec.response_body = serde_json::from_slice(&raw.bytes).ok();
        }
    }

    /// Notes a streamed chunk on its way to the client.
    pub fn chunk(&mut self, chunk: &ChatChunk) {
        if self.first_chunk.is_none() {
            self.first_chunk = Some(Instant::now());
        }
        if let Some(u) = &chunk.usage {
            self.usage(u);
        }
        if self.permit.is_some() {
            for c in &chunk.choices {
                self.streamed_chars += c.delta.content.as_ref().map_or(0, String::len);
                for t in c.delta.tool_calls.iter().flatten() {
                    let f = t.function.as_ref();
                    self.streamed_chars +=
                        f.and_then(|f| f.arguments.as_ref()).map_or(0, String::len);
                }
            }
        }
        if self.log_bodies() {
            self.collector
                .get_or_insert_with(StreamCollector::default)
                .push(chunk);
        }
    }

    /// Notes token usage (streams of a tool loop carry one usage chunk, summed across rounds).
    pub fn usage(&mut self, u: &Usage) {
        self.tokens(u.prompt_tokens, u.completion_tokens);
    }

    fn tokens(&mut self, prompt: u64, completion: u64) {
        self.rec.input_tokens = prompt;
        self.rec.output_tokens = completion;
    }

    /// Notes that a stream broke after its first byte.
    pub fn stream_failed(&mut self, message: &str) {
        self.rec.error = Some(message.to_owned());
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let metrics = &self.state.metrics;
        metrics.in_flight.dec();
        let elapsed = self.started.elapsed();
        let secs = elapsed.as_secs_f64();
        metrics.request(self.endpoint, self.status, self.stream, secs);
        let upstream = self.spent.upstream_time();
        let tools = self.spent.tool_time();
        let ttft = self
            .first_chunk
            .map(|t| t.duration_since(self.started).as_secs_f64());
        let mut rec = std::mem::take(&mut self.rec);
        rec.mcp_tools = self.spent.tools();
        if rec.key.is_none()
            && let Some(w) = self.spent.whose()
        {
            rec.key = Some(w.key);
            rec.team = w.team;
            rec.customer = w.customer;
        }
        // Overhead: the whole request for JSON answers; up to the first chunk for streams (what
        // follows is the upstream's pace). Tool-loop streams interleave both, so they are left out.
        let overhead = match (self.stream, ttft) {
            (false, _) => Some(secs - upstream.as_secs_f64() - tools.as_secs_f64()),
            (true, Some(t)) if rec.mcp_tools.is_empty() => Some(t - upstream.as_secs_f64()),
            _ => None,
        };
        if (200..300).contains(&self.status) {
            metrics.timing(self.endpoint, overhead, ttft);
        }
        let hit = rec.cache.as_deref().is_some_and(|c| c.starts_with("hit"));
        let prices = &self.state.prices;
        let usd = prices.estimate(&rec.served_model, rec.input_tokens, rec.output_tokens);
        if hit {
            rec.saved_usd = usd;
            metrics.cache_saved_usd.inc_by(usd);
        } else {
            rec.cost_usd = usd;
            metrics.spend(&rec.provider, usd);
        }
        if let Some(p) = self.permit.take() {
            // Cache hits cost nothing; everything else is charged what the usage says, streams
            // cut short included (the usage seen before the cut).
            let (cost, tokens) = if hit {
                (0.0, 0)
            } else if rec.input_tokens.saturating_add(rec.output_tokens) == 0
                && self.streamed_chars > 0
            {
                // A stream cut before its usage chunk: charge an estimate of what was used (the
                // prompt as estimated at admission, a token per 3 bytes streamed).
                let out = (self.streamed_chars as u64).div_ceil(3);
                let est = prices.estimate(&rec.served_model, p.prompt_tokens, out);
                rec.cost_usd = est;
                (est, p.prompt_tokens.saturating_add(out))
            } else {
                (usd, rec.input_tokens.saturating_add(rec.output_tokens))
            };
            p.settle(cost, tokens);
        }
        rec.status = self.status;
        rec.stream = self.stream;
        rec.latency_ms = secs * 1000.0;
        rec.ttft_ms = ttft.map(|t| t * 1000.0);
        rec.upstream_ms = upstream.as_secs_f64() * 1000.0;
        rec.tools_ms = tools.as_secs_f64() * 1000.0;
        if let Some(c) = self.collector.take() {
            rec.response_body = serde_json::to_value(c.finish()).ok();
        }
        tracing::debug!(
            endpoint = self.endpoint,
            status = self.status,
            stream = self.stream,
            ms = rec.latency_ms,
            "request finished"
        );
        self.record_span(&rec);
        if self.state.plugins.wants_complete()
            && let Ok(v) = serde_json::to_value(&*rec)
        {
            self.state
                .plugins
                .complete(&self.state.tasks, &rec.model, v);
        }
        self.state.log.record(*rec);
    }
}

impl RequestGuard {
    /// Fills in the request span's attributes (GenAI semantic conventions where they apply).
    fn record_span(&self, rec: &LogRecord) {
        let s = &self.span;
        s.record("http.response.status_code", rec.status);
        if !rec.provider.is_empty() {
            s.record("gen_ai.provider.name", rec.provider.as_str());
            s.record("gen_ai.response.model", rec.served_model.as_str());
        }
        s.record("gen_ai.usage.input_tokens", rec.input_tokens);
        s.record("gen_ai.usage.output_tokens", rec.output_tokens);
        s.record("switchyard.attempts", rec.attempts);
        if let Some(c) = &rec.cache {
            s.record("switchyard.cache", c.as_str());
        }
        if !rec.mcp_tools.is_empty() {
            s.record("switchyard.mcp.tool_calls", rec.mcp_tools.len());
        }
        if rec.status >= 400 {
            s.record("error.type", rec.status.to_string().as_str());
        } else if rec.error.is_some() {
            // Answered 200, then the stream broke after its first byte.
            s.record("error.type", "stream_error");
        }
        if rec.status >= 500 || rec.error.is_some() && rec.status < 400 {
            s.record("otel.status_code", "ERROR");
        }
    }
}
