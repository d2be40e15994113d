//! `mcp-kv`: a streamable HTTP MCP server (rmcp, mounted in axum at `/mcp`) holding a small
//! key-value store shared by every session, for the gateway's HTTP-transport tests and the docker
//! compose example.
//!
//! `mcp-kv [--listen 127.0.0.1:9100]`; prints `mcp-kv listening on http://ADDR/mcp` to stderr
//! (with port 0 the real port). When `MCP_KV_TOKEN` is set, requests must carry
//! `Authorization: Bearer <token>` (401 otherwise). Tools: `set`, `get`, `list`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

/// A key and a value.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Set {
    /// Key.
    key: String,
    /// Value.
    value: String,
}

/// A key.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Key {
    /// Key.
    key: String,
}

type Map = Arc<Mutex<BTreeMap<String, String>>>;

/// One session's handler; the map is shared.
#[derive(Debug, Clone)]
struct Kv {
    map: Map,
    tool_router: ToolRouter<Self>,
}

fn text(s: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s.into())])
}

#[tool_router]
impl Kv {
    fn new(map: Map) -> Self {
        Self {
            map,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Store a value under a key")]
    async fn set(&self, Parameters(s): Parameters<Set>) -> CallToolResult {
        match self.map.lock() {
            Ok(mut m) => {
                m.insert(s.key.clone(), s.value);
                text(format!("stored {}", s.key))
            }
            Err(_) => CallToolResult::error(vec![ContentBlock::text("store unavailable")]),
        }
    }

    #[tool(description = "Read the value stored under a key")]
    async fn get(&self, Parameters(k): Parameters<Key>) -> CallToolResult {
        match self.map.lock().ok().and_then(|m| m.get(&k.key).cloned()) {
            Some(v) => text(v),
            None => {
                CallToolResult::error(vec![ContentBlock::text(format!("no value for {}", k.key))])
            }
        }
    }

    #[tool(description = "List the stored keys")]
    async fn list(&self) -> CallToolResult {
        let keys: Vec<String> = self
            .map
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        text(keys.join(","))
    }
}

#[tool_handler(router = self.tool_router, name = "mcp-kv", version = "0.1.0")]
impl ServerHandler for Kv {}

async fn require_token(req: Request, next: Next) -> Response {
    let Ok(token) = std::env::var("MCP_KV_TOKEN") else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(token.as_str()) {
        return next.run(req).await;
    }
    (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response()
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9100));
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().map(|v| v.parse())) {
            ("--listen", Some(Ok(addr))) => listen = addr,
            _ => {
                eprintln!("usage: mcp-kv [--listen ADDR]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let map: Map = Arc::default();
    let service = StreamableHttpService::new(
        move || Ok(Kv::new(map.clone())),
        LocalSessionManager::default().into(),
        // Reachable by name inside docker compose, not only on loopback.
        StreamableHttpServerConfig::default().disable_allowed_hosts(),
    );
    let app = axum::Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn(require_token));
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mcp-kv: cannot listen on {listen}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        eprintln!("mcp-kv listening on http://{addr}/mcp");
    }
    match axum::serve(listener, app).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-kv: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
