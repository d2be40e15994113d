//! `mcp-calculator`: a stdio MCP server with arithmetic tools, written with rmcp. Used by the
//! docs (CONTRACT's `[[mcp.servers]]` example), examples and the gateway's MCP tests.
//!
//! Tools: `add`, `sub`, `mul`, `div` (a division by zero is a tool error the model can read),
//! and `sqrt`.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;

/// Two operands.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Pair {
    /// First operand.
    a: f64,
    /// Second operand.
    b: f64,
}

/// One operand.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Single {
    /// The number.
    x: f64,
}

/// The server: stateless, so every clone is the same calculator.
#[derive(Debug, Clone)]
struct Calculator {
    tool_router: ToolRouter<Self>,
}

fn number(v: f64) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(v.to_string())])
}

#[tool_router]
impl Calculator {
    fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Add two numbers: a + b")]
    async fn add(&self, Parameters(p): Parameters<Pair>) -> CallToolResult {
        number(p.a + p.b)
    }

    #[tool(description = "Subtract two numbers: a - b")]
    async fn sub(&self, Parameters(p): Parameters<Pair>) -> CallToolResult {
        number(p.a - p.b)
    }

    #[tool(description = "Multiply two numbers: a * b")]
    async fn mul(&self, Parameters(p): Parameters<Pair>) -> CallToolResult {
        number(p.a * p.b)
    }

    #[tool(description = "Divide two numbers: a / b (b must not be 0)")]
    async fn div(&self, Parameters(p): Parameters<Pair>) -> CallToolResult {
        if p.b == 0.0 {
            return CallToolResult::error(vec![ContentBlock::text("division by zero")]);
        }
        number(p.a / p.b)
    }

    #[tool(description = "Square root of x (x must not be negative)")]
    async fn sqrt(&self, Parameters(p): Parameters<Single>) -> CallToolResult {
        if p.x < 0.0 {
            return CallToolResult::error(vec![ContentBlock::text(
                "square root of a negative number",
            )]);
        }
        number(p.x.sqrt())
    }
}

#[tool_handler(router = self.tool_router, name = "mcp-calculator", version = "0.1.0")]
impl ServerHandler for Calculator {}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let served = match Calculator::new().serve(rmcp::transport::stdio()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-calculator: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match served.waiting().await {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-calculator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
