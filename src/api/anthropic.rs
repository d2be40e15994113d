//! Anthropic-compatible ingress: `POST /anthropic/v1/messages`, any provider behind it.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Dialect, RequestGuard, context, error_response, read_json, sse};
use crate::app::AppState;
use crate::chat::StreamOptions;
use crate::error::GatewayError;
use crate::providers::anthropic::translate::{self, StreamEncoder};
use crate::providers::anthropic::wire::{MessagesRequest, StreamEvent};
use tracing::Instrument;

/// `POST /anthropic/v1/messages`.
pub async fn messages(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    // Taken whole, as the OpenAI handler's request.
    let (parts, body) = request.into_parts();
    let ctx = context(&state, &parts.headers);
    let guard = RequestGuard::new(&state, "messages", &ctx, &parts.headers);
    let span = guard.span();
    // Boxed, as the OpenAI handler's.
    Box::pin(messages_inner(state, ctx, guard, body))
        .instrument(span)
        .await
}

async fn messages_inner(
    state: AppState,
    mut ctx: crate::pipeline::RequestContext,
    mut guard: RequestGuard,
    body: Body,
) -> Response {
    let fail = |guard: &mut RequestGuard, e: GatewayError| {
        guard.error(e.parts().0, e.to_string(), e.served());
        error_response(&e, &ctx, Dialect::Anthropic)
    };
    let wire: MessagesRequest = match read_json(&state, body).await {
        Ok(r) => r,
        Err(e) => return fail(&mut guard, e),
    };
    if wire.messages.is_empty() {
        return fail(
            &mut guard,
            GatewayError::BadRequest("`messages` must contain at least one message".into()),
        );
    }
    guard.request(&wire.model, || serde_json::to_value(&wire).ok());
    let mut req = match translate::from_messages_request(wire) {
        Ok(r) => r,
        Err(e) => return fail(&mut guard, GatewayError::BadRequest(e.0)),
    };
    if req.is_stream() {
        // Anthropic streams report usage in message_delta; ask every upstream for it.
        req.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            ..StreamOptions::default()
        });
    }
    let keep_alive = state.config.server.sse_keep_alive;
    super::answer_chat(
        &state,
        &mut ctx,
        guard,
        Box::new(req),
        Dialect::Anthropic,
        |r, _| Json(translate::to_messages_response(r)).into_response(),
        |s, guard, mcp| {
            sse::response(
                super::frames(s, guard, mcp, AnthropicFrames::default()),
                keep_alive,
            )
        },
    )
    .await
}

fn frame(ev: &StreamEvent, out: &mut Vec<u8>) {
    let value = serde_json::to_value(ev).unwrap_or_default();
    let name = value
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("error");
    sse::value_frame_into(out, name, &value);
}

/// Canonical chunks -> Anthropic events; an `error` event if the upstream dies mid-stream.
#[derive(Default)]
struct AnthropicFrames {
    enc: StreamEncoder,
    id: String,
    model: String,
}

impl super::Frames for AnthropicFrames {
    fn chunk(&mut self, chunk: crate::chat::ChatChunk, out: &mut Vec<u8>) {
        if self.id.is_empty() {
            self.id = chunk.id.clone();
            self.model = chunk.model.clone();
        }
        for ev in self.enc.push(chunk) {
            frame(&ev, out);
        }
    }

    fn failed(&mut self, message: &str, out: &mut Vec<u8>) {
        let body = json!({"type": "error", "error": {"type": "api_error", "message": message}});
        out.extend_from_slice(&sse::frame(Some("error"), &body.to_string()));
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        for ev in self.enc.finish(&self.id, &self.model) {
            frame(&ev, out);
        }
    }
}
