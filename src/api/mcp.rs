//! MCP administration under `/api/mcp` (behind the admin token): register, list, remove servers;
//! list tools. Header and environment values are never shown.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;
use crate::config::McpServerSpec;
use crate::error::GatewayError;

/// `/api/mcp/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers", get(list).post(register))
        .route("/servers/{name}", get(one).delete(remove))
        .route("/tools", get(tools))
}

fn fail(e: GatewayError) -> Response {
    let (status, _, _) = e.parts();
    (status, Json(e.body())).into_response()
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
    match state.mcp.register(spec).await {
        Ok(view) => (StatusCode::CREATED, Json(view)).into_response(),
        Err(e) => {
            tracing::info!(error = %e, "MCP server registration refused");
            fail(e.into())
        }
    }
}

async fn remove(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.mcp.remove(&name) {
        Ok(()) => Json(json!({"deleted": name})).into_response(),
        Err(e) => fail(e.into()),
    }
}

async fn tools(State(state): State<AppState>) -> Response {
    Json(json!({"object": "list", "data": state.mcp.tools()})).into_response()
}
