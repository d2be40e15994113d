//! Security and robustness, one test per finding of the outside suite (issue 11): secrets in
//! upstream errors on every path, cross-site and DNS-rebinding calls to the admin API, connection
//! timeouts and the connection cap, JSON error answers everywhere, the cache TTL bound, JSON-RPC id
//! reuse on `/mcp`, and a fuzz run of malformed requests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::FutureExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gateway::{Binary, Gateway, client};
use crate::mcp::server_bin;
use crate::mock::{Mock, Reply, serve};

/// The keys the gateway sends upstream; the echoing upstream puts them in its errors.
const KEY: &str = "sk-upstream-secret-0123456789abcdef";
const ANT_KEY: &str = "ant-upstream-secret-0123456789";

// === an upstream that echoes credentials ===

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn sse_body(events: &[String]) -> Response {
    let text: String = events.iter().map(|e| format!("{e}\n\n")).collect();
    ([("content-type", "text/event-stream")], text).into_response()
}

/// OpenAI chat: `fail` in the message -> a 500 echoing the Authorization header; streams send one
/// chunk, then an error event echoing it; otherwise an answer whose text echoes it.
async fn openai_chat(headers: HeaderMap, axum::Json(body): axum::Json<Value>) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if body["stream"] == json!(true) {
        let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial "}, "finish_reason": null}]});
        let err = json!({"error": {"message": format!("you sent authorization: {auth}"), "type": "server_error"}});
        return sse_body(&[format!("data: {chunk}"), format!("data: {err}")]);
    }
    if last_user_text(&body).contains("fail") {
        let err = json!({"error": {"message": format!("you sent authorization: {auth}"), "type": "server_error"}});
        return (StatusCode::BAD_REQUEST, axum::Json(err)).into_response();
    }
    axum::Json(json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("echo: {auth}")}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}))
    .into_response()
}

async fn openai_embeddings(headers: HeaderMap) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let err = json!({"error": {"message": format!("bad input; authorization was {auth}")}});
    (StatusCode::BAD_REQUEST, axum::Json(err)).into_response()
}

/// Anthropic messages (streams only): a text block started, then an `error` event echoing the key.
async fn anthropic_messages(headers: HeaderMap) -> Response {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let start = json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "stop_reason": null, "usage": {"input_tokens": 3, "output_tokens": 0}}});
    let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
    let delta = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial "}});
    let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": format!("x-api-key: {key} is overloaded")}});
    sse_body(&[
        format!("event: message_start\ndata: {start}"),
        format!("event: content_block_start\ndata: {block}"),
        format!("event: content_block_delta\ndata: {delta}"),
        format!("event: error\ndata: {err}"),
    ])
}

async fn echo_upstream() -> SocketAddr {
    serve(
        Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/embeddings", post(openai_embeddings))
            .route("/v1/messages", post(anthropic_messages)),
    )
    .await
}

fn echo_config(up: SocketAddr, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai-compatible\"\nbase_url = \"http://{up}/v1\"\nkeys = [\"{KEY}\"]\n\n\
         [[providers]]\nname = \"ant\"\nkind = \"anthropic\"\nbase_url = \"http://{up}\"\nkeys = [\"{ANT_KEY}\"]\n\n\
         [[mcp.servers]]\nname = \"calc\"\ntransport = \"stdio\"\ncommand = \"{}\"\n\n{extra}",
        server_bin("mcp-calculator").display()
    )
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(KEY) && !text.contains(ANT_KEY),
        "{what} shows a provider key: {text}"
    );
    assert!(
        !text.contains("0123456789"),
        "{what} shows part of a key: {text}"
    );
}

/// Every client-facing path: JSON errors, OpenAI SSE, Anthropic SSE (ingress and provider), the
/// tool loop, embeddings, a successful answer echoing the key, then the request log and metrics.
async fn run_every_path(url: &str) {
    let http = client();
    let post = |path: &str, body: Value, mcp: &str| {
        http.post(format!("{url}{path}"))
            .header("x-switchyard-mcp", mcp)
            .json(&body)
            .send()
    };
    let chat = |model: &str, text: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]});
    // JSON error.
    let r = post("/v1/chat/completions", chat("up/m", "fail", false), "off")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_clean("a JSON error", &r.text().await.unwrap());
    // A successful answer that echoes the key.
    let r = post("/v1/chat/completions", chat("up/m", "hi", false), "off")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content, "echo: Bearer ***");
    // OpenAI SSE from an OpenAI-format and from an Anthropic upstream.
    for model in ["up/m", "ant/m"] {
        let r = post("/v1/chat/completions", chat(model, "hi", true), "off")
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(
            text.contains("\"error\""),
            "{model}: no error event: {text}"
        );
        assert!(text.contains("partial"), "{text}");
        assert_clean(&format!("an OpenAI SSE error event ({model})"), &text);
    }
    // Anthropic SSE ingress.
    let body = json!({"model": "up/m", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = post("/anthropic/v1/messages", body, "off").await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("event: error"), "{text}");
    assert_clean("an Anthropic SSE error event", &text);
    // The tool loop (streamed and not).
    let r = post("/v1/chat/completions", chat("up/m", "hi", true), "auto")
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    assert_clean("a tool-loop stream", &text);
    let r = post("/v1/chat/completions", chat("up/m", "fail", false), "auto")
        .await
        .unwrap();
    assert_clean("a tool-loop JSON error", &r.text().await.unwrap());
    // Embeddings.
    let r = post(
        "/v1/embeddings",
        json!({"model": "up/e", "input": "x"}),
        "off",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert_clean("an embeddings error", &r.text().await.unwrap());
    // The request log and the metrics.
    let mut logs = String::new();
    for _ in 0..100 {
        logs = http
            .get(format!("{url}/api/logs?limit=100"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if serde_json::from_str::<Value>(&logs).unwrap()["data"]
            .as_array()
            .unwrap()
            .len()
            >= 9
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logs.contains("stream"), "{logs}");
    assert_clean("the request log", &logs);
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_clean("the metrics", &metrics);
}

#[tokio::test]
async fn upstream_errors_never_carry_the_provider_key_on_any_path() {
    let up = echo_upstream().await;
    let gw = Gateway::start(&echo_config(up, "[logs]\nlog_bodies = true\n")).await;
    run_every_path(&gw.url("")).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_log_line_and_the_traces_of_a_broken_stream_carry_no_key() {
    let (col, otlp) = crate::otel::collector().await;
    let up = echo_upstream().await;
    let bin = Binary::start_logged(&echo_config(
        up,
        &format!("[telemetry]\notlp_endpoint = \"http://{otlp}\"\n"),
    ))
    .await;
    run_every_path(&bin.url).await;
    bin.terminate();
    let mut bin = bin;
    bin.wait().await;
    let logs = bin.logs();
    assert!(
        logs.contains("upstream stream failed after the first byte"),
        "{logs}"
    );
    assert_clean("the log", &logs);
    let spans = format!("{:?}", col.spans.lock().unwrap());
    assert!(spans.contains("stream_error"), "no broken-stream span");
    assert_clean("the traces", &spans);
}

// === the admin API from a browser ===

fn marker_server(marker: &std::path::Path) -> Value {
    json!({"name": "x", "command": "/bin/sh", "args": ["-c", format!("touch {}", marker.display())]})
}

#[tokio::test]
async fn a_web_page_cannot_make_the_admin_api_run_a_command() {
    let gw = Gateway::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned-marker");
    let body = marker_server(&marker).to_string();
    let url = gw.url("/api/mcp/servers");
    let http = client();
    // The repro: text/plain (a "simple" request), a foreign Origin and Host.
    let r = http
        .post(&url)
        .header("content-type", "text/plain")
        .header("origin", "http://evil.example")
        .header("host", "evil.example")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "host_not_allowed");
    // Same host, but a cross-site simple request: text/plain, a form, no content type at all.
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut rb = http.post(&url).body(body.clone());
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unsupported_media_type");
    }
    // JSON from a foreign origin (only possible after a preflight the gateway does not grant).
    let r = http
        .post(&url)
        .header("origin", "http://evil.example")
        .json(&marker_server(&marker))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "cross_origin_forbidden");
    // Even same-origin JSON from loopback: no admin token, so no stdio registration.
    let r = http
        .post(&url)
        .json(&marker_server(&marker))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "stdio_registration_disabled");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin_token")
    );
    // A page served by the gateway itself (same origin) may read.
    let r = http
        .get(gw.url("/api/mcp/servers"))
        .header("origin", gw.url(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The foreign Host is refused on reads too, and on /mcp (as JSON-RPC).
    let r = http
        .get(gw.url("/api/providers"))
        .header("host", "evil.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(gw.url("/mcp"))
        .header("host", "evil.example")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    assert!(v["error"]["message"].as_str().unwrap().contains("Host"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!marker.exists(), "the command ran");
    gw.shutdown().await;
}

#[tokio::test]
async fn stdio_registration_needs_a_token_or_an_explicit_opt_in() {
    let calc =
        json!({"name": "calc", "command": server_bin("mcp-calculator").display().to_string()});
    // With a token: the right one (scheme in any case) registers it.
    let gw = Gateway::start("[server]\nadmin_token = \"adm-token-1\"\n").await;
    let http = client();
    let r = http
        .post(gw.url("/api/mcp/servers"))
        .json(&calc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for scheme in ["bearer", "BEARER"] {
        let r = http
            .get(gw.url("/api/mcp/servers"))
            .header("authorization", format!("{scheme} adm-token-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    let r = http
        .post(gw.url("/api/mcp/servers"))
        .header("authorization", "bearer adm-token-1")
        .json(&calc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    gw.shutdown().await;
    // Without a token, with the opt-in.
    let gw = Gateway::start("[mcp]\nallow_stdio_registration = true\n").await;
    let r = gw.post("/api/mcp/servers", &calc).await;
    assert_eq!(r.status(), 201);
    gw.shutdown().await;
}

/// A non-loopback address of this machine, if it has one.
fn lan_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn without_a_token_changes_come_only_from_loopback_and_cors_is_opt_in() {
    let mut cfg = switchyard::config::Config::parse(
        "[server]\nallowed_hosts = [\"*\"]\ncors_origins = [\"https://admin.example\"]\n",
        &|_| None,
    )
    .unwrap();
    cfg.cache.enabled = false;
    let dir = tempfile::tempdir().unwrap();
    cfg.server.data_dir = dir.path().to_owned();
    let server = switchyard::app::Server::start(cfg, Some("0.0.0.0:0".parse().unwrap()))
        .await
        .unwrap();
    let port = server.addr.port();
    let http = client();
    // CORS: the listed origin gets a preflight answer, another does not.
    let pre = |origin: &str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("http://127.0.0.1:{port}/api/cache/entries"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "DELETE")
        .send()
    };
    let r = pre("https://admin.example").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://admin.example"
    );
    let r = pre("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    if let Some(ip) = lan_ip() {
        let base = format!("http://{ip}:{port}");
        let r = http
            .get(format!("{base}/api/mcp/servers"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "reads are allowed");
        let r = http
            .delete(format!("{base}/api/mcp/servers/nope"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "admin_token_required");
    } else {
        println!("no non-loopback address here: the loopback-only check was not exercised");
    }
    let r = http
        .delete(format!("http://127.0.0.1:{port}/api/mcp/servers/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "loopback may change things");
    server.shutdown().await.unwrap();
}

// === connection timeouts and the cap ===

/// Whether the peer closes the connection within `within` (reads and discards what it sends).
async fn closes_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn get_health(s: &mut TcpStream) -> String {
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_but_long_streams_are_not() {
    let mock = Mock::start().await;
    mock.always(Reply::Drip(Duration::from_millis(500)));
    let gw = Gateway::start(&format!(
        "[server]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 800\n\n[[providers]]\nname = \"mock\"\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\nkeys = [\"k\"]\n",
        mock.url()
    ))
    .await;
    // A connection that sends nothing.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    // One that sends half a request head.
    let mut partial = TcpStream::connect(gw.addr).await.unwrap();
    partial
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    assert!(closes_within(&mut silent, Duration::from_secs(3)).await);
    assert!(closes_within(&mut partial, Duration::from_secs(3)).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Keep-alive: still open after the header timeout, closed after the idle timeout.
    let mut ka = TcpStream::connect(gw.addr).await.unwrap();
    assert!(get_health(&mut ka).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(get_health(&mut ka).await.starts_with("HTTP/1.1 200"));
    let idle = Instant::now();
    assert!(!closes_within(&mut ka, Duration::from_millis(500)).await);
    assert!(closes_within(&mut ka, Duration::from_secs(3)).await);
    let waited = idle.elapsed();
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    // A stream whose chunks come 500 ms apart (longer than both timeouts) arrives whole.
    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "mock/gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let events = crate::gateway::sse(r).await;
    let (text, _, finish, _) = crate::gateway::fold_openai(&events);
    assert_eq!(text, crate::mock::TEXT);
    assert_eq!(finish.as_deref(), Some("stop"));
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let gw =
        Gateway::start("[server]\nmax_connections = 2\nheader_read_timeout_ms = 10000\n").await;
    let a = TcpStream::connect(gw.addr).await.unwrap();
    let _b = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let http = client();
    let blocked = http
        .get(gw.url("/health"))
        .timeout(Duration::from_millis(400))
        .send()
        .await;
    assert!(blocked.is_err(), "a third connection was served");
    drop(a);
    let r = http
        .get(gw.url("/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// === every error is JSON ===

async fn assert_json_error(r: reqwest::Response, status: u16, anthropic: bool, what: &str) {
    assert_eq!(r.status().as_u16(), status, "{what}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "{what}: {ct}");
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    assert!(v["error"]["code"].is_string(), "{what}: {v}");
    assert_eq!(v["type"] == "error", anthropic, "{what}: {v}");
}

#[tokio::test]
async fn wrong_methods_bad_paths_and_bad_queries_answer_json() {
    let gw = Gateway::start("").await;
    let http = client();
    // Every request carries a JSON body, so only the method, path or query can be wrong.
    let send = |method: &str, path: &str| {
        http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            gw.url(path),
        )
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .map(Result::unwrap)
    };
    for (method, path) in [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/chat/completions"),
        ("GET", "/openai/v1/chat/completions"),
        ("GET", "/openai/embeddings"),
        ("POST", "/v1/models"),
        ("DELETE", "/v1/models/x"),
        ("GET", "/v1/embeddings"),
        ("GET", "/anthropic/v1/messages"),
        ("POST", "/health"),
        ("POST", "/ready"),
        ("POST", "/metrics"),
        ("PUT", "/api/mcp/servers"),
        ("PUT", "/api/providers"),
        ("POST", "/api/logs"),
        ("PATCH", "/api/cache/stats"),
        ("GET", "/api/mcp/tools/x/call"),
        ("POST", "/"),
    ] {
        let r = send(method, path).await;
        let allow = r.headers().get("allow").is_some();
        assert!(allow, "{method} {path}: no Allow header");
        assert_json_error(
            r,
            405,
            path.starts_with("/anthropic"),
            &format!("{method} {path}"),
        )
        .await;
    }
    for (method, path) in [
        ("GET", "/v1/models/%ff"),
        ("GET", "/api/cache/entries/%ff"),
        ("DELETE", "/api/cache/entries/%ff"),
        ("GET", "/api/mcp/servers/%ff"),
        ("DELETE", "/api/mcp/servers/%ff"),
        ("GET", "/api/logs/%ff"),
        ("POST", "/api/mcp/tools/%ff/call"),
        ("GET", "/api/cache/entries?limit=abc"),
        ("GET", "/api/logs?limit=-1"),
        ("GET", "/api/usage?from=yesterday"),
    ] {
        let r = send(method, path).await;
        assert_json_error(r, 400, false, &format!("{method} {path}")).await;
    }
    let r = http
        .get(gw.url("/anthropic/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_json_error(r, 404, true, "unknown Anthropic path").await;
    gw.shutdown().await;
}

// === /mcp ===

const ACCEPT: &str = "application/json, text/event-stream";

/// Opens an MCP session on the gateway's `/mcp`; returns its id.
async fn mcp_session(gw: &Gateway) -> String {
    let http = client();
    let r = http
        .post(gw.url("/mcp"))
        .header("accept", ACCEPT)
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.text().await.unwrap();
    let r = http
        .post(gw.url("/mcp"))
        .header("accept", ACCEPT)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    session
}

#[tokio::test]
async fn mcp_errors_are_json_rpc_objects() {
    let gw = Gateway::start("").await;
    let http = client();
    let post = |body: &'static str, session: Option<&str>| {
        let mut rb = http
            .post(gw.url("/mcp"))
            .header("accept", ACCEPT)
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = session {
            rb = rb
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-06-18");
        }
        rb.send()
    };
    let expect = async |r: reqwest::Response, status: u16, code: i64| {
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
    };
    expect(post("{not json", None).await.unwrap(), 400, -32700).await;
    expect(post("", None).await.unwrap(), 400, -32700).await;
    expect(post("[1, 2]", None).await.unwrap(), 400, -32600).await;
    expect(post("{\"foo\": 1}", None).await.unwrap(), 400, -32600).await;
    let tools = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    expect(
        post(tools, Some("no-such-session")).await.unwrap(),
        404,
        -32001,
    )
    .await;
    let r = http
        .post(gw.url("/mcp"))
        .header("accept", ACCEPT)
        .header("content-type", "text/plain")
        .body(tools)
        .send()
        .await
        .unwrap();
    expect(r, 415, -32600).await;
    let r = http.put(gw.url("/mcp")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    gw.shutdown().await;
}

#[tokio::test]
async fn mcp_requests_reusing_an_id_in_flight_get_an_error_not_a_hang() {
    let gw = Gateway::start(&format!(
        "[[mcp.servers]]\nname = \"slow\"\ntransport = \"stdio\"\ncommand = \"{}\"\n",
        server_bin("mcp-slow").display()
    ))
    .await;
    let session = mcp_session(&gw).await;
    let http = client();
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow__sleep", "arguments": {"ms": 300}}});
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let rb = http
                .post(gw.url("/mcp"))
                .header("accept", ACCEPT)
                .header("mcp-session-id", &session)
                .header("mcp-protocol-version", "2025-06-18")
                .json(&call);
            tokio::spawn(async move {
                let r = rb.send().await.unwrap();
                let status = r.status().as_u16();
                let text = tokio::time::timeout(Duration::from_secs(10), r.text())
                    .await
                    .expect("an answer that never came")
                    .unwrap();
                (status, text)
            })
        })
        .collect();
    let mut answered = 0;
    for t in tasks {
        let (status, text) = t.await.unwrap();
        if status == 200 {
            assert!(text.contains("\"result\""), "{text}");
            answered += 1;
        } else {
            assert_eq!(status, 409, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], -32600);
            assert_eq!(v["id"], 1);
        }
    }
    assert!(answered >= 1);
    // The id is free again once its answer went out.
    let r = http
        .post(gw.url("/mcp"))
        .header("accept", ACCEPT)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&call)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("\"result\""));
    gw.shutdown().await;
}

// === the cache TTL bound ===

#[tokio::test]
async fn a_huge_cache_ttl_is_refused_naming_the_header_and_the_maximum() {
    let mock = Mock::start().await;
    let gw = Gateway::start(&format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\nkeys = [\"k\"]\n\n[cache]\nmode = \"exact\"\n",
        mock.url()
    ))
    .await;
    gw.wait_ready().await;
    let body =
        json!({"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "ttl"}]});
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-switchyard-cache-ttl", "18446744073709551615")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("x-switchyard-cache-ttl") && msg.contains("315360000"),
        "{msg}"
    );
    // The largest allowed TTL stores an entry that is then served.
    for expect in ["miss", "hit-exact"] {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-switchyard-cache-ttl", "315360000")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchyard-cache"], expect);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.shutdown().await;
}

// === fuzz ===

const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/openai/v1/chat/completions",
    "/openai/chat/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/mock/gpt-4o-mini",
    "/anthropic/v1/messages",
    "/api/providers",
    "/api/routes",
    "/api/mcp/servers",
    "/api/mcp/servers/x",
    "/api/mcp/tools",
    "/api/mcp/tools/x__y/call",
    "/api/cache/stats",
    "/api/cache/entries",
    "/api/cache/whatif",
    "/api/logs",
    "/api/usage",
    "/mcp",
    "/health",
    "/ready",
    "/metrics",
    "/",
    "/ui/session",
];

const BODIES: &[&str] = &[
    r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    r#"{"model":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    r#"{"model":"mock/gpt-4o-mini","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#,
    r#"{"model":"mock/gpt-4o-mini","input":"hi"}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    r#"{"name":"x","transport":"http","url":"http://127.0.0.1:9/mcp"}"#,
    r#"{"a":1}"#,
];

/// Mangles a body: truncates it, swaps a type, injects odd bytes or nesting.
fn mangle(rng: &mut fastrand::Rng, body: &str) -> Vec<u8> {
    let mut b = body.as_bytes().to_vec();
    match rng.u8(0..9) {
        0 => b.truncate(rng.usize(0..=b.len())),
        1 => {
            let s = String::from_utf8_lossy(&b)
                .replace("\"hi\"", "42")
                .replace("\"user\"", "null");
            b = s.into_bytes();
        }
        2 => {
            let i = rng.usize(0..=b.len());
            b.insert(i, [0xff, b'"', b'}', b'\\', 0][rng.usize(0..5)]);
        }
        3 => b = format!("{}{}", "[".repeat(rng.usize(1..3000)), body).into_bytes(),
        4 => b = String::from_utf8_lossy(&b).replace(":", ":[").into_bytes(),
        5 => b = b"\xef\xbb\xbf".iter().copied().chain(b).collect(),
        6 => b = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect(),
        7 => {
            let s =
                String::from_utf8_lossy(&b).replace("\"messages\"", "\"messages\":[],\"messages\"");
            b = s.into_bytes();
        }
        _ => {}
    }
    b
}

#[tokio::test]
async fn thousands_of_malformed_requests_get_json_errors_and_no_5xx() {
    let mock = Mock::start().await;
    let gw = Gateway::start(&format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\nkeys = [\"k\"]\n\n[cache]\nmode = \"exact\"\n",
        mock.url()
    ))
    .await;
    gw.wait_ready().await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FROB",
    ];
    let content_types = [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json\u{0}",
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..3000 {
        let mut path = PATHS[rng.usize(0..PATHS.len())].to_owned();
        match rng.u8(0..12) {
            0 => path.push_str("/%ff%fe"),
            1 => path.push_str("?limit=abc&cursor=%zz&threshold=NaN"),
            2 => path.push_str(&"/x".repeat(rng.usize(1..200))),
            3 => path = path.replace('/', "//"),
            _ => {}
        }
        let method = if rng.bool() {
            "POST"
        } else {
            methods[rng.usize(0..methods.len())]
        };
        let pick = BODIES[rng.usize(0..BODIES.len())];
        let body = mangle(&mut rng, pick);
        let mut rb = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                gw.url(&path),
            )
            .header("x-switchyard-mcp", "off")
            .body(body);
        let ct = content_types[rng.usize(0..content_types.len())];
        if let Ok(v) = reqwest::header::HeaderValue::from_str(ct) {
            rb = rb.header("content-type", v);
        }
        match rng.u8(0..8) {
            0 => rb = rb.header("x-switchyard-cache-ttl", "-1"),
            1 => rb = rb.header("authorization", "bearer"),
            2 => rb = rb.header("accept", "text/event-stream"),
            3 => rb = rb.header("x-request-id", "x".repeat(500)),
            4 => rb = rb.header("mcp-session-id", "nope"),
            _ => {}
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i} ({method} {path}): {e}"));
        let status = r.status().as_u16();
        *statuses.entry(status).or_insert(0) += 1;
        assert!(status < 500, "request {i}: {method} {path} -> {status}");
        if status >= 400 && method != "HEAD" {
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let text = r.text().await.unwrap();
            assert!(
                ct.starts_with("application/json") && serde_json::from_str::<Value>(&text).is_ok(),
                "request {i}: {method} {path} -> {status} {ct}: {text}"
            );
        }
    }
    println!("statuses: {statuses:?}");
    assert!(statuses.keys().any(|s| *s < 300), "nothing succeeded");
    let r = http.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown().await;
}
