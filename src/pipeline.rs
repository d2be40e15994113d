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

use std::sync::Arc;

use futures_util::StreamExt;
use tracing::Instrument;

use crate::app::AppState;
use crate::cache::Lookup;
use crate::chat::ChatRequest;
use crate::error::GatewayError;
use crate::governance::{Ask, DEFAULT_MAX_OUTPUT_TOKENS, Permit};
use crate::mcp::{Mode, Plan, ToolLoop};
pub use crate::request::{ChatBackend, ChatBody, ChatOutcome, RequestContext, Served, Spent};
use crate::telemetry::metrics::Metrics;

/// Stage 1: the virtual key, its model access, budgets and rate limits. `None`: ungoverned.
/// `tokens` gives (prompt tokens, most output tokens), estimated only for a governed request.
pub async fn admit(
    state: &AppState,
    ctx: &RequestContext,
    model: &str,
    tokens: impl FnOnce() -> (u64, u64),
) -> Result<Option<Permit>, GatewayError> {
    if ctx.credential.is_none() && !state.governance.config().require_virtual_key {
        return Ok(None);
    }
    let ask = || {
        let candidates = state
            .router
            .table()
            .plan(model)
            .map(|plan| plan.into_iter().map(|t| t.model).collect())
            .unwrap_or_default();
        let (prompt_tokens, max_output_tokens) = tokens();
        Ask {
            model,
            candidates,
            prompt_tokens,
            max_output_tokens,
        }
    };
    let credential = ctx.credential.as_ref().map(crate::config::Secret::expose);
    let admitted = state.governance.admit(credential, ask).await;
    if let Ok(Some(p)) = &admitted {
        ctx.spent.rate_limits(&p.headers);
    }
    admitted.map_err(|e| {
        if let Some(w) = state.governance.who(credential) {
            ctx.spent.who(w);
        }
        let e = GatewayError::from(e);
        state
            .metrics
            .gov_rejections
            .get_or_create(&crate::telemetry::metrics::ReasonLabels {
                reason: e.parts().2.to_owned(),
            })
            .inc();
        e
    })
}

/// Prompt tokens of a chat request, estimated high (a byte per 3 of the JSON of its messages and
/// tools): what admission reserves before the provider counts them.
pub fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    let messages = json_len(&req.messages);
    let tools = req.tools.as_ref().map_or(0, json_len);
    ((messages + tools) as u64).div_ceil(3) + 8
}

/// The length of `value` as JSON, counted as it is written (nothing kept); 0 if it cannot be.
fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    serde_json::to_writer(&mut n, value).map_or(0, |()| n.0)
}

/// The most output a chat request may produce: `max_tokens` (or `max_completion_tokens`, or the
/// default worst case) times `n`.
pub fn max_output_tokens(req: &ChatRequest) -> u64 {
    let per = req
        .max_completion_tokens
        .or(req.max_tokens)
        .map_or(DEFAULT_MAX_OUTPUT_TOKENS, u64::from);
    per * u64::from(req.n.unwrap_or(1).max(1))
}

/// Runs a chat request through every stage; the permit (governed requests) is to be settled
/// when the answer ends, and refunds what it reserved if dropped unsettled.
pub async fn chat(
    state: &AppState,
    // Boxed: the request (432 bytes) would otherwise be copied into each future it is handed to.
    mut req: Box<ChatRequest>,
    // Mutable so that admission and the plugins can add what the later stages need (the key's
    // tool gate, the plugins' tool hooks) without a copy of the context.
    ctx: &mut RequestContext,
) -> Result<(ChatOutcome, Option<Permit>), GatewayError> {
    let mut opts = ctx.cache.clone().map_err(GatewayError::BadRequest)?;
    // Bad MCP headers are refused before admission; the options themselves are read below, once
    // the context has its tool gate.
    if let Err(e) = &ctx.mcp {
        return Err(GatewayError::BadRequest(e.clone()));
    }
    let permit = admit(state, ctx, &req.model, || {
        (estimate_prompt_tokens(&req), max_output_tokens(&req))
    })
    .await?;
    // Stage 2: plugins may change, refuse or answer the request.
    // With no plugin configured nothing is built for them.
    let mut plugins = if state.plugins.is_empty() {
        None
    } else {
        state.plugins.begin(
            switchyard_plugin::RequestInfo {
                request_id: ctx.request_id.clone(),
                model: req.model.clone(),
                key: permit.as_ref().map(|p| p.principal.key.clone()),
            },
            permit.as_ref().map(|p| &p.principal.plugins),
        )
    };
    if let Some(run) = plugins.as_mut() {
        // Plugins read and may change the answer: it is decoded.
        ctx.raw_answer = false;
        let asked = req.model.clone();
        if let crate::plugins::Next::Respond(resp) = Box::pin(run.on_request(&mut req)).await? {
            let outcome = plugin_answer(*resp, req.is_stream());
            return Ok((finish(plugins, outcome).await?, permit));
        }
        // A plugin may route the request elsewhere, but only to a model the key may use.
        if req.model != asked
            && let Some(p) = &permit
        {
            state
                .governance
                .check_model(&p.principal.key, &req.model)
                .map_err(GatewayError::from)?;
        }
    }
    // A governed request is offered, and may run, only its key's MCP tools (the plan offers what
    // the gate allows; the tool loop checks each call against it).
    if let Some(p) = &permit
        && state.mcp.has_servers()
    {
        let gate = state.governance.tools_of(&p.principal);
        ctx.tool_gate = Some(gate as Arc<dyn crate::request::ToolGate>);
    }
    // Plugins with tool hooks see the MCP tools the loop runs.
    if let Some(hooks) = plugins.as_ref().and_then(crate::plugins::Run::tool_hooks) {
        ctx.tool_hooks = Some(hooks);
    }
    let ctx = &*ctx;
    let mcp_opts = ctx
        .mcp
        .as_ref()
        .map_err(|e| GatewayError::BadRequest(e.clone()))?;
    // A client continuing after a mixed turn gets the gateway's held rounds back in its history.
    state.mcp.continuations.restore(&mut req.messages);
    let plan = Plan::prepare(&state.mcp, mcp_opts, ctx.tool_gate.as_ref(), &req)
        .map_err(GatewayError::BadRequest)?;
    if let Some(plan) = &plan {
        // The offered tools (by digest) and the mode are part of the cache key; the tools are
        // injected after the lookup, only when the request goes upstream.
        opts.partition = plan.cache_key();
    }
    // Tenants never share cached answers unless `cache_scope` says so.
    if let Some(p) = permit.as_ref().map(|p| &p.principal.cache_partition)
        && !p.is_empty()
    {
        opts.partition.push_str(";tenant=");
        opts.partition.push_str(p);
    }
    let span = tracing::info_span!(
        "cache.lookup",
        switchyard.cache.outcome = tracing::field::Empty,
        switchyard.cache.similarity = tracing::field::Empty,
    );
    // A cached answer reported wrong goes before this request is looked up.
    if let Some(wrong) = &opts.wrong {
        let hit_id = wrong.as_deref().unwrap_or(&ctx.request_id);
        match Box::pin(state.cache.report_wrong(None, Some(hit_id), "header")).await {
            Ok(r) => {
                tracing::info!(request_id = %ctx.request_id, hit = %hit_id, entry = %r.entry_id, "cached answer reported wrong and removed");
            }
            Err(e) => {
                tracing::info!(request_id = %ctx.request_id, hit = %hit_id, error = %e, "cache feedback not applied");
            }
        }
    }
    let lookup = state
        .cache
        .lookup(&req, &opts)
        .instrument(span.clone())
        .await;
    record_lookup(&span, &lookup);
    let (status, mut pending) = match lookup {
        Lookup::Hit(hit) => {
            state.cache.remember_hit(&ctx.request_id, &req.model, &hit);
            let outcome = state.cache.hit_outcome(*hit, req.is_stream());
            return Ok((finish(plugins, outcome).await?, permit));
        }
        Lookup::Miss { status, pending } => (Some(status), pending),
        Lookup::Off => (None, None),
    };
    if let Some(plan) = &plan {
        plan.inject(&mut req);
    }
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
    Ok((finish(plugins, outcome).await?, permit))
}

/// Stage 6: the answer goes back through the plugins that saw the request.
async fn finish(
    plugins: Option<crate::plugins::Run>,
    outcome: ChatOutcome,
) -> Result<ChatOutcome, GatewayError> {
    match plugins {
        // The plugins read and may change the answer: one kept as the upstream's JSON is
        // decoded first.
        Some(run) => {
            let outcome = crate::router::decode_raw(outcome)?;
            Ok(Box::pin(run.wrap(outcome)).await?)
        }
        None => Ok(outcome),
    }
}

/// A plugin's direct answer, as JSON or as a stream that looks live.
fn plugin_answer(resp: crate::chat::ChatResponse, stream: bool) -> ChatOutcome {
    let served = Served {
        provider: Arc::from("plugin"),
        model: Arc::from(resp.model.as_str()),
        attempts: 0,
    };
    let body = if stream {
        ChatBody::Stream(crate::cache::replay::stream(
            crate::cache::replay::chunks(&resp, true),
            std::time::Duration::ZERO,
        ))
    } else {
        ChatBody::Complete(Box::new(resp))
    };
    ChatOutcome {
        served,
        body,
        cache: None,
        mcp: None,
        json: None,
    }
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
        ChatBody::Raw(raw) => {
            if let Some((prompt, completion)) = raw.tokens {
                metrics.usage(&provider, prompt, completion);
            }
            ChatBody::Raw(raw)
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
        json: outcome.json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_len_counts_what_would_be_written() {
        let v = serde_json::json!([
            {"role": "user", "content": "naïve \"quoted\"\nline"},
            {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "é"}]}
        ]);
        let written = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or_default();
        assert!(written > 0);
        assert_eq!(json_len(&v), written);
    }
}
