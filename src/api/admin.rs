//! Admin JSON API under `/api` (bearer `admin_token` when one is set). Never shows a secret.

use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::middleware;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::AppState;

/// `/api/*` routes behind the token check.
pub fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route(
            "/providers",
            get(providers).merge(super::config::create(crate::config::layer::Kind::Provider)),
        )
        .route(
            "/routes",
            get(routes_list).merge(super::config::create(crate::config::layer::Kind::Route)),
        )
        .merge(super::config::routes())
        .route("/plugins", get(plugins))
        .route("/status", get(status))
        .route("/config/reload", axum::routing::post(reload))
        .nest("/cache", super::cache::routes())
        .nest("/mcp", super::mcp::routes())
        .merge(super::logs::routes())
        .merge(super::governance::routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::origin::protect_admin,
        ));
    if state.hosts.cors_origins().is_empty() {
        api
    } else {
        api.layer(cors(&state))
    }
}

/// `GET /api/status`: the version, what is in service (providers, routes, the runtime
/// configuration's version, MCP servers, plugins) and the backing services.
async fn status(State(state): State<AppState>) -> Json<Value> {
    let table = state.router.table();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "providers": table.providers.len(),
        "routes": table.routes.len(),
        "config_version": state.runtime.version(),
        "mcp_servers": state.mcp.servers().len(),
        "plugins": state.plugins.views().len(),
        "backing": super::backing(&state).await,
    }))
}

/// `GET /api/plugins`: the loaded plugins in order, their hooks, scope, `on_error`, and per hook
/// the calls, errors, blocks and recent p50/p99 time.
async fn plugins(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"data": state.plugins.views()}))
}

/// `POST /api/config/reload`: re-reads the config file; applies its providers and routes
/// atomically, or changes nothing and lists every problem (400 `invalid_config`).
async fn reload(State(state): State<AppState>) -> axum::response::Response {
    use super::config::problem;
    use crate::app::ReloadError;
    use crate::config::ConfigError;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    match state.reload().await {
        Ok(r) => Json(json!({"reloaded": r})).into_response(),
        Err(e @ ReloadError::NoFile) => problem(
            StatusCode::CONFLICT,
            "no_config_file",
            e.to_string(),
            json!([]),
        ),
        Err(ReloadError::Invalid(ConfigError::Invalid(issues))) => {
            let list: Vec<Value> = issues
                .iter()
                .map(|i| json!({"path": i.path, "message": i.message}))
                .collect();
            let message = format!(
                "the config file has {} problem(s); nothing was changed: {}",
                issues.len(),
                issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            problem(
                StatusCode::BAD_REQUEST,
                "invalid_config",
                message,
                Value::Array(list),
            )
        }
        Err(ReloadError::Invalid(e)) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "config_unreadable",
            format!("{e}; nothing was changed"),
            json!([]),
        ),
    }
}

/// CORS for the origins in `[server] cors_origins` (none: no CORS headers, browsers refuse
/// cross-origin calls).
fn cors(state: &AppState) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderValue, Method, header};
    let origins: Vec<HeaderValue> = state
        .hosts
        .cors_origins()
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-switchyard-client"),
        ])
}

/// Whether `headers` carry the admin token (always true when none is set).
pub fn token_ok(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let Some(token) = &state.config.server.admin_token else {
        return true;
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::request::bearer)
        .unwrap_or_default();
    constant_time_eq(given.as_bytes(), token.expose().as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn providers(State(state): State<AppState>) -> Json<Value> {
    let table = state.router.table();
    let breakers = state.router.breakers();
    let list: Vec<Value> = table
        .providers
        .iter()
        .map(|p| {
            let keys: Vec<Value> = p
                .keys
                .iter()
                .map(|k| json!({"source": k.source, "weight": k.weight}))
                .collect();
            let open: Vec<Value> = breakers
                .iter()
                .filter(|(k, _)| k.provider == p.name)
                .map(|(k, s)| json!({"model": &*k.model, "key": k.key, "state": s.label()}))
                .collect();
            json!({
                "name": &*p.name,
                "source": state.runtime.source(crate::config::layer::Kind::Provider, &p.name),
                "kind": p.kind.as_str(),
                "base_url": p.base_url,
                "keys": keys,
                "timeout_ms": p.timeout.as_millis() as u64,
                "max_retries": p.max_retries,
                "models": p.models,
                "breakers": open,
            })
        })
        .collect();
    Json(json!({"object": "list", "data": list}))
}

async fn routes_list(State(state): State<AppState>) -> Json<Value> {
    let table = state.router.table();
    let name = |i: usize| {
        table
            .providers
            .get(i)
            .map(|p| p.name.to_string())
            .unwrap_or_default()
    };
    let list: Vec<Value> = table
        .routes
        .iter()
        .map(|r| {
            let targets: Vec<Value> = r
                .targets
                .iter()
                .map(|t| json!({"model": format!("{}/{}", name(t.provider), t.model), "weight": t.weight}))
                .collect();
            let fallbacks: Vec<String> =
                r.fallbacks.iter().map(|t| format!("{}/{}", name(t.provider), t.model)).collect();
            let source = state.runtime.source(crate::config::layer::Kind::Route, &r.name);
            json!({"model": r.name, "source": source, "targets": targets, "fallbacks": fallbacks})
        })
        .collect();
    Json(json!({"object": "list", "data": list}))
}
