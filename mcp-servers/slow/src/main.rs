//! `mcp-slow`: a stdio MCP server that misbehaves on demand, for the gateway's timeout, crash and
//! reconnect tests. Written with rmcp.
//!
//! Tools: `echo` (answers at once), `sleep` (answers after `ms` milliseconds), `fail` (a tool
//! error with the given message), `crash` (the process exits with status 3 before answering),
//! `hang` (never answers).

use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

/// Text to send back.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Text {
    /// The text.
    text: String,
}

/// How long to wait.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Sleep {
    /// Milliseconds.
    ms: u64,
}

/// The server.
#[derive(Debug, Clone)]
struct Slow {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Slow {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Return the text unchanged")]
    async fn echo(&self, Parameters(t): Parameters<Text>) -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text(t.text)])
    }

    #[tool(description = "Wait `ms` milliseconds, then answer")]
    async fn sleep(&self, Parameters(s): Parameters<Sleep>) -> CallToolResult {
        tokio::time::sleep(Duration::from_millis(s.ms)).await;
        CallToolResult::success(vec![ContentBlock::text(format!("slept {} ms", s.ms))])
    }

    #[tool(description = "Fail with the given message (a tool error)")]
    async fn fail(&self, Parameters(t): Parameters<Text>) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(t.text)])
    }

    #[tool(description = "Exit the server process without answering")]
    async fn crash(&self) -> CallToolResult {
        eprintln!("mcp-slow: crashing on request");
        std::process::exit(3)
    }

    #[tool(description = "Never answer")]
    async fn hang(&self) -> CallToolResult {
        std::future::pending::<()>().await;
        CallToolResult::success(Vec::new())
    }
}

#[tool_handler(router = self.tool_router, name = "mcp-slow", version = "0.1.0")]
impl ServerHandler for Slow {}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let served = match Slow::new().serve(rmcp::transport::stdio()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-slow: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match served.waiting().await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-slow: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
