//! OpenAI-compatible ingress: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Dialect, RequestGuard, context, error_response, read_json, set_headers, sse};
use crate::app::AppState;
use crate::chat::ChatRequest;
use crate::error::GatewayError;
use crate::pipeline::{self};
use tracing::Instrument;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Response {
    // The request taken whole: axum's `HeaderMap` extractor would copy the headers.
    let (parts, body) = request.into_parts();
    let ctx = context(&state, &parts.headers);
    let guard = RequestGuard::new(&state, "chat", &ctx, &parts.headers);
    let span = guard.span();
    // Boxed, once per request: the handler's future stays small, so the layers above it move a
    // pointer, not the request's state (the pipeline's included; docs/performance.md, twelfth
    // slice). tests/it/footprint.rs keeps every chat handler so.
    Box::pin(chat(state, ctx, guard, body))
        .instrument(span)
        .await
}

async fn chat(
    state: AppState,
    mut ctx: crate::pipeline::RequestContext,
    mut guard: RequestGuard,
    body: Body,
) -> Response {
    // Read straight into a box: the request is handed down through several futures.
    let req: Box<ChatRequest> = match read_json(&state, body).await.and_then(validate) {
        Ok(r) => r,
        Err(e) => return fail(&mut guard, &e, &ctx),
    };
    guard.request(&req.model, || serde_json::to_value(&req).ok());
    let wants_usage = req.wants_stream_usage();
    let keep_alive = state.config.server.sse_keep_alive;
    // A complete answer goes back as OpenAI JSON: an OpenAI upstream's may pass as it came.
    ctx.raw_answer = true;
    super::answer_chat(
        &state,
        &mut ctx,
        guard,
        req,
        Dialect::OpenAi,
        super::openai_json,
        |s, guard, mcp| {
            sse::response(
                super::frames(s, guard, mcp, OpenAiFrames { wants_usage }),
                keep_alive,
            )
        },
    )
    .await
}

fn fail(
    guard: &mut RequestGuard,
    e: &GatewayError,
    ctx: &crate::pipeline::RequestContext,
) -> Response {
    guard.error(e.parts().0, e.to_string(), e.served());
    error_response(e, ctx, Dialect::OpenAi)
}

/// Checks what serde cannot: a conversation to answer.
fn validate(req: Box<ChatRequest>) -> Result<Box<ChatRequest>, GatewayError> {
    if req.model.trim().is_empty() {
        return Err(GatewayError::BadRequest("`model` must not be empty".into()));
    }
    if req.messages.is_empty() {
        return Err(GatewayError::BadRequest(
            "`messages` must contain at least one message".into(),
        ));
    }
    Ok(req)
}

/// Canonical chunks -> `data:` frames (the usage chunk only when asked for), `[DONE]` at the end,
/// an error event if the upstream dies.
struct OpenAiFrames {
    wants_usage: bool,
}

impl super::Frames for OpenAiFrames {
    fn chunk(&mut self, mut chunk: crate::chat::ChatChunk, out: &mut Vec<u8>) {
        if !self.wants_usage {
            if chunk.choices.is_empty() {
                return;
            }
            chunk.usage = None;
        }
        if let Err(e) = sse::json_frame_into(out, None, &chunk) {
            out.extend_from_slice(&sse::frame(None, &stream_error(&e.to_string())));
        }
    }

    fn as_is(&mut self, chunk: &crate::chat::Chunk, out: &mut Vec<u8>) -> bool {
        if !self.wants_usage && chunk.choices.is_empty() {
            return true;
        }
        match chunk.json(self.wants_usage) {
            Some(json) => {
                sse::json_line_into(out, json);
                true
            }
            None => false,
        }
    }

    fn failed(&mut self, message: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&sse::frame(None, &stream_error(message)));
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&sse::frame(None, "[DONE]"));
    }
}

fn stream_error(message: &str) -> String {
    json!({"error": {"message": message, "type": "upstream_error", "code": "stream_error", "param": null}}).to_string()
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let ctx = context(&state, &headers);
    let guard = RequestGuard::new(&state, "embeddings", &ctx, &headers);
    let span = guard.span();
    embed(state, ctx, guard, body).instrument(span).await
}

async fn embed(
    state: AppState,
    ctx: crate::pipeline::RequestContext,
    mut guard: RequestGuard,
    body: Body,
) -> Response {
    let body: Value = match read_json(&state, body).await {
        Ok(v) => v,
        Err(e) => return fail(&mut guard, &e, &ctx),
    };
    let model_ok = body
        .get("model")
        .and_then(Value::as_str)
        .is_some_and(|m| !m.is_empty());
    if !model_ok || body.get("input").is_none() {
        let e = GatewayError::BadRequest("embeddings need a string `model` and an `input`".into());
        return fail(&mut guard, &e, &ctx);
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    guard.request(model, || Some(body.clone()));
    let tokens = || {
        let input = body.get("input").map_or(0, |i| i.to_string().len() as u64);
        (input.div_ceil(3) + 8, 0)
    };
    let permit = match pipeline::admit(&state, &ctx, model, tokens).await {
        Ok(p) => p,
        Err(e) => return fail(&mut guard, &e, &ctx),
    };
    let rate = permit.as_ref().map(|p| p.headers.clone());
    guard.permit(permit);
    match state.router.embed(&body, &ctx).await {
        Ok((value, served)) => {
            guard.finish(StatusCode::OK, false);
            guard.outcome(&served, None);
            if let Some(u) = value
                .get("usage")
                .and_then(|u| serde_json::from_value(u.clone()).ok())
            {
                guard.usage(&u);
            }
            let mut resp = Json(value).into_response();
            set_headers(resp.headers_mut(), &ctx, Some(&served));
            super::set_rate_headers(resp.headers_mut(), rate.as_ref());
            resp
        }
        Err(e) => fail(&mut guard, &GatewayError::from(e), &ctx),
    }
}

/// `GET /v1/models`: routes, then each provider's listed models as `provider/model`.
pub async fn models(State(state): State<AppState>) -> Response {
    Json(json!({"object": "list", "data": model_list(&state)})).into_response()
}

/// `GET /v1/models/{id}` (ids may contain `/`).
pub async fn model(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let id = id.trim_start_matches('/');
    match model_list(&state).into_iter().find(|m| m["id"] == id) {
        Some(m) => Json(m).into_response(),
        None => {
            let body = json!({"error": {"message": format!("model `{id}` is not listed (see GET /v1/models)"), "type": "invalid_request_error", "code": "model_not_found", "param": null}});
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

fn model_list(state: &AppState) -> Vec<Value> {
    let table = state.router.table();
    let mut data = Vec::new();
    for r in &table.routes {
        data.push(json!({"id": r.name, "object": "model", "created": 0, "owned_by": "switchyard"}));
    }
    for p in &table.providers {
        for m in &p.models {
            data.push(json!({"id": format!("{}/{m}", p.name), "object": "model", "created": 0, "owned_by": &*p.name}));
        }
    }
    data
}
