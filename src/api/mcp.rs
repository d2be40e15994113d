//! MCP administration under `/api/mcp` (behind the admin token): register, list, remove servers;
//! list tools; try one (`POST /api/mcp/tools/{name}/call`, body: the arguments object). Header
//! and environment values are never shown. A request that carries a virtual key (`x-api-key` or
//! `api-key` next to the admin token) sees and runs only that key's tools, and each call counts
//! toward its `tool_calls_per_minute`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::json_error as fail;
use crate::app::AppState;
use crate::config::McpServerSpec;
use crate::error::GatewayError;

/// `/api/mcp/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers", get(list).post(register))
        .route("/servers/{name}", get(one).delete(remove))
        .route("/tools", get(tools))
        .route("/tools/{name}/call", post(call))
}

async fn list(State(state): State<AppState>) -> Response {
    Json(json!({"object": "list", "data": state.mcp.servers()})).into_response()
}

async fn one(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.mcp.server(&name) {
        Some(v) => Json(v).into_response(),
        None => fail(GatewayError::NotFound(format!(
            "no MCP server named `{name}`"
        ))),
    }
}

async fn register(State(state): State<AppState>, body: Body) -> Response {
    let spec: McpServerSpec = match super::read_json(&state, body).await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // A stdio server runs a command on this host: only an authenticated admin (or a config that
    // says so) may register one at run time.
    if spec.transport == "stdio"
        && state.config.server.admin_token.is_none()
        && !state.config.mcp.allow_stdio_registration
    {
        return fail(GatewayError::Forbidden {
            code: "stdio_registration_disabled",
            message: "registering a stdio MCP server runs a command on the gateway's host, so it needs [server] admin_token to be set (or [mcp] allow_stdio_registration = true); http and sse servers can be registered without it".into(),
        });
    }
    match state.mcp.register(spec).await {
        Ok(view) => (StatusCode::CREATED, Json(view)).into_response(),
        Err(e) => {
            tracing::info!(error = %e, "MCP server registration refused");
            fail(e.into())
        }
    }
}

async fn remove(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.mcp.remove(&name).await {
        Ok(()) => Json(json!({"deleted": name})).into_response(),
        Err(e) => fail(e.into()),
    }
}

async fn tools(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let gate = match super::caller_tool_gate(&state, &headers) {
        Ok(g) => g,
        Err(e) => return fail(e.into()),
    };
    let tools: Vec<_> = state
        .mcp
        .tools()
        .into_iter()
        .filter(|t| gate.as_ref().is_none_or(|g| g.allows(&t.name)))
        .collect();
    Json(json!({"object": "list", "data": tools})).into_response()
}

/// Runs one tool with the JSON body as its arguments, as the tool loop would (same timeout).
async fn call(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let gate = match super::caller_tool_gate(&state, &headers) {
        Ok(g) => g,
        Err(e) => return fail(e.into()),
    };
    let args: serde_json::Value = match super::read_json(&state, body).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if !args.is_object() {
        return fail(GatewayError::BadRequest(
            "the body must be the tool's arguments as a JSON object".into(),
        ));
    }
    if !state.mcp.tools().iter().any(|t| t.name == name) {
        return fail(GatewayError::NotFound(format!(
            "no MCP tool named `{name}` (see GET /api/mcp/tools)"
        )));
    }
    // Checked (and counted) only once the call is known to be well formed.
    if let Some(g) = &gate
        && let Err(why) = g.check(&name).await
    {
        return fail(tool_refusal(why));
    }
    let started = std::time::Instant::now();
    let r = state
        .mcp
        .call(&name, &args.to_string(), state.config.mcp.tool_timeout)
        .await;
    Json(json!({
        "tool": name,
        "outcome": r.outcome.label(),
        "text": r.text,
        "ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
    .into_response()
}

/// The HTTP error for a refused tool call.
fn tool_refusal(why: crate::request::ToolRefusal) -> GatewayError {
    use crate::governance::GovernanceError as G;
    use crate::request::ToolRefusal as R;
    GatewayError::Governance(match why {
        R::NotAllowed(m) => G::ToolNotAllowed(m),
        R::RateLimited {
            message,
            retry_after,
        } => G::RateLimited {
            message,
            retry_after,
            headers: crate::request::RateHeaders::default(),
        },
        R::Unavailable(m) => G::StoreUnavailable(m),
    })
}
