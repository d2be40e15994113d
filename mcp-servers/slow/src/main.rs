//! `mcp-slow`: a stdio MCP server that misbehaves on demand, for the gateway's timeout, crash and
//! reconnect tests. Written with rmcp.
//!
//! Tools: `echo` (answers at once), `sleep` (answers after `ms` milliseconds), `fail` (a tool
//! error with the given message), `crash` (the process exits with status 3 before answering),
//! `hang` (never answers).
//!
//! `mcp-slow --extra-names` adds three tools whose names test the gateway's naming rules:
//! `dotted.name` and `dotted_name` (both become `<server>__dotted_name`, a collision unless
//! `allowed_tools` picks one) and a 70-character name that must be shortened. Each answers with
//! its own name.

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

/// The 70-character tool name added by `--extra-names`.
const LONG_NAME: &str = "echo_with_a_deliberately_long_name_so_that_the_gateway_must_shorten_it";

fn add_named_tools(router: &mut ToolRouter<Slow>) {
    use rmcp::handler::server::router::tool::ToolRoute;
    use rmcp::model::Tool;
    for name in ["dotted.name", "dotted_name", LONG_NAME] {
        let schema = serde_json::json!({"type": "object", "properties": {}});
        let schema = match schema {
            serde_json::Value::Object(m) => std::sync::Arc::new(m),
            _ => std::sync::Arc::default(),
        };
        let tool = Tool::new(name, "Answer with this tool's own name", schema);
        router.add_route(ToolRoute::new_dyn(tool, move |_ctx| {
            Box::pin(
                async move { Ok(CallToolResult::success(vec![ContentBlock::text(name)]).into()) },
            )
        }));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut server = Slow::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--extra-names" => add_named_tools(&mut server.tool_router),
            _ => {
                eprintln!("usage: mcp-slow [--extra-names]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let served = match server.serve(rmcp::transport::stdio()).await {
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
