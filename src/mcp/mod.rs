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
mod relay;
pub mod server;
mod sse_client;
pub mod toolloop;

pub use crate::request::{McpOptions, McpReport, Mode};
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
