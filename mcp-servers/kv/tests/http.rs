//! mcp-kv over streamable HTTP, driven with raw MCP JSON-RPC POSTs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(token: Option<&str>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-kv"));
    cmd.args(["--listen", "127.0.0.1:0"]).stderr(Stdio::piped());
    match token {
        Some(t) => cmd.env("MCP_KV_TOKEN", t),
        None => cmd.env_remove("MCP_KV_TOKEN"),
    };
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    Server { child, url }
}

/// One MCP session: posts JSON-RPC, reads a JSON or SSE answer.
struct Session {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    id: Option<String>,
}

impl Session {
    async fn post(&mut self, msg: Value) -> (u16, Option<Value>) {
        let mut rb = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .json(&msg);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        if let Some(id) = &self.id {
            rb = rb.header("mcp-session-id", id);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        if let Some(id) = r.headers().get("mcp-session-id") {
            self.id = Some(id.to_str().unwrap().to_owned());
        }
        let body = r.text().await.unwrap();
        let json = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .chain(std::iter::once(body.as_str()))
            .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok());
        (status, json)
    }

    async fn open(url: &str, token: Option<&str>) -> (Self, Value) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut s = Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            token: token.map(str::to_owned),
            id: None,
        };
        let (status, init) = s
            .post(
                json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "http-test", "version": "0"}}}),
            )
            .await;
        assert_eq!(status, 200);
        s.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        (s, init.unwrap()["result"].clone())
    }

    async fn tool(&mut self, name: &str, args: Value) -> Value {
        let (status, v) = self
            .post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                         "params": {"name": name, "arguments": args}}))
            .await;
        assert_eq!(status, 200);
        v.unwrap()["result"].clone()
    }
}

#[tokio::test]
async fn sessions_share_the_store() {
    let server = start(None);
    let (mut a, init) = Session::open(&server.url, None).await;
    assert_eq!(init["serverInfo"]["name"], "mcp-kv");
    let r = a
        .tool("set", json!({"key": "colour", "value": "blue"}))
        .await;
    assert_eq!(r["content"][0]["text"], "stored colour");
    let (mut b, _) = Session::open(&server.url, None).await;
    assert_ne!(a.id, b.id);
    let r = b.tool("get", json!({"key": "colour"})).await;
    assert_eq!(r["content"][0]["text"], "blue");
    let r = b.tool("get", json!({"key": "size"})).await;
    assert_eq!(r["isError"], true);
    let r = b.tool("list", json!({})).await;
    assert_eq!(r["content"][0]["text"], "colour");
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let server = start(Some("s3cret"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::Client::new()
        .post(&server.url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (mut s, _) = Session::open(&server.url, Some("s3cret")).await;
    let r = s.tool("list", json!({})).await;
    assert_eq!(r["content"][0]["text"], "");
}
