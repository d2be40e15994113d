//! The MCP layer: connections to registered MCP servers, their tools injected into chat requests,
//! the tool loop (streaming and not), and the gateway's own `/mcp` server.
//!
//! ```text
//! hub.rs        McpHub: registered servers (config + admin API, persisted in sled), tool catalog, calls
//! conn.rs       one supervised rmcp client per server: connect, ping, reconnect with backoff
//! sse_client.rs legacy HTTP+SSE client transport (rmcp has none)
//! naming.rs     server__tool names within ^[a-zA-Z0-9_-]{1,64}$
//! toolloop.rs   ToolLoop<B: ChatBackend>: inject, run gateway tools, call the model again
//! server.rs     /mcp: every registered tool, prefixed, over streamable HTTP
//! ```
//! This is the only module that imports rmcp.

pub mod conn;
pub mod hub;
pub mod naming;
pub mod server;
mod sse_client;
pub mod toolloop;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use axum::http::HeaderMap;

pub use hub::McpHub;
pub use toolloop::{Plan, ToolLoop};

/// Errors of the MCP layer's admin operations.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The registration is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A server with that name exists, or it cannot be changed here.
    #[error("{0}")]
    Conflict(String),
    /// No such server.
    #[error("no MCP server named `{0}`")]
    NotFound(String),
    /// The server could not be reached or did not speak MCP.
    #[error("cannot connect to MCP server `{name}`: {reason}")]
    Connect {
        /// Server name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error("the registration could not be saved: {0}")]
    Store(String),
}

/// `x-switchyard-mcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inject tools, run the model's calls of them, loop.
    Auto,
    /// Inject tools, return calls to the client.
    Inject,
    /// Nothing injected.
    Off,
}

impl Mode {
    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Inject => "inject",
            Self::Off => "off",
        }
    }
}

/// Per-request MCP controls, from headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpOptions {
    /// `x-switchyard-mcp` (default `auto`).
    pub mode: Mode,
    /// `x-switchyard-mcp-servers`: only these servers.
    pub servers: Option<Vec<String>>,
    /// `x-switchyard-mcp-tools`: only these prefixed tools.
    pub tools: Option<Vec<String>>,
    /// `x-switchyard-mcp-max-iterations`: at most this many tool rounds (never more than config).
    pub max_iterations: Option<u32>,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Auto,
            servers: None,
            tools: None,
            max_iterations: None,
        }
    }
}

fn list(h: &HeaderMap, name: &str) -> Result<Option<Vec<String>>, String> {
    let Some(v) = h.get(name) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| format!("{name} must be a comma-separated list of names"))?;
    Ok(Some(
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

impl McpOptions {
    /// Reads the `x-switchyard-mcp*` headers.
    pub fn from_headers(h: &HeaderMap) -> Result<Self, String> {
        let mut o = Self::default();
        if let Some(v) = h.get("x-switchyard-mcp") {
            let s = v.to_str().unwrap_or_default().trim().to_ascii_lowercase();
            o.mode = match s.as_str() {
                "auto" => Mode::Auto,
                "inject" => Mode::Inject,
                "off" => Mode::Off,
                _ => {
                    return Err(format!(
                        "x-switchyard-mcp must be `auto`, `inject` or `off`, got `{s}`"
                    ));
                }
            };
        }
        o.servers = list(h, "x-switchyard-mcp-servers")?;
        o.tools = list(h, "x-switchyard-mcp-tools")?;
        if let Some(v) = h.get("x-switchyard-mcp-max-iterations") {
            let s = v.to_str().unwrap_or_default().trim();
            o.max_iterations = Some(s.parse::<u32>().map_err(|_| {
                format!("x-switchyard-mcp-max-iterations must be a whole number >= 0, got `{s}`")
            })?);
        }
        Ok(o)
    }
}

/// What the tool loop did for one request; read for the response headers and the cache.
#[derive(Debug, Default)]
pub struct McpReport {
    tool_calls: AtomicU32,
    rounds: AtomicU32,
    limited: AtomicBool,
}

impl McpReport {
    /// Tools the gateway ran.
    pub fn tool_calls(&self) -> u32 {
        self.tool_calls.load(Ordering::Relaxed)
    }
    /// Tool rounds (model turns whose gateway calls were run).
    pub fn rounds(&self) -> u32 {
        self.rounds.load(Ordering::Relaxed)
    }
    /// Whether the loop stopped at its iteration bound.
    pub fn limited(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }
    fn add_round(&self, calls: usize) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.tool_calls
            .fetch_add(u32::try_from(calls).unwrap_or(u32::MAX), Ordering::Relaxed);
    }
    fn set_limited(&self) {
        self.limited.store(true, Ordering::Relaxed);
    }
}
