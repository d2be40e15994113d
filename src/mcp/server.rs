//! `/mcp`: the gateway as an MCP server (streamable HTTP). It lists every registered server's
//! tools under their prefixed names and runs calls through the hub (same timeouts, metrics and
//! logs as the tool loop).

use std::sync::Arc;

use rmcp::ErrorData;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::McpHub;
use super::conn::CallOutcome;

/// The aggregating server handler; one per MCP session, all sharing the hub.
#[derive(Clone)]
pub struct Aggregator {
    hub: Arc<McpHub>,
}

impl ServerHandler for Aggregator {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("switchyard", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools of every MCP server registered with this Switchyard gateway, named server__tool.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self
            .hub
            .tools()
            .into_iter()
            .filter(|t| t.available)
            .map(|t| {
                let schema = match t.input_schema {
                    serde_json::Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                let mut tool =
                    Tool::new(t.name, t.description.unwrap_or_default(), Arc::new(schema));
                tool.title = Some(format!("{} ({})", t.tool, t.server));
                tool
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request
            .arguments
            .map(serde_json::Value::Object)
            .map(|v| v.to_string())
            .unwrap_or_default();
        let r = self
            .hub
            .call(&request.name, &args, self.hub.tool_timeout())
            .await;
        let content = vec![ContentBlock::text(r.text)];
        let result = match r.outcome {
            CallOutcome::Ok => CallToolResult::success(content),
            _ => CallToolResult::error(content),
        };
        Ok(result.into())
    }
}

/// The tower service mounted at `/mcp`.
/// `Host` and `Origin` are checked in front of it (`api::origin::protect_mcp`), with the same
/// policy as the admin API, so rmcp's own host list is not used.
pub fn service(
    hub: Arc<McpHub>,
    shutdown: &CancellationToken,
) -> StreamableHttpService<Aggregator, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(Aggregator { hub: hub.clone() }),
        LocalSessionManager::default().into(),
        config,
    )
}
