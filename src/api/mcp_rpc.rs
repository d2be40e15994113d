//! The HTTP edge of `/mcp`: every error answer is a JSON-RPC error object with a fitting status
//! (a body that is not JSON is a 400 parse error, not rmcp's plain-text 415), and a request id
//! already in flight in the same session is refused at once instead of waiting for an answer
//! that would go to the other request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::GatewayError;

/// JSON-RPC: invalid JSON.
const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: not a valid request object.
const INVALID_REQUEST: i64 = -32600;
/// Implementation-defined server errors (auth, sessions, limits).
const SERVER_ERROR: i64 = -32000;
/// The session is unknown or ended (as other MCP servers answer it).
const SESSION_NOT_FOUND: i64 = -32001;

/// Request ids in flight per session.
#[derive(Default)]
pub struct RpcEdge {
    in_flight: Mutex<HashSet<String>>,
    /// Largest accepted body (`[server] max_body_bytes`).
    pub max_body: usize,
}

impl RpcEdge {
    /// An edge for bodies up to `max_body` bytes.
    pub fn new(max_body: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: Mutex::default(),
            max_body,
        })
    }

    fn claim(self: &Arc<Self>, key: String) -> Option<Claim> {
        let mut set = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.clone()).then(|| Claim {
            edge: self.clone(),
            key,
        })
    }
}

/// Releases a session's request id when its answer ends.
struct Claim {
    edge: Arc<RpcEdge>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self
            .edge
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
}

/// A JSON-RPC error answer for a gateway error.
pub fn rpc_error_response(e: &GatewayError, id: Option<Value>) -> Response {
    let (status, _, _) = e.parts();
    rpc_error(status, SERVER_ERROR, &e.to_string(), id)
}

fn rpc_error(status: StatusCode, code: i64, message: &str, id: Option<Value>) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    });
    (status, axum::Json(body)).into_response()
}

/// The middleware on `/mcp`.
pub async fn edge(State(edge): State<Arc<RpcEdge>>, req: Request, next: Next) -> Response {
    let mut claim = None;
    let mut id = None;
    let req = if req.method() == axum::http::Method::POST && super::origin::is_json(req.headers()) {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, edge.max_body).await {
            Ok(b) => b,
            Err(_) => {
                let msg = format!(
                    "request body is larger than {} bytes or broken",
                    edge.max_body
                );
                return rpc_error(StatusCode::PAYLOAD_TOO_LARGE, INVALID_REQUEST, &msg, None);
            }
        };
        let value: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("Parse error: the body is not valid JSON ({e})");
                return rpc_error(StatusCode::BAD_REQUEST, PARSE_ERROR, &msg, None);
            }
        };
        if !value.is_object() {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "Invalid Request: the body must be one JSON-RPC message (an object)",
                None,
            );
        }
        id = value.get("id").cloned();
        let session = parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok());
        if let (Some(s), Some(i)) = (session, &id)
            && value.get("method").is_some()
        {
            let key = format!("{s}\n{i}");
            match edge.claim(key) {
                Some(c) => claim = Some(c),
                None => {
                    let msg = format!(
                        "Invalid Request: id {i} is already used by a request in flight in this session; use a new id per request"
                    );
                    return rpc_error(StatusCode::CONFLICT, INVALID_REQUEST, &msg, id);
                }
            }
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };
    let resp = next.run(req).await;
    let resp = match claim {
        Some(c) => resp.map(|b| Body::new(super::body::Holding::new(b, c))),
        None => resp,
    };
    if resp.status().as_u16() < 400 || is_json_response(&resp) {
        return resp;
    }
    to_rpc_error(resp, id).await
}

fn is_json_response(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// rmcp's plain-text error answers, as JSON-RPC errors.
async fn to_rpc_error(resp: Response, id: Option<Value>) -> Response {
    let (parts, body) = resp.into_parts();
    let text = super::plain_text(body).await;
    let mut status = parts.status;
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let code = match status {
        StatusCode::NOT_FOUND if message.contains("Session") => SESSION_NOT_FOUND,
        StatusCode::UNSUPPORTED_MEDIA_TYPE if message.contains("deserialize") => {
            // Valid JSON that is not a JSON-RPC message.
            status = StatusCode::BAD_REQUEST;
            INVALID_REQUEST
        }
        s if s.is_client_error() => INVALID_REQUEST,
        _ => SERVER_ERROR,
    };
    let mut out = rpc_error(status, code, &message, id);
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    if parts.status == StatusCode::METHOD_NOT_ALLOWED && !out.headers().contains_key(header::ALLOW)
    {
        out.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    }
    out
}
