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
use crate::request::ToolGate;

/// Finds the tool gate of a `/mcp` caller from its HTTP headers: `Ok(None)` for an ungoverned
/// caller, `Err` (the reason) for a refused one.
pub type Gatekeeper =
    Arc<dyn Fn(&axum::http::HeaderMap) -> Result<Option<Arc<dyn ToolGate>>, String> + Send + Sync>;

/// The aggregating server handler; one per MCP session, all sharing the hub.
#[derive(Clone)]
pub struct Aggregator {
    hub: Arc<McpHub>,
    gatekeeper: Gatekeeper,
}

impl Aggregator {
    /// The caller's gate, from the HTTP request rmcp puts in the context.
    fn gate(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<Option<Arc<dyn ToolGate>>, ErrorData> {
        let empty = axum::http::HeaderMap::new();
        let headers = context
            .extensions
            .get::<axum::http::request::Parts>()
            .map_or(&empty, |p| &p.headers);
        (self.gatekeeper)(headers).map_err(|e| ErrorData::invalid_request(e, None))
    }
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
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let gate = self.gate(&context)?;
        let tools = self
            .hub
            .tools()
            .into_iter()
            .filter(|t| t.available)
            .filter(|t| gate.as_ref().is_none_or(|g| g.allows(&t.name)))
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
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // A governed caller runs only its key's tools, counted toward its tool calls per minute.
        if let Some(g) = self.gate(&context)?
            && let Err(why) = g.check(&request.name).await
        {
            return Err(ErrorData::invalid_params(why.to_string(), None));
        }
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
    gatekeeper: Gatekeeper,
) -> StreamableHttpService<Aggregator, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || {
            Ok(Aggregator {
                hub: hub.clone(),
                gatekeeper: gatekeeper.clone(),
            })
        },
        LocalSessionManager::default().into(),
        config,
    )
}
