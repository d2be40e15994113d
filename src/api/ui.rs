//! The web UI at `/`: three files compiled into the binary (no Node build step), plain
//! JavaScript calling the admin API. Served without the admin token (the page holds no data);
//! every API call it makes carries the token the user signs in with.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::AppState;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");
/// Only our own files; the token lives in sessionStorage, so no inline script may run.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// `/`, `/ui/app.js`, `/ui/app.css`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/app.js", get(js))
        .route("/ui/app.css", get(css))
        .route("/ui/session", get(session))
}

/// Whether the admin API needs a token, and whether the one sent is right: lets the page ask for
/// a token before calling the API instead of collecting 401s.
async fn session(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let required = state.config.server.admin_token.is_some();
    let valid = super::admin::token_ok(&state, &headers);
    (
        [(CACHE_CONTROL, "no-store")],
        Json(json!({"token_required": required, "authorized": valid})),
    )
}

async fn index() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, CSP),
            (CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
}

async fn js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}
