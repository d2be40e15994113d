//! Gemini-shaped ingress for the Google GenAI SDK (`base_url` at `http://HOST/genai`):
//! `POST /genai/v1beta/models/{model}:generateContent` and `:streamGenerateContent` (also under
//! `/genai/v1/`), any provider behind it. The model may be a route or `provider/model`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tracing::Instrument;

use super::{Dialect, RequestGuard, context, error_response, read_json, sse};
use crate::app::AppState;
use crate::chat::ChatStream;
use crate::error::GatewayError;
use crate::pipeline::RequestContext;
use crate::providers::gemini::ingress::{self, StreamEncoder};
use crate::providers::gemini::wire::GenerateRequest;

/// Google's status name for an HTTP status.
fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// An error as Google's APIs answer it; the gateway's own code (`budget_exceeded`, ...) is the
/// `reason` of an `ErrorInfo` detail.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> Value {
    json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "status": status_name(status),
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code, "domain": "switchyard"}],
    }})
}

/// `POST /genai/{v1beta|v1}/models/{model}:{generateContent|streamGenerateContent}`.
pub async fn generate(
    State(state): State<AppState>,
    Path(call): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = context(&state, &headers);
    let guard = RequestGuard::new(&state, "genai", &ctx, &headers);
    let span = guard.span();
    let sse = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"));
    // Boxed, as the OpenAI handler's.
    Box::pin(generate_inner(state, ctx, guard, call, sse, body))
        .instrument(span)
        .await
}

async fn generate_inner(
    state: AppState,
    mut ctx: RequestContext,
    mut guard: RequestGuard,
    call: String,
    sse_wanted: bool,
    body: Body,
) -> Response {
    let fail = |guard: &mut RequestGuard, e: GatewayError| {
        guard.error(e.parts().0, e.to_string(), e.served());
        error_response(&e, &ctx, Dialect::Google)
    };
    let Some((model, action)) = call.rsplit_once(':') else {
        let e = GatewayError::NotFound(format!(
            "`models/{call}` names no method: use models/MODEL:generateContent or :streamGenerateContent"
        ));
        return fail(&mut guard, e);
    };
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        other => {
            let e = GatewayError::NotFound(format!(
                "method `{other}` is not served by this gateway (generateContent, streamGenerateContent)"
            ));
            return fail(&mut guard, e);
        }
    };
    let model = model.trim_start_matches("models/").to_owned();
    let wire: GenerateRequest = match read_json(&state, body).await {
        Ok(r) => r,
        Err(e) => return fail(&mut guard, e),
    };
    guard.request(&model, || serde_json::to_value(&wire).ok());
    let req = match ingress::from_generate_request(wire, &model, stream) {
        Ok(r) => r,
        Err(e) => return fail(&mut guard, GatewayError::BadRequest(e.0)),
    };
    let keep_alive = state.config.server.sse_keep_alive;
    let stream = move |s, guard, mcp| {
        if sse_wanted {
            sse::response(
                super::frames(s, guard, mcp, GeminiFrames::default()),
                keep_alive,
            )
        } else {
            json_array(s, guard)
        }
    };
    super::answer_chat(
        &state,
        &mut ctx,
        guard,
        Box::new(req),
        Dialect::Google,
        |r, _| Json(ingress::to_generate_response(r)).into_response(),
        stream,
    )
    .await
}

/// Without `alt=sse` Gemini streams one JSON array of responses.
fn json_array(s: ChatStream, guard: RequestGuard) -> Response {
    let batches = super::frames(s, guard, None, GeminiFrames::default());
    let body = async_stream::stream! {
        let mut first = true;
        let mut batches = std::pin::pin!(batches);
        yield Ok::<_, std::io::Error>(Bytes::from_static(b"["));
        while let Some(b) = batches.next().await {
            // A body frame holds whole events, each one `data:` line and a blank line.
            let text = String::from_utf8_lossy(&b);
            let mut out = String::new();
            for e in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
                out.push_str(if first { "" } else { ",\r\n" });
                first = false;
                out.push_str(e.trim_end());
            }
            if !out.is_empty() {
                yield Ok(Bytes::from(out));
            }
        }
        yield Ok(Bytes::from_static(b"]"));
    };
    let mut resp = Response::new(Body::from_stream(body));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Canonical chunks -> Gemini events (`data:` frames); an error object if the upstream dies.
#[derive(Default)]
struct GeminiFrames(StreamEncoder);

fn data(ev: &crate::providers::gemini::wire::GenerateResponse, out: &mut Vec<u8>) {
    if sse::json_frame_into(out, None, ev).is_err() {
        out.extend_from_slice(&sse::frame(None, ""));
    }
}

impl super::Frames for GeminiFrames {
    fn chunk(&mut self, chunk: crate::chat::ChatChunk, out: &mut Vec<u8>) {
        for ev in self.0.push(chunk) {
            data(&ev, out);
        }
    }

    fn failed(&mut self, message: &str, out: &mut Vec<u8>) {
        let body = error_body(StatusCode::BAD_GATEWAY, "stream_error", message);
        out.extend_from_slice(&sse::frame(None, &body.to_string()));
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        data(&self.0.finish(), out);
    }
}
