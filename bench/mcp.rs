//! MCP tool-loop benchmark: the real `mcp-calculator` over stdio, a fake model.
//!
//! `cargo build --release -p mcp-calculator && cargo run --release --example mcp_bench [-- --n 2000]`
//!
//! 1. stdio tool round trip: `McpHub::call("calc__add")` one at a time (JSON-RPC over the child's
//!    pipes, rmcp on both sides), p50/p90/p99.
//! 2. Gateway time per loop iteration: `ToolLoop` around an in-process backend that answers at
//!    once (no model time), for 0, 1 and 4 tool rounds; per-iteration gateway time is
//!    `(t(4) - t(0)) / 4 - tool round trip p50`.
//! 3. End to end over HTTP on 127.0.0.1: the real gateway, a fake OpenAI-compatible upstream
//!    (axum) that calls `calc__add` until the conversation has `rounds` results; 0 and 2 rounds
//!    sequentially, then 64 concurrent requests of 2 rounds each against the one server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::app::Server;
use switchyard::chat::{
    ChatRequest, ChatResponse, Choice, Extra, FunctionCall, Message, Role, ToolCall, Usage,
};
use switchyard::config::Config;
use switchyard::mcp::{McpHub, McpOptions, Plan, ToolLoop};
use switchyard::request::{ChatBackend, ChatBody, ChatOutcome, RequestContext, Served};
use switchyard::router::RouterError;
use switchyard::telemetry::metrics::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn line(name: &str, v: &[f64]) {
    println!(
        "{name:<48} n={:<5} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms",
        v.len(),
        pct(v.to_vec(), 0.5),
        pct(v.to_vec(), 0.9),
        pct(v.to_vec(), 0.99)
    );
}

fn calculator() -> String {
    let exe = std::env::current_exe().unwrap();
    // target/release/examples/mcp_bench -> target/release/mcp-calculator
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("mcp-calculator");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release -p mcp-calculator",
        bin.display()
    );
    bin.display().to_string()
}

/// How many tool results the conversation has since the user spoke, and how many it wants
/// (the user message says `rounds=K`).
fn progress(messages: &[Value]) -> (usize, usize) {
    let want = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .and_then(|s| s.strip_prefix("rounds="))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let have = messages.iter().filter(|m| m["role"] == "tool").count();
    (have, want)
}

/// The fake model's turn, in canonical form.
fn turn(messages: &[Value], id: u64) -> ChatResponse {
    let (have, want) = progress(messages);
    let message = if have < want {
        Message {
            role: Role::Assistant,
            content: None,
            name: None,
            tool_calls: Some(vec![ToolCall {
                id: format!("call_{id}_{have}"),
                kind: "function".into(),
                function: FunctionCall {
                    name: "calc__add".into(),
                    arguments: r#"{"a":2,"b":3}"#.into(),
                },
            }]),
            tool_call_id: None,
            extra: Extra::new(),
        }
    } else {
        Message::text(Role::Assistant, format!("done after {have} rounds"))
    };
    let finish = if have < want { "tool_calls" } else { "stop" };
    ChatResponse {
        id: format!("chatcmpl-{id}"),
        object: "chat.completion".into(),
        created: 1_700_000_000,
        model: "m".into(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish.into()),
            extra: Extra::new(),
        }],
        usage: Some(Usage::new(10, 5)),
        extra: Extra::new(),
    }
}

/// Answers at once, in process.
struct Instant0;

impl ChatBackend for Instant0 {
    type Error = RouterError;

    async fn chat(
        &self,
        req: &ChatRequest,
        _ctx: &RequestContext,
    ) -> Result<ChatOutcome, RouterError> {
        let msgs: Vec<Value> = req
            .messages
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect();
        Ok(ChatOutcome {
            served: Served {
                provider: "fake".into(),
                model: "m".into(),
                attempts: 1,
            },
            body: ChatBody::Complete(Box::new(turn(&msgs, 1))),
            cache: None,
            mcp: None,
            json: None,
        })
    }
}

async fn upstream() -> SocketAddr {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|body: axum::Json<Value>| async move {
            let msgs = body.0["messages"].as_array().cloned().unwrap_or_default();
            axum::Json(serde_json::to_value(turn(&msgs, fastrand::u64(..))).unwrap())
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

fn request(rounds: usize) -> ChatRequest {
    ChatRequest {
        model: "fake/m".into(),
        messages: vec![Message::text(Role::User, format!("rounds={rounds}"))],
        ..ChatRequest::default()
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let calc = calculator();
    let server_toml = format!("[[mcp.servers]]\nname = \"calc\"\ncommand = \"{calc}\"\n");

    // 1. The hub alone.
    let cfg = Config::parse(&server_toml, &|_| None).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let hub = McpHub::start(
        cfg.mcp.clone(),
        None,
        None,
        Arc::new(Metrics::new()),
        TaskTracker::new(),
        CancellationToken::new(),
        reqwest::Client::new(),
    );
    while hub.tools().iter().all(|t| !t.available) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let timeout = Duration::from_secs(10);
    for _ in 0..200 {
        hub.call("calc__add", r#"{"a":2,"b":3}"#, timeout).await;
    }
    let mut rt = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = hub.call("calc__add", r#"{"a":2,"b":3}"#, timeout).await;
        rt.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.text, "5");
    }
    println!("== stdio tool round trip (McpHub::call -> mcp-calculator)");
    line("calc__add", &rt);
    let tool_p50 = pct(rt.clone(), 0.5);

    // 2. The loop around an instant backend.
    println!("\n== tool loop, in-process backend that answers at once");
    let backend = Arc::new(Instant0);
    let ctx = RequestContext {
        request_id: "bench".into(),
        deadline: Instant::now() + Duration::from_secs(3600),
        cache: Ok(Default::default()),
        mcp: Ok(McpOptions::default()),
        spent: Default::default(),
        credential: None,
        tool_gate: None,
        tool_hooks: None,
        raw_answer: false,
    };
    let mut p50 = Vec::new();
    for rounds in [0usize, 1, 4] {
        let mut v = Vec::with_capacity(n / 2);
        for i in 0..(n / 2 + 50) {
            let mut req = request(rounds);
            let t = Instant::now();
            let plan = Plan::prepare(&hub, &McpOptions::default(), None, &req)
                .unwrap()
                .unwrap();
            plan.inject(&mut req);
            let l = ToolLoop {
                backend: backend.clone(),
                hub: hub.clone(),
                plan,
            };
            let out = l.run(Box::new(req), &ctx).await.unwrap();
            if i >= 50 {
                v.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let ChatBody::Complete(r) = out.body else {
                panic!("not complete")
            };
            assert_eq!(
                r.choices[0].message.text_content(),
                format!("done after {rounds} rounds")
            );
        }
        line(&format!("{rounds} tool rounds"), &v);
        p50.push(pct(v, 0.5));
    }
    let per_iter = (p50[2] - p50[0]) / 4.0;
    println!(
        "per iteration: {:.3} ms, of which the tool round trip (p50) {:.3} ms -> gateway {:.3} ms",
        per_iter,
        tool_p50,
        per_iter - tool_p50
    );

    // 3. End to end over HTTP.
    println!("\n== end to end over HTTP (gateway + fake upstream on 127.0.0.1)");
    let up = upstream().await;
    let toml = format!(
        "[[providers]]\nname = \"fake\"\nkind = \"openai-compatible\"\nbase_url = \"http://{up}/v1\"\nkeys = [\"k\"]\n\n[cache]\nenabled = false\n\n{server_toml}"
    );
    let mut cfg = Config::parse(&toml, &|_| None).unwrap();
    let data = std::env::temp_dir().join(format!("switchyard-mcp-bench-{}", std::process::id()));
    cfg.server.data_dir = data.clone();
    let server = Server::start(cfg, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let url = format!("http://{}/v1/chat/completions", server.addr);
    let http = reqwest::Client::new();
    let servers_url = format!("http://{}/api/mcp/servers", server.addr);
    loop {
        let v: Value = http
            .get(&servers_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"][0]["status"] == "connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = |rounds: usize| json!({"model": "fake/m", "messages": [{"role": "user", "content": format!("rounds={rounds}")}]});
    let mut http_p50 = Vec::new();
    for rounds in [0usize, 2] {
        let mut v = Vec::new();
        for i in 0..(n / 4 + 50) {
            let t = Instant::now();
            let r = http.post(&url).json(&body(rounds)).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let _: Value = r.json().await.unwrap();
            if i >= 50 {
                v.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        line(&format!("HTTP, {rounds} tool rounds, sequential"), &v);
        http_p50.push(pct(v, 0.5));
    }
    println!(
        "per iteration over HTTP (model call on loopback + tool + gateway): {:.3} ms",
        (http_p50[1] - http_p50[0]) / 2.0
    );
    let concurrent = 64;
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..concurrent {
        let http = http.clone();
        let url = url.clone();
        let b = body(2);
        handles.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http.post(&url).json(&b).send().await;
            let ok = match r {
                Ok(r) if r.status() == 200 => {
                    let v: Value = r.json().await.unwrap_or_default();
                    v["choices"][0]["message"]["content"] == "done after 2 rounds"
                }
                _ => false,
            };
            (ok, t.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (ok, ms) = h.await.unwrap();
        if !ok {
            errors += 1;
        }
        lat.push(ms);
    }
    let wall = started.elapsed().as_secs_f64();
    line(
        &format!("HTTP, {concurrent} concurrent, 2 rounds each"),
        &lat,
    );
    println!(
        "{concurrent} concurrent looping requests: {errors} errors, {} tool calls in {:.3} s",
        concurrent * 2,
        wall
    );
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(data);
}
