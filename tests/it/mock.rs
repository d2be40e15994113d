//! Mock providers: small axum servers on 127.0.0.1:0 that replay recorded OpenAI and Anthropic
//! wire shapes from tests/fixtures, count calls, record requests and inject failures on demand.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// The text every fixture answers with.
pub const TEXT: &str = "Hello! How can I help you today?";
/// The answer to a request with a `json_schema` response format (OpenAI-format mock).
pub const STRUCTURED: &str = r#"{"city":"Paris","temperature_c":18}"#;

/// Serves `app` on 127.0.0.1 (a free port) in the background.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Reads a fixture file.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The recorded answer matching the request (JSON or SSE, with or without tools).
    Ok,
    /// An error status in the provider's error shape, with an optional Retry-After (seconds).
    Status(u16, Option<u64>),
    /// An error status with this Retry-After header, verbatim (values a provider should not send).
    StatusRawRetryAfter(u16, &'static str),
    /// Wait, then answer normally.
    Slow(Duration),
    /// Send the response head, then break the body before any data.
    Reset,
    /// Stream the first `n` events of the recording, then break the connection.
    Cut(usize),
    /// Stream the first `n` events of the recording, then send nothing more, holding the
    /// connection open.
    Stall(usize),
    /// Stream the recording with this pause between events.
    Drip(Duration),
    /// Stream one event that never ends: `data: ` then this many MiB of `x`, no line end.
    EndlessEvent(usize),
}

/// A recorded request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// JSON body.
    pub body: Value,
    /// The body's bytes as sent.
    pub raw: Bytes,
}

impl Seen {
    /// The credential the request carried (Bearer token, x-api-key or api-key).
    pub fn key(&self) -> Option<String> {
        let h = |n: &str| {
            self.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        h("authorization")
            .map(|a| a.trim_start_matches("Bearer ").to_owned())
            .or_else(|| h("x-api-key"))
            .or_else(|| h("api-key"))
            .or_else(|| h("x-goog-api-key"))
    }
}

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<Reply>>,
    /// Reply used when the script is empty.
    default: Mutex<Option<Reply>>,
    /// Keys answered with 401.
    bad_keys: Mutex<HashSet<String>>,
    calls: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// Google OAuth token exchanges answered (`/token`), and the lifetime given to tokens.
    token_calls: AtomicUsize,
    token_lifetime: std::sync::atomic::AtomicU64,
    token_endless: std::sync::atomic::AtomicBool,
}

/// A running mock provider.
#[derive(Clone)]
pub struct Mock {
    /// Bound address.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Mock {
    /// Starts a mock on 127.0.0.1:0.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(handle))
            .route("/v1/messages", post(handle))
            .route("/v1/embeddings", post(handle))
            .route("/openai/deployments/{dep}/chat/completions", post(handle))
            .route("/openai/deployments/{dep}/embeddings", post(handle))
            // Gemini: `/v1beta/models/{model}:{action}` (Vertex AI's longer paths end the same way).
            .route("/v1beta/models/{*rest}", post(handle))
            .route("/v1beta/openai/chat/completions", post(handle))
            .route("/token", post(token))
            .route("/model/{id}/converse", post(handle))
            .route("/model/{id}/converse-stream", post(handle))
            .route("/model/{id}/invoke", post(handle))
            .route("/v1/{*rest}", post(handle))
            .with_state(inner.clone());
        let addr = serve(app).await;
        Self { addr, inner }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues replies, used in order before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.script.lock().unwrap().extend(replies);
    }

    /// Sets the reply used when the script is empty.
    pub fn always(&self, reply: Reply) {
        *self.inner.default.lock().unwrap() = Some(reply);
    }

    /// Answers requests carrying this key with 401.
    pub fn reject_key(&self, key: &str) {
        self.inner.bad_keys.lock().unwrap().insert(key.to_owned());
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }

    /// Token exchanges answered so far.
    pub fn token_calls(&self) -> usize {
        self.inner.token_calls.load(Ordering::SeqCst)
    }

    /// Answer token exchanges with a body that never ends.
    pub fn token_endless(&self) {
        self.inner.token_endless.store(true, Ordering::SeqCst);
    }

    /// The `expires_in` given to the next tokens (default 3600 s).
    pub fn token_lifetime(&self, secs: u64) {
        self.inner.token_lifetime.store(secs, Ordering::SeqCst);
    }

    /// Every request received.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the mock received no request")
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    inner.calls.fetch_add(1, Ordering::SeqCst);
    let seen = Seen {
        path: path.clone(),
        headers,
        body: body.clone(),
        raw: bytes.clone(),
    };
    let key = seen.key();
    inner.seen.lock().unwrap().push(seen);
    let wire = Wire::of(&path);
    if key.is_some_and(|k| inner.bad_keys.lock().unwrap().contains(&k)) {
        return error(wire, 401, None, "Incorrect API key provided");
    }
    let reply = inner
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| inner.default.lock().unwrap().clone())
        .unwrap_or(Reply::Ok);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false)
        || path.contains(":streamGenerateContent")
        || path.ends_with("/converse-stream")
        || path.contains(":streamRawPredict");
    let tools = body
        .get("tools")
        .or_else(|| body.pointer("/toolConfig/tools"))
        .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    // Structured output: the recorded answer, with a JSON object that fits `STRUCTURED`'s schema.
    let structured = !stream && structured_request(wire, &body);
    match reply {
        Reply::Ok if structured => structured_answer(wire),
        Reply::Ok => recorded(&path, wire, stream, tools, &body),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            recorded(&path, wire, stream, tools, &body)
        }
        Reply::Status(code, retry_after) => {
            error(wire, code, retry_after, &format!("injected {code}"))
        }
        Reply::StatusRawRetryAfter(code, value) => {
            let mut resp = error(wire, code, None, &format!("injected {code}"));
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static(value));
            resp
        }
        Reply::Reset => {
            let body = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("reset"))
            });
            Response::builder()
                .header(
                    "content-type",
                    if stream {
                        content_type(wire)
                    } else {
                        "application/json"
                    },
                )
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Cut(n) => {
            let events = recorded_events(wire, tools).into_iter().take(n);
            // Let the events reach the wire before the connection breaks, as in a real failure.
            let body = futures_util::stream::iter(events.map(Ok)).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(std::io::Error::other("cut"))
                }),
            );
            Response::builder()
                .header("content-type", content_type(wire))
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Stall(n) => {
            let events = recorded_events(wire, tools).into_iter().take(n);
            let body = futures_util::stream::iter(events.map(Ok::<_, std::io::Error>))
                .chain(futures_util::stream::pending());
            Response::builder()
                .header("content-type", content_type(wire))
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::EndlessEvent(mib) => {
            let block = Bytes::from(vec![b'x'; 1 << 20]);
            let body = futures_util::stream::once(async { Ok(Bytes::from_static(b"data: ")) })
                .chain(futures_util::stream::iter(
                    (0..mib).map(move |_| Ok::<_, std::io::Error>(block.clone())),
                ));
            Response::builder()
                .header("content-type", content_type(wire))
                .body(Body::from_stream(body))
                .unwrap()
        }
        Reply::Drip(pause) => {
            let body = futures_util::stream::iter(recorded_events(wire, tools)).then(
                move |e| async move {
                    tokio::time::sleep(pause).await;
                    Ok::<_, std::io::Error>(e)
                },
            );
            Response::builder()
                .header("content-type", content_type(wire))
                .body(Body::from_stream(body))
                .unwrap()
        }
    }
}

/// Whether a request asks for `STRUCTURED`'s JSON in its wire format's way: `response_format`
/// (OpenAI), `responseMimeType` (Gemini), or the gateway's forced `json_response` tool (Anthropic
/// and Bedrock have no JSON mode).
fn structured_request(wire: Wire, body: &Value) -> bool {
    match wire {
        Wire::OpenAi => body.pointer("/response_format/type") == Some(&json!("json_schema")),
        Wire::Gemini => {
            body.pointer("/generationConfig/responseMimeType") == Some(&json!("application/json"))
        }
        Wire::Anthropic => body.pointer("/tools/0/name") == Some(&json!("json_response")),
        Wire::Bedrock => {
            body.pointer("/toolConfig/tools/0/toolSpec/name") == Some(&json!("json_response"))
        }
    }
}

/// The recorded answer of each wire format, carrying `STRUCTURED` as that format answers JSON.
fn structured_answer(wire: Wire) -> Response {
    let object: Value = serde_json::from_str(STRUCTURED).unwrap();
    let v = match wire {
        Wire::OpenAi => {
            let mut v: Value = serde_json::from_str(&fixture("openai/chat.json")).unwrap();
            v["choices"][0]["message"]["content"] = json!(STRUCTURED);
            v
        }
        Wire::Gemini => {
            let mut v: Value = serde_json::from_str(&fixture("gemini/generate.json")).unwrap();
            v["candidates"][0]["content"]["parts"] = json!([{"text": STRUCTURED}]);
            v
        }
        Wire::Anthropic => {
            let mut v: Value =
                serde_json::from_str(&fixture("anthropic/messages_tools.json")).unwrap();
            v["content"] = json!([{"type": "tool_use", "id": "toolu_01JsonResponse", "name": "json_response", "input": object}]);
            v["stop_reason"] = json!("tool_use");
            v
        }
        Wire::Bedrock => {
            let mut v: Value =
                serde_json::from_str(&fixture("bedrock/converse_tools.json")).unwrap();
            v["output"]["message"]["content"] = json!([{"toolUse": {"toolUseId": "tooluse_json", "name": "json_response", "input": object}}]);
            v["stopReason"] = json!("tool_use");
            v
        }
    };
    axum::Json(v).into_response()
}

/// Which wire format a request path speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI chat completions (and Azure's deployment paths).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent` (AI Studio and Vertex AI paths).
    Gemini,
    /// Bedrock Converse (JSON) and ConverseStream (AWS event-stream frames).
    Bedrock,
}

impl Wire {
    fn of(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Self::Anthropic
        } else if path.starts_with("/model/") {
            Self::Bedrock
        } else if path.contains(":rawPredict") || path.contains(":streamRawPredict") {
            // Claude on Vertex AI: the Messages format at Google's URL.
            Self::Anthropic
        } else if path.contains(":generateContent")
            || path.contains(":streamGenerateContent")
            || path.contains(":batchEmbedContents")
        {
            Self::Gemini
        } else {
            Self::OpenAi
        }
    }
}

fn fixture_name(wire: Wire, stream: bool, tools: bool) -> String {
    let (dir, base) = match wire {
        Wire::Anthropic => ("anthropic", "messages"),
        Wire::OpenAi => ("openai", "chat"),
        Wire::Gemini => ("gemini", "generate"),
        Wire::Bedrock => ("bedrock", "converse"),
    };
    let tools = if tools { "_tools" } else { "" };
    let ext = match (stream, wire) {
        (false, _) => ".json",
        (true, Wire::Bedrock) => "_stream.jsonl",
        (true, _) => "_stream.sse",
    };
    format!("{dir}/{base}{tools}{ext}")
}

fn recorded(path: &str, wire: Wire, stream: bool, tools: bool, body: &Value) -> Response {
    if path.contains("/embeddings") {
        return (
            [("content-type", "application/json")],
            fixture("openai/embeddings.json"),
        )
            .into_response();
    }
    if path.ends_with("/invoke") {
        // Bedrock InvokeModel: Cohere embeds a list of texts, Titan one text.
        if let Some(texts) = body["texts"].as_array() {
            let embeddings: Vec<Value> = (0..texts.len()).map(|i| json!([0.5, i as f64])).collect();
            return axum::Json(json!({"embeddings": embeddings, "id": "e1", "response_type": "embeddings_floats", "texts": texts})).into_response();
        }
        let n = body["inputText"]
            .as_str()
            .map_or(0, |t| t.split_whitespace().count());
        return axum::Json(json!({"embedding": [0.25, 0.5, 0.75], "inputTextTokenCount": n}))
            .into_response();
    }
    if path.contains(":batchEmbedContents") {
        // One vector per request, as Gemini answers.
        let n = body["requests"].as_array().map_or(0, Vec::len);
        let embeddings: Vec<Value> = (0..n)
            .map(|i| json!({"values": [0.1, 0.2, i as f64]}))
            .collect();
        return axum::Json(json!({"embeddings": embeddings})).into_response();
    }
    if !stream {
        let text = fixture(&fixture_name(wire, false, tools));
        return ([("content-type", "application/json")], text).into_response();
    }
    // Send event by event, as a real upstream does.
    let events = recorded_events(wire, tools)
        .into_iter()
        .map(Ok::<_, std::io::Error>);
    Response::builder()
        .header("content-type", content_type(wire))
        .body(Body::from_stream(futures_util::stream::iter(events)))
        .unwrap()
}

/// The content type of a stream in this wire format.
fn content_type(wire: Wire) -> &'static str {
    if wire == Wire::Bedrock {
        "application/vnd.amazon.eventstream"
    } else {
        "text/event-stream"
    }
}

/// One AWS event-stream frame (prelude, headers, payload, CRCs) carrying a Bedrock event.
pub fn bedrock_frame(event: &str, payload: &Value) -> Bytes {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let msg = Message::new(serde_json::to_vec(payload).unwrap())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&msg, &mut out).unwrap();
    Bytes::from(out)
}

/// The recorded stream for this request, one SSE event (or event-stream frame) per item
/// (Gemini ends events with CRLF).
fn recorded_events(wire: Wire, tools: bool) -> Vec<Bytes> {
    if wire == Wire::Bedrock {
        return fixture(&fixture_name(wire, true, tools))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                bedrock_frame(v["event"].as_str().unwrap(), &v["payload"])
            })
            .collect();
    }
    let sep = if wire == Wire::Gemini {
        "\r\n\r\n"
    } else {
        "\n\n"
    };
    fixture(&fixture_name(wire, true, tools))
        .split(sep)
        .filter(|e| !e.trim().is_empty())
        .map(|e| Bytes::from(format!("{e}{sep}")))
        .collect()
}

fn error(wire: Wire, code: u16, retry_after: Option<u64>, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap();
    if wire == Wire::Bedrock {
        let kind = match code {
            400 => "ValidationException",
            403 => "AccessDeniedException",
            408 => "ModelTimeoutException",
            429 => "ThrottlingException",
            503 => "ServiceUnavailableException",
            _ => "InternalServerException",
        };
        let mut resp = (status, axum::Json(json!({"message": message}))).into_response();
        resp.headers_mut().insert(
            "x-amzn-errortype",
            format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/")
                .parse()
                .unwrap(),
        );
        if let Some(s) = retry_after {
            resp.headers_mut().insert("retry-after", s.into());
        }
        return resp;
    }
    let body = if wire == Wire::Gemini {
        let status = match code {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        };
        json!({"error": {"code": code, "message": message, "status": status}})
    } else if wire == Wire::Anthropic {
        let kind = match code {
            429 => "rate_limit_error",
            401 => "authentication_error",
            529 => "overloaded_error",
            c if c >= 500 => "api_error",
            _ => "invalid_request_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(s) = retry_after {
        resp.headers_mut().insert("retry-after", s.into());
    }
    resp
}

/// The public half of `tests/fixtures/vertex/service-account.json` (PKCS#1 DER, base64).
fn service_account_public_key() -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(fixture("vertex/service-account.pub.der.b64").trim())
        .unwrap()
}

/// Google's OAuth token endpoint for the JWT bearer grant: checks the assertion's RS256
/// signature against the test service account's public key and its claims, then issues a token.
async fn token(State(inner): State<Arc<Inner>>, body: String) -> Response {
    if inner.token_endless.load(Ordering::SeqCst) {
        inner.token_calls.fetch_add(1, Ordering::SeqCst);
        let block = Bytes::from(vec![b' '; 64 * 1024]);
        let body =
            futures_util::stream::once(async { Ok(Bytes::from_static(b"{\"access_token\": ")) })
                .chain(futures_util::stream::repeat_with(move || {
                    Ok::<_, std::io::Error>(block.clone())
                }));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(body))
            .unwrap();
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":")))
        .collect();
    let refuse = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse("unsupported grant_type");
    }
    let Some(jwt) = form.get("assertion") else {
        return refuse("no assertion");
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return refuse("malformed JWT");
    }
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        service_account_public_key(),
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    let Ok(sig) = b64.decode(parts[2]) else {
        return refuse("bad signature encoding");
    };
    if key.verify(signed.as_bytes(), &sig).is_err() {
        return refuse("Invalid JWT Signature.");
    }
    let header: Value =
        serde_json::from_slice(&b64.decode(parts[0]).unwrap_or_default()).unwrap_or(Value::Null);
    let claims: Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap_or_default()).unwrap_or(Value::Null);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ok = header["alg"] == "RS256"
        && claims["iss"] == "gateway@switchyard-test.iam.gserviceaccount.com"
        && claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        && claims["aud"]
            .as_str()
            .is_some_and(|a| a.ends_with("/token"))
        && claims["iat"].as_u64().is_some_and(|t| t.abs_diff(now) < 60)
        && claims["exp"].as_u64().is_some_and(|t| t > now);
    if !ok {
        return refuse("bad claims");
    }
    let n = inner.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
    let lifetime = match inner.token_lifetime.load(Ordering::SeqCst) {
        0 => 3600,
        s => s,
    };
    axum::Json(json!({"access_token": format!("ya29.mock-token-{n}"), "expires_in": lifetime, "token_type": "Bearer"})).into_response()
}
