//! HTTP edge: parse, call the pipeline, encode (JSON or SSE), set the response headers.

pub mod admin;
pub mod anthropic;
mod body;
pub mod cache;
pub mod config;
pub mod genai;
pub mod governance;
mod guard;
pub mod listener;
pub mod logs;
pub mod mcp;
pub mod mcp_rpc;
pub mod openai;
pub mod origin;
pub mod responses;
mod sse;
pub mod ui;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::GatewayError;
use crate::request::{RequestContext, Served};

pub use guard::RequestGuard;

/// `x-request-id`.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const PROVIDER: HeaderName = HeaderName::from_static("x-switchyard-provider");
const MODEL: HeaderName = HeaderName::from_static("x-switchyard-model");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
const CACHE: HeaderName = HeaderName::from_static("x-switchyard-cache");
const CACHE_SIMILARITY: HeaderName = HeaderName::from_static("x-switchyard-cache-similarity");
const MCP_TOOL_CALLS: HeaderName = HeaderName::from_static("x-switchyard-mcp-tool-calls");
const MCP_ROUNDS: HeaderName = HeaderName::from_static("x-switchyard-mcp-iterations");
const MCP_LIMITED: HeaderName = HeaderName::from_static("x-switchyard-mcp-stopped");
/// OpenAI's rate-limit headers (limit, remaining, reset), built at compile time: a name made
/// from a `&str` per response is parsed and checked each time.
const RATE_REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const RATE_TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// All routes of the gateway.
pub fn routes(state: AppState) -> Router {
    // The OpenAI routes under each of their prefixes, each path in full: a nested router would
    // rewrite every request's URI (an allocation and a copy) to strip its prefix.
    let mut router = Router::new();
    for prefix in ["/v1", "/openai/v1", "/openai"] {
        let at = |path: &str| format!("{prefix}{path}");
        router = router
            .route(&at("/chat/completions"), post(openai::chat_completions))
            .route(&at("/embeddings"), post(openai::embeddings))
            .route(&at("/responses"), post(responses::create))
            .route(
                &at("/responses/{id}"),
                get(responses::get).delete(responses::delete),
            )
            .route(
                &at("/responses/{id}/input_items"),
                get(responses::input_items),
            )
            .route(&at("/models"), get(openai::models))
            .route(&at("/models/{*id}"), get(openai::model));
    }
    router
        .route("/anthropic/v1/messages", post(anthropic::messages))
        .route("/genai/v1beta/models/{*call}", post(genai::generate))
        .route("/genai/v1/models/{*call}", post(genai::generate))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .nest("/api", admin::routes(state.clone()))
        .merge(ui::routes())
        .merge(
            Router::new()
                .route_service(
                    "/mcp",
                    crate::mcp::server::service(
                        state.mcp.clone(),
                        &state.shutdown,
                        mcp_gatekeeper(&state),
                    ),
                )
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    origin::protect_mcp,
                ))
                .layer(axum::middleware::from_fn_with_state(
                    mcp_rpc::RpcEdge::new(state.config.server.max_body_bytes),
                    mcp_rpc::edge,
                )),
        )
        .fallback(not_found)
        .with_state(state)
}

/// The gateway's HTTP service: every route, each error answer made JSON in its ingress's shape
/// ([`json_errors`]), and a handler that panics answered with a 500. Both wrap the router once,
/// around it: a layer added with `Router::layer` wraps each route apart, and costs every request
/// a boxed copy of the route's service and a boxed future.
#[derive(Clone)]
pub struct Gateway {
    routes: Router,
}

impl Gateway {
    /// The gateway's routes over `state`.
    pub fn new(state: AppState) -> Self {
        Self {
            routes: routes(state),
        }
    }

    /// Answers one request.
    pub async fn answer(self, req: axum::extract::Request) -> Response {
        use futures_util::FutureExt as _;
        use tower::ServiceExt as _;
        let path = req.uri().path();
        // `/mcp` answers errors in JSON-RPC's shape itself.
        let shape = (path != "/mcp" && !path.starts_with("/mcp/"))
            .then(|| (Dialect::of(path), req.method().clone(), req.uri().clone()));
        let routed = std::panic::AssertUnwindSafe(self.routes.oneshot(req))
            .catch_unwind()
            .await;
        let resp = match routed {
            Ok(Ok(resp)) => resp,
            Ok(Err(never)) => match never {},
            Err(_) => return panicked(),
        };
        match shape {
            Some((dialect, method, uri)) => json_errors(resp, dialect, &method, &uri).await,
            None => resp,
        }
    }
}

/// The answer to a request whose handler panicked (the panic's message, printed by the panic
/// hook, stays in the log).
fn panicked() -> Response {
    tracing::error!("a request handler panicked");
    let body = serde_json::json!({"error": {"message": "internal error", "type": "server_error", "code": "internal_error", "param": null}});
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

/// `/mcp` callers with a virtual key see and run only that key's tools.
fn mcp_gatekeeper(state: &AppState) -> crate::mcp::server::Gatekeeper {
    let state = state.clone();
    std::sync::Arc::new(move |headers: &HeaderMap| {
        caller_tool_gate(&state, headers).map_err(|e| e.to_string())
    })
}

/// The MCP tools a caller may see and run: `Ok(None)` for an ungoverned caller or the admin
/// (admin token) without a virtual key. The admin token travels in `Authorization`, so an admin
/// acting as a key sends the key in `x-api-key` (or `api-key`).
pub(crate) fn caller_tool_gate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<std::sync::Arc<dyn crate::request::ToolGate>>, crate::governance::GovernanceError>
{
    let admin = state.config.server.admin_token.is_some() && admin::token_ok(state, headers);
    let cred = if admin {
        let mut others = headers.clone();
        others.remove(axum::http::header::AUTHORIZATION);
        crate::governance::credential(&others)
    } else {
        crate::governance::credential(headers)
    };
    // No key: the caller is the admin, or ungoverned (`/mcp` refuses keyless callers in front
    // of this when keys are required).
    let Some(cred) = cred else { return Ok(None) };
    let gov = &state.governance;
    Ok(gov
        .identify_caller(Some(&cred))?
        .and_then(|key| gov.tool_permit(&key))
        .map(|g| g as std::sync::Arc<dyn crate::request::ToolGate>))
}

/// Every error answer is JSON in its ingress's shape: axum's own rejections (wrong method, a
/// path or query that does not decode, ...) arrive here as plain text and leave as the
/// OpenAI-shaped body (Anthropic-shaped under `/anthropic`). `/mcp` has its own (JSON-RPC).
async fn json_errors(
    resp: Response,
    dialect: Dialect,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
) -> Response {
    let status = resp.status();
    if status.as_u16() < 400
        || resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = plain_text(body).await;
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        // axum adds `Allow` outside this layer; the response still carries it.
        let path: String = uri.path().chars().take(200).collect();
        format!("method {method} is not allowed on {path} (see the Allow header)")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let err = GatewayError::Http {
        status,
        code: http_code(status),
        message,
    };
    let mut out = dialect_body(&err, dialect);
    for name in [axum::http::header::ALLOW, axum::http::header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

/// The text of a plain-text error answer (axum's and rmcp's are short), trimmed.
pub(crate) async fn plain_text(body: Body) -> String {
    axum::body::to_bytes(body, 8 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default()
}

/// `error.code` for an HTTP status answered by axum itself.
fn http_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        411 => "length_required",
        413 => "request_too_large",
        415 => "unsupported_media_type",
        431 => "headers_too_large",
        s if s >= 500 => "internal_error",
        _ => "invalid_request",
    }
}

/// The body (and status) of an error in an ingress's shape, not logged.
fn dialect_body(err: &GatewayError, dialect: Dialect) -> Response {
    let (status, _, code) = err.parts();
    if dialect == Dialect::Google {
        return (
            status,
            axum::Json(genai::error_body(status, code, &err.to_string())),
        )
            .into_response();
    }
    let mut body = err.body();
    if dialect == Dialect::Anthropic
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("type".into(), serde_json::json!("error"));
    }
    (status, axum::Json(body)).into_response()
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// The backing services and whether each answers now: reported, not gating (chat keeps working
/// on the configuration in service while the shared state is down).
pub async fn backing(state: &AppState) -> serde_json::Value {
    let state_up = match &state.pg {
        Some(pg) => serde_json::json!({"backend": "postgres", "up": pg.ping().await}),
        None => serde_json::json!({"backend": "embedded", "up": state.store.is_some()}),
    };
    let (counters, counters_up) = state.governance.counters().health().await;
    serde_json::json!({"state": state_up, "counters": {"backend": counters, "up": counters_up}})
}

/// Ready once the cache's store and embedding model have finished loading (a part that failed to
/// load is reported in `cache`, and the gateway serves without it).
async fn ready(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let providers = state.router.table().providers.len();
    let (ready, cache) = state.cache.readiness();
    let status = if ready { "ready" } else { "loading" };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": status,
        "providers": providers,
        "cache": cache,
        "backing": backing(&state).await,
    });
    (code, axum::Json(body)).into_response()
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    state.refresh_gauges().await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let dialect = Dialect::of(path);
    let message = format!(
        "no route for {}",
        path.chars().take(200).collect::<String>()
    );
    dialect_body(&GatewayError::NotFound(message), dialect)
}

/// Starts a request: its id (the client's `x-request-id` when sane) and deadline.
pub fn context(state: &AppState, headers: &HeaderMap) -> RequestContext {
    let request_id = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_owned);
    RequestContext {
        request_id,
        deadline: Instant::now() + state.config.server.request_timeout,
        cache: crate::cache::CacheOptions::from_headers(headers),
        mcp: crate::mcp::McpOptions::from_headers(headers),
        spent: Default::default(),
        credential: crate::governance::credential(headers).map(crate::config::Secret::new),
        tool_gate: None,
        tool_hooks: None,
        raw_answer: false,
    }
}

/// A random UUIDv4 (from a fast non-cryptographic generator: request ids are not secrets).
fn new_request_id() -> String {
    let bytes = fastrand::u128(..).to_le_bytes();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Reads the body within `max_body_bytes` and decodes it, naming the bad field on error.
pub async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> Result<T, GatewayError> {
    let limit = state.config.server.max_body_bytes;
    // A body trickled in slowly holds a connection: it must arrive within the request timeout.
    let wait = state.config.server.request_timeout;
    let read = tokio::time::timeout(wait, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| GatewayError::Http {
            status: StatusCode::REQUEST_TIMEOUT,
            code: "request_timeout",
            message: format!(
                "the request body did not arrive within {} ms",
                wait.as_millis()
            ),
        })?;
    let bytes = read.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            GatewayError::TooLarge(limit)
        } else {
            GatewayError::BadRequest(format!("cannot read request body: {e}"))
        }
    })?;
    decode(&bytes)
}

/// Decodes JSON, naming the field that is wrong.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    // Fast path; the slower path-tracking decoder runs only to explain a failure.
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let err = match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    Err(if inner.is_syntax() || inner.is_eof() {
        GatewayError::BadRequest(format!("request body is not valid JSON: {inner}"))
    } else if path == "." {
        GatewayError::BadRequest(format!("invalid request body: {inner}"))
    } else {
        GatewayError::BadRequest(format!("invalid request body at `{path}`: {inner}"))
    })
}

/// How an ingress frames a canonical chunk stream: each method appends its frames (whole SSE
/// events) to `out`, the body frame being gathered.
pub(crate) trait Frames: Send + 'static {
    /// The frames for one chunk.
    fn chunk(&mut self, chunk: crate::chat::ChatChunk, out: &mut Vec<u8>);
    /// The frames for a chunk as it is, without decoding or changing it (a chunk that kept the
    /// upstream's JSON, see `chat::Chunk`); `false`, with nothing appended, to have it go through
    /// [`Frames::chunk`].
    fn as_is(&mut self, _chunk: &crate::chat::Chunk, _out: &mut Vec<u8>) -> bool {
        false
    }
    /// The frames that end a stream the upstream broke after its first byte.
    fn failed(&mut self, message: &str, out: &mut Vec<u8>);
    /// The frames that end a complete stream (after the MCP trailer).
    fn end(&mut self, out: &mut Vec<u8>);
    /// Work `end` started that must be done before its frames go out (a stored response).
    fn written(&mut self) -> Option<futures_util::future::BoxFuture<'static, ()>> {
        None
    }
}

/// The most bytes of frames gathered into one body frame before it is sent.
const FRAME_BATCH: usize = 16 * 1024;

/// A chunk stream as an ingress's frames, followed by the request guard to its last byte: each
/// chunk counted, a mid-stream failure logged and recorded, the MCP trailer before the end.
///
/// The chunks that are ready together go out as one body frame (up to [`FRAME_BATCH`] bytes):
/// hyper would write them in one system call all the same, but each frame of the body costs its
/// own pass through the SSE layer and hyper's chunked encoder. A chunk that comes alone still goes
/// out at once: gathering only takes what the stream has ready, never waits for more.
pub(crate) fn frames<F: Frames>(
    stream: crate::chat::ChatStream,
    guard: RequestGuard,
    mcp: Option<std::sync::Arc<crate::mcp::McpReport>>,
    mut enc: F,
) -> impl futures_util::Stream<Item = bytes::Bytes> + Send + 'static {
    use futures_util::StreamExt;
    use std::task::Poll;
    let mut stream = crate::telemetry::otel::in_span(stream, guard.span());
    async_stream::stream! {
        let mut guard = guard;
        let mut out = Vec::new();
        'stream: while let Some(mut item) = stream.next().await {
            loop {
                let written = item.and_then(|chunk| {
                    guard.chunk(&chunk);
                    if enc.as_is(&chunk, &mut out) {
                        Ok(())
                    } else {
                        chunk.into_chunk().map(|c| enc.chunk(c, &mut out))
                    }
                });
                if let Err(e) = written {
                    tracing::warn!(error = %e, "upstream stream failed after the first byte");
                    guard.stream_failed(&e.message);
                    enc.failed(&e.message, &mut out);
                    yield bytes::Bytes::from(out);
                    return;
                }
                if out.len() >= FRAME_BATCH {
                    break;
                }
                // A poll that finds nothing ready leaves this task's waker with the stream, as
                // the loop's next `next()` would.
                match std::future::poll_fn(|cx| Poll::Ready(stream.poll_next_unpin(cx))).await {
                    Poll::Ready(Some(next)) => item = next,
                    Poll::Ready(None) => break 'stream,
                    Poll::Pending => break,
                }
            }
            if !out.is_empty() {
                yield bytes::Bytes::from(std::mem::take(&mut out));
            }
        }
        if let Some(r) = &mcp {
            out.extend_from_slice(&mcp_trailer(r));
        }
        let before_end = out.len();
        enc.end(&mut out);
        if let Some(write) = enc.written() {
            // What came before the end goes out now; the end's frames once the work is done.
            let last = out.split_off(before_end);
            if !out.is_empty() {
                yield bytes::Bytes::from(out);
            }
            write.await;
            out = last;
        }
        if !out.is_empty() {
            yield bytes::Bytes::from(out);
        }
    }
}

/// Runs a canonical chat request through the pipeline and answers it in an ingress's shape:
/// `complete` encodes a whole answer (given, when a stage already wrote it as OpenAI JSON, those
/// bytes), `stream` a chunk stream (it gets the guard and the MCP report, which the body carries
/// to its last byte). Errors come back in `dialect`'s shape; every
/// answer carries the request id, who served it, the cache's outcome and the key's rate limits.
pub(crate) async fn answer_chat<C, S>(
    state: &AppState,
    ctx: &mut RequestContext,
    mut guard: RequestGuard,
    req: Box<crate::chat::ChatRequest>,
    dialect: Dialect,
    complete: C,
    stream: S,
) -> Response
where
    C: FnOnce(crate::chat::ChatResponse, Option<bytes::Bytes>) -> Response,
    S: FnOnce(
        crate::chat::ChatStream,
        RequestGuard,
        Option<std::sync::Arc<crate::mcp::McpReport>>,
    ) -> Response,
{
    // The pipeline's future (about 11 KB: every stage's state) is held inline: each chat handler
    // boxes the future that calls this one, so nothing above moves it.
    let answered = crate::pipeline::chat(state, req, ctx).await;
    // An answer kept as the upstream's OpenAI JSON is only made for an ingress that answers in
    // OpenAI JSON (`ctx.raw_answer`); any other gets it decoded.
    let answered = match answered {
        Ok((outcome, permit)) if !ctx.raw_answer => crate::router::decode_raw(outcome)
            .map(|o| (o, permit))
            .map_err(GatewayError::from),
        other => other,
    };
    let (outcome, permit) = match answered {
        Ok(o) => o,
        Err(e) => {
            guard.error(e.parts().0, e.to_string(), e.served());
            return error_response(&e, ctx, dialect);
        }
    };
    guard.outcome(&outcome.served, outcome.cache.as_ref());
    let rate = permit.as_ref().map(|p| p.headers.clone());
    guard.permit(permit);
    let mut resp = match outcome.body {
        crate::pipeline::ChatBody::Complete(r) => {
            guard.finish(StatusCode::OK, false);
            guard.response(&r);
            let mut resp = complete(*r, outcome.json);
            set_mcp_headers(resp.headers_mut(), outcome.mcp.as_deref());
            resp
        }
        // Kept as the upstream's OpenAI JSON (see above): sent as it came.
        crate::pipeline::ChatBody::Raw(raw) => {
            guard.finish(StatusCode::OK, false);
            guard.raw_response(&raw);
            let mut resp = openai_json_bytes(raw.bytes);
            set_mcp_headers(resp.headers_mut(), outcome.mcp.as_deref());
            resp
        }
        crate::pipeline::ChatBody::Stream(s) => {
            guard.finish(StatusCode::OK, true);
            stream(s, guard, outcome.mcp.clone())
        }
    };
    let headers = resp.headers_mut();
    // Room for what follows (about a dozen headers) at once, not by growing the map twice.
    headers.reserve(16);
    set_headers(headers, ctx, Some(&outcome.served));
    set_cache_headers(headers, outcome.cache.as_ref());
    set_rate_headers(headers, rate.as_ref());
    resp
}

/// A complete answer as OpenAI JSON: the bytes a stage already wrote for it, or encoded now.
pub(crate) fn openai_json(r: crate::chat::ChatResponse, json: Option<bytes::Bytes>) -> Response {
    match json {
        Some(bytes) => openai_json_bytes(bytes),
        None => axum::Json(r).into_response(),
    }
}

/// OpenAI JSON already written.
fn openai_json_bytes(bytes: bytes::Bytes) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// Sets `x-switchyard-cache` and, on semantic hits, `x-switchyard-cache-similarity`.
pub fn set_cache_headers(headers: &mut HeaderMap, status: Option<&crate::cache::CacheStatus>) {
    let Some(s) = status else { return };
    headers.insert(CACHE, HeaderValue::from_static(s.outcome.label()));
    if let Some(sim) = s.similarity
        && let Ok(v) = HeaderValue::from_str(&format!("{sim:.4}"))
    {
        headers.insert(CACHE_SIMILARITY, v);
    }
    // Shadow mode: what would have been served (the answer itself is live).
    if let Some(sh) = &s.shadow {
        headers.insert(
            HeaderName::from_static("x-switchyard-cache-shadow"),
            HeaderValue::from_static(sh.outcome.label()),
        );
        if let Some(sim) = sh.similarity
            && let Ok(v) = HeaderValue::from_str(&format!("{sim:.4}"))
        {
            headers.insert(
                HeaderName::from_static("x-switchyard-cache-shadow-similarity"),
                v,
            );
        }
    }
}

/// Sets `x-switchyard-mcp-tool-calls`, `x-switchyard-mcp-iterations` and, when the loop hit its
/// bound, `x-switchyard-mcp-stopped: max-iterations`. Streams send their headers before any tool
/// runs, so they carry these in an SSE comment at the end instead (see `mcp_trailer`).
pub fn set_mcp_headers(headers: &mut HeaderMap, report: Option<&crate::mcp::McpReport>) {
    let Some(r) = report else { return };
    headers.insert(MCP_TOOL_CALLS, number(u64::from(r.tool_calls())));
    headers.insert(MCP_ROUNDS, number(u64::from(r.rounds())));
    if r.limited() {
        headers.insert(MCP_LIMITED, HeaderValue::from_static("max-iterations"));
    }
}

/// The SSE comment that ends a stream the tool loop produced.
pub fn mcp_trailer(report: &crate::mcp::McpReport) -> bytes::Bytes {
    let mut s = format!(
        ": x-switchyard-mcp-tool-calls={} x-switchyard-mcp-iterations={}",
        report.tool_calls(),
        report.rounds()
    );
    if report.limited() {
        s.push_str(" x-switchyard-mcp-stopped=max-iterations");
    }
    s.push_str("\n\n");
    bytes::Bytes::from(s)
}

/// Adds `x-request-id` and, when known, who served the request.
pub fn set_headers(headers: &mut HeaderMap, ctx: &RequestContext, served: Option<&Served>) {
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(REQUEST_ID, v);
    }
    let Some(s) = served else { return };
    if let Ok(v) = HeaderValue::from_str(&s.provider) {
        headers.insert(PROVIDER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&s.model) {
        headers.insert(MODEL, v);
    }
    headers.insert(ATTEMPTS, number(u64::from(s.attempts)));
}

/// A number as a header value; the small ones most answers carry (attempts, tool calls) are
/// constants, not an allocation each.
fn number(n: u64) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match usize::try_from(n).ok().and_then(|i| DIGITS.get(i)) {
        Some(d) => HeaderValue::from_static(d),
        None => HeaderValue::from(n),
    }
}

/// An admin API error: the status and OpenAI-shaped body, not logged (the caller decides).
pub(crate) fn json_error(e: GatewayError) -> Response {
    let (status, _, _) = e.parts();
    (status, axum::Json(e.body())).into_response()
}

/// A query string decoded as `T`, or a 400 naming what was wrong with it.
pub(crate) fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, GatewayError> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| GatewayError::BadRequest(e.body_text()))
}

/// Which error body shape an endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": {message, type, code}}`.
    OpenAi,
    /// The same, plus `"type": "error"` at the top so Anthropic SDKs parse it too.
    Anthropic,
    /// Google's `{"error": {code, message, status, details}}` (the `/genai` ingress).
    Google,
}

impl Dialect {
    /// The error shape of the ingress a path belongs to.
    pub fn of(path: &str) -> Self {
        if path.starts_with("/anthropic/") {
            Self::Anthropic
        } else if path.starts_with("/genai/") {
            Self::Google
        } else {
            Self::OpenAi
        }
    }
}

/// Turns an error into its response, logged once here.
pub fn error_response(err: &GatewayError, ctx: &RequestContext, dialect: Dialect) -> Response {
    let (status, _, _) = err.parts();
    if status.is_server_error() {
        tracing::warn!(request_id = %ctx.request_id, status = status.as_u16(), error = %err, "request failed");
    } else {
        tracing::info!(request_id = %ctx.request_id, status = status.as_u16(), error = %err, "request rejected");
    }
    let mut resp = dialect_body(err, dialect);
    set_headers(resp.headers_mut(), ctx, err.served());
    if err.served().is_none() {
        // Answered before (or without) an upstream attempt that names a provider.
        resp.headers_mut()
            .insert(ATTEMPTS, number(u64::from(err.attempts())));
    }
    if let Some(secs) = err.retry_after() {
        resp.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let GatewayError::Governance(crate::governance::GovernanceError::RateLimited {
        headers,
        ..
    }) = err
    {
        set_rate_headers(resp.headers_mut(), Some(headers));
    } else {
        // Admitted, then failed (upstream error, bad tool call, ...): the key's limits still show.
        set_rate_headers(resp.headers_mut(), ctx.spent.rate().as_ref());
    }
    resp
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for a key with limits.
pub fn set_rate_headers(h: &mut HeaderMap, rate: Option<&crate::request::RateHeaders>) {
    let Some(r) = rate else { return };
    for (names, v) in [
        (RATE_REQUEST_HEADERS, r.requests),
        (RATE_TOKEN_HEADERS, r.tokens),
    ] {
        let Some((limit, remaining, reset_ms)) = v else {
            continue;
        };
        let [limit_name, remaining_name, reset_name] = names;
        h.insert(limit_name, HeaderValue::from(limit));
        h.insert(remaining_name, HeaderValue::from(remaining));
        if let Ok(reset) = HeaderValue::from_str(&crate::governance::openai_duration(reset_ms)) {
            h.insert(reset_name, reset);
        }
    }
}

#[cfg(test)]
mod number_tests {
    #[test]
    fn numbers_read_the_same_whether_constant_or_written() {
        for n in [0, 1, 9, 10, 11, 99, 12_345, u64::MAX] {
            assert_eq!(super::number(n).to_str().unwrap(), n.to_string());
        }
    }
}

#[cfg(test)]
mod gateway_tests {
    use super::*;
    use axum::http::Request;

    fn over(routes: Router) -> Gateway {
        Gateway { routes }
    }

    async fn json_of(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn boom() -> &'static str {
        panic!("a handler's bug")
    }

    #[tokio::test]
    async fn the_service_answers_panics_and_routing_errors_in_json_and_leaves_the_rest() {
        let gw = over(
            Router::new()
                .route("/v1/boom", get(boom))
                .route("/v1/fine", get(|| async { "fine" }))
                .route("/anthropic/v1/fine", get(|| async { "fine" })),
        );
        let get_ = |path: &str| Request::get(path).body(Body::empty()).unwrap();

        let boom = gw.clone().answer(get_("/v1/boom")).await;
        assert_eq!(boom.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v = json_of(boom).await;
        assert_eq!(v["error"]["code"], "internal_error", "{v}");
        assert!(!v.to_string().contains("a handler's bug"), "{v}");

        // The server keeps answering after a panic.
        let fine = gw.clone().answer(get_("/v1/fine")).await;
        assert_eq!(fine.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(fine.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], b"fine");

        let post = Request::post("/v1/fine").body(Body::empty()).unwrap();
        let wrong = gw.clone().answer(post).await;
        assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(wrong.headers().contains_key(axum::http::header::ALLOW));
        let v = json_of(wrong).await;
        assert_eq!(
            v["error"]["message"], "method POST is not allowed on /v1/fine (see the Allow header)",
            "{v}"
        );

        let post = Request::post("/anthropic/v1/fine")
            .body(Body::empty())
            .unwrap();
        let v = json_of(gw.answer(post).await).await;
        assert_eq!(v["type"], "error", "Anthropic's shape: {v}");
    }
}

#[cfg(test)]
mod frames_tests {
    use super::*;
    use crate::chat::{ChatChunk, ChatStream, Delta, StreamError, StreamItem};
    use futures_util::StreamExt;
    use tokio::sync::mpsc;

    /// Each chunk's text as one line; the end and a failure as lines of their own.
    struct Lines;

    impl Frames for Lines {
        fn chunk(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
            let text = chunk.choices[0].delta.content.clone().unwrap_or_default();
            out.extend_from_slice(format!("{text}\n").as_bytes());
        }
        fn failed(&mut self, message: &str, out: &mut Vec<u8>) {
            out.extend_from_slice(format!("failed: {message}\n").as_bytes());
        }
        fn end(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"end\n");
        }
    }

    fn text(t: &str) -> StreamItem {
        let delta = Delta {
            content: Some(t.to_owned()),
            ..Delta::default()
        };
        Ok(Box::new(ChatChunk::of("c", 1, "m", delta, None).into()))
    }

    /// A chunk stream fed by hand, and the body frames `frames` makes of it.
    async fn fed() -> (
        mpsc::UnboundedSender<StreamItem>,
        std::pin::Pin<Box<dyn futures_util::Stream<Item = bytes::Bytes> + Send>>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().expect("dir");
        let mut cfg = crate::config::Config::parse("", &|_| None).expect("config");
        cfg.cache.enabled = false;
        cfg.server.data_dir = dir.path().to_owned();
        let state = AppState::new(cfg).await.expect("state");
        let headers = HeaderMap::new();
        let guard = RequestGuard::new(&state, "chat", &context(&state, &headers), &headers);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let chunks: ChatStream =
            Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        (tx, Box::pin(frames(chunks, guard, None, Lines)), dir)
    }

    #[tokio::test]
    async fn chunks_ready_together_go_out_as_one_frame_and_a_lone_one_at_once() {
        let (tx, mut body, _dir) = fed().await;
        tx.send(text("a")).expect("send");
        // Alone: out at once, without waiting for the next chunk.
        assert_eq!(body.next().await.expect("frame"), "a\n");
        assert!(futures_util::poll!(body.next()).is_pending());
        tx.send(text("b")).expect("send");
        tx.send(text("c")).expect("send");
        drop(tx);
        // Ready together, with the stream's end: one frame.
        assert_eq!(body.next().await.expect("frame"), "b\nc\nend\n");
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn a_frame_gathers_at_most_the_batch_then_the_rest_follows() {
        let (tx, mut body, _dir) = fed().await;
        let line = "x".repeat(999);
        let n = 3 * FRAME_BATCH / 1000;
        for _ in 0..n {
            tx.send(text(&line)).expect("send");
        }
        drop(tx);
        let mut frames = Vec::new();
        while let Some(f) = body.next().await {
            frames.push(f);
        }
        // Each frame stops at the first chunk that takes it to the batch's size.
        assert!(frames.len() >= 3, "{} frames", frames.len());
        assert!(frames.iter().all(|f| f.len() < FRAME_BATCH + 1000));
        let all: Vec<u8> = frames.concat();
        let expect = format!("{}end\n", format!("{line}\n").repeat(n));
        assert_eq!(String::from_utf8(all).expect("utf-8"), expect);
    }

    #[tokio::test]
    async fn a_failure_after_ready_chunks_ends_their_frame() {
        let (tx, mut body, _dir) = fed().await;
        tx.send(text("a")).expect("send");
        tx.send(Err(StreamError::new("upstream went away")))
            .expect("send");
        tx.send(text("never")).expect("send");
        assert_eq!(
            body.next().await.expect("frame"),
            "a\nfailed: upstream went away\n"
        );
        assert!(body.next().await.is_none());
    }
}
