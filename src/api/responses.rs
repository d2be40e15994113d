//! OpenAI Responses API ingress: `POST /v1/responses` (stream or not, any provider behind it),
//! `GET` and `DELETE /v1/responses/{id}`. Requests become canonical chat requests, so routing,
//! fallbacks, the cache, the MCP tool loop and governance work as for chat completions; answers
//! are kept (`store`, default true) per tenant for `previous_response_id`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tracing::Instrument;

use super::{Dialect, RequestGuard, context, error_response, json_error, read_json, sse};
use crate::app::AppState;
use crate::chat::Message;
use crate::error::GatewayError;
use crate::pipeline::RequestContext;
use crate::providers::openai::responses::{self, Echo, ResponsesRequest};
use crate::providers::openai::responses_stream::{Event, StreamEncoder};
use crate::store::responses::{ResponseStore, ResponsesError, StoredResponse};

/// `POST /v1/responses`.
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let ctx = context(&state, &headers);
    let guard = RequestGuard::new(&state, "responses", &ctx, &headers);
    let span = guard.span();
    // Boxed, as the OpenAI handler's.
    Box::pin(create_inner(state, ctx, guard, headers, body))
        .instrument(span)
        .await
}

/// Who may read a stored response: the caller's virtual key id, or `""` when ungoverned.
fn tenant(state: &AppState, headers: &HeaderMap) -> Result<String, GatewayError> {
    let cred = crate::governance::credential(headers);
    Ok(state
        .governance
        .identify_caller(cred.as_deref())?
        .unwrap_or_default())
}

/// What is kept once the answer is complete.
struct Keep {
    store: Arc<ResponseStore>,
    tenant: String,
    previous: Option<String>,
    input: Vec<Message>,
}

impl Keep {
    /// The write; the answer's last bytes go out once it is done, so a client that continues
    /// the conversation (through any instance of a fleet) finds this turn.
    fn save(
        self,
        id: &str,
        output: Option<Message>,
        response: Value,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        let rec = StoredResponse {
            tenant: self.tenant,
            expires_at_ms: self.store.expiry(crate::chat::unix_now_ms()),
            previous: self.previous,
            input: self.input,
            output,
            response,
        };
        let id = id.to_owned();
        let store = self.store;
        Box::pin(async move {
            if let Err(e) = store.put(&id, &rec).await {
                tracing::warn!(error = %e, response_id = %id, "cannot store the response; previous_response_id to it will not be found");
            }
        })
    }
}

/// `body` as JSON once `write` is done (at once when it already is: the embedded store).
fn after(mut write: futures_util::future::BoxFuture<'static, ()>, body: &Value) -> Response {
    if futures_util::FutureExt::now_or_never(&mut write).is_some() {
        return Json(body).into_response();
    }
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let once = futures_util::stream::once(async move {
        write.await;
        Ok::<_, std::convert::Infallible>(bytes)
    });
    let mut r = axum::body::Body::from_stream(once).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn create_inner(
    state: AppState,
    mut ctx: RequestContext,
    mut guard: RequestGuard,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let fail = |guard: &mut RequestGuard, e: GatewayError| {
        guard.error(e.parts().0, e.to_string(), e.served());
        error_response(&e, &ctx, Dialect::OpenAi)
    };
    let wire: ResponsesRequest = match read_json(&state, body).await {
        Ok(r) => r,
        Err(e) => return fail(&mut guard, e),
    };
    guard.request(&wire.model, || serde_json::to_value(&wire).ok());
    let tenant = match tenant(&state, &headers) {
        Ok(t) => t,
        Err(e) => return fail(&mut guard, e),
    };
    let history = match &wire.previous_response_id {
        None => Vec::new(),
        Some(id) => match state.responses.conversation(id, &tenant).await {
            Ok(h) => h,
            Err(e) => return fail(&mut guard, previous_error(e)),
        },
    };
    let (req, input) = match responses::to_chat(&wire, history) {
        Ok(r) => r,
        Err(e) => return fail(&mut guard, GatewayError::BadRequest(e.0)),
    };
    let echo = Echo::new(&wire);
    let keep = (wire.wants_store() && state.responses.available()).then(|| Keep {
        store: state.responses.clone(),
        tenant,
        previous: wire.previous_response_id.clone(),
        input,
    });
    let keep_alive = state.config.server.sse_keep_alive;
    // Only one of the two encoders runs; each takes what is to be kept.
    let keep = std::sync::Mutex::new(keep);
    let take = || keep.lock().ok().and_then(|mut k| k.take());
    let complete = |r: crate::chat::ChatResponse, _| {
        let body = echo.response(&r.model, &responses::outcome(&r));
        match take() {
            Some(k) => after(
                k.save(echo.id(), responses::assistant_turn(&r), body.clone()),
                &body,
            ),
            None => Json(body).into_response(),
        }
    };
    let stream = |s, guard, mcp| {
        let frames = ResponsesFrames {
            enc: StreamEncoder::new(echo.clone()),
            model: String::new(),
            keep: take(),
            echo: echo.clone(),
            write: None,
        };
        sse::response(super::frames(s, guard, mcp, frames), keep_alive)
    };
    super::answer_chat(
        &state,
        &mut ctx,
        guard,
        Box::new(req),
        Dialect::OpenAi,
        complete,
        stream,
    )
    .await
}

/// An unknown, expired or foreign `previous_response_id`: 400 as OpenAI answers it.
fn previous_error(e: ResponsesError) -> GatewayError {
    match e {
        ResponsesError::NotFound(_) => GatewayError::Http {
            status: StatusCode::BAD_REQUEST,
            code: "previous_response_not_found",
            message: e.to_string(),
        },
        ResponsesError::Store(s) => {
            GatewayError::Unavailable(format!("the stored conversation cannot be read: {s}"))
        }
    }
}

fn frame((kind, body): &Event, out: &mut Vec<u8>) {
    sse::value_frame_into(out, kind, body);
}

/// Canonical chunks -> Responses events; `response.failed` if the upstream dies mid-stream. The
/// complete response is stored at the end (a failed one is not).
struct ResponsesFrames {
    enc: StreamEncoder,
    model: String,
    keep: Option<Keep>,
    echo: Echo,
    /// The store's write, awaited before the last events go out.
    write: Option<futures_util::future::BoxFuture<'static, ()>>,
}

impl super::Frames for ResponsesFrames {
    fn chunk(&mut self, chunk: crate::chat::ChatChunk, out: &mut Vec<u8>) {
        if self.model.is_empty() {
            self.model = chunk.model.clone();
        }
        for ev in self.enc.push(chunk) {
            frame(&ev, out);
        }
    }

    fn failed(&mut self, message: &str, out: &mut Vec<u8>) {
        for ev in self.enc.fail(&self.model, message) {
            frame(&ev, out);
        }
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        let (events, response) = self.enc.finish(&self.model);
        if let Some(k) = self.keep.take() {
            self.write = Some(k.save(self.echo.id(), Some(self.enc.assistant_turn()), response));
        }
        for ev in &events {
            frame(ev, out);
        }
    }

    fn written(&mut self) -> Option<futures_util::future::BoxFuture<'static, ()>> {
        self.write.take()
    }
}

/// The stored response `id` if the caller may read it.
async fn stored(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Option<StoredResponse>, GatewayError> {
    let t = tenant(state, headers)?;
    state
        .responses
        .get(id, &t)
        .await
        .map_err(|e| GatewayError::Unavailable(e.to_string()))
}

/// `GET /v1/responses/{id}`: a stored response of the caller's.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let found = stored(&state, &headers, &id).await;
    match found {
        Ok(Some(rec)) => Json(rec.response).into_response(),
        Ok(None) => json_error(not_found(&id)),
        Err(e) => json_error(e),
    }
}

/// `?order=&limit=` of `GET /v1/responses/{id}/input_items`.
#[derive(Debug, serde::Deserialize)]
pub struct ItemsQuery {
    order: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/responses/{id}/input_items`: the items the response was given (this turn's input),
/// newest first unless `order=asc`; `limit` 1..100 (default 20).
pub async fn input_items(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<axum::extract::Query<ItemsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match super::query(q) {
        Ok(q) => q,
        Err(e) => return json_error(e),
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return json_error(GatewayError::BadRequest(
            "`limit` must be from 1 to 100".into(),
        ));
    }
    let desc = match q.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(_) => {
            return json_error(GatewayError::BadRequest(
                "`order` must be asc or desc".into(),
            ));
        }
    };
    let found = stored(&state, &headers, &id).await;
    let rec = match found {
        Ok(Some(rec)) => rec,
        Ok(None) => return json_error(not_found(&id)),
        Err(e) => return json_error(e),
    };
    let mut items = responses::input_items(&id, &rec.input);
    if desc {
        items.reverse();
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    let first = items.first().and_then(|i| i.get("id")).cloned();
    let last = items.last().and_then(|i| i.get("id")).cloned();
    Json(json!({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": has_more}))
        .into_response()
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let removed = match tenant(&state, &headers) {
        Ok(t) => state
            .responses
            .delete(&id, &t)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string())),
        Err(e) => Err(e),
    };
    match removed {
        Ok(true) => Json(json!({"id": id, "object": "response", "deleted": true})).into_response(),
        Ok(false) => json_error(not_found(&id)),
        Err(e) => json_error(e),
    }
}

fn not_found(id: &str) -> GatewayError {
    let id: String = id.chars().take(200).collect();
    GatewayError::NotFound(format!("Response with id '{id}' not found."))
}
