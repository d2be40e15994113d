//! Governance administration under `/api` (behind the admin token): customers, teams and keys
//! (`GET`/`POST` on the collection, `GET`/`PATCH`/`DELETE` on one), and key rotation. A key's
//! secret appears once, in the answer that created or rotated it; the store keeps its hash.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::json_error as fail;
use crate::app::AppState;
use crate::error::GatewayError;
use crate::governance::{EntityKind, GovernanceError};

/// `/api/customers`, `/api/teams`, `/api/keys`.
pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for (path, kind) in [
        ("customers", EntityKind::Customer),
        ("teams", EntityKind::Team),
        ("keys", EntityKind::Key),
    ] {
        r = r
            .route(
                &format!("/{path}"),
                get(move |s: State<AppState>| list(s, kind))
                    .post(move |s: State<AppState>, b: Body| create(s, kind, b)),
            )
            .route(
                &format!("/{path}/{{id}}"),
                get(move |s: State<AppState>, p: Path<String>| one(s, kind, p))
                    .patch(move |s: State<AppState>, p: Path<String>, b: Body| patch(s, kind, p, b))
                    .delete(move |s: State<AppState>, p: Path<String>| remove(s, kind, p)),
            );
    }
    r.route("/keys/{id}/rotate", post(rotate))
}

fn gov(e: GovernanceError) -> Response {
    fail(GatewayError::Governance(e))
}

async fn list(State(state): State<AppState>, kind: EntityKind) -> Response {
    let g = &state.governance;
    Json(json!({"object": "list", "data": g.directory().list(kind, g.counters()).await}))
        .into_response()
}

async fn one(State(state): State<AppState>, kind: EntityKind, Path(id): Path<String>) -> Response {
    let g = &state.governance;
    match g.directory().get(kind, &id, g.counters()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => gov(e),
    }
}

/// A key's `plugins` and `disable_plugins` must name `[[plugins]]` entries, and may not turn off a
/// mandatory one.
fn check_key_plugins(state: &AppState, kind: EntityKind, body: &Value) -> Result<(), GatewayError> {
    if kind != EntityKind::Key {
        return Ok(());
    }
    let mut spec = crate::config::governance::KeySpec::default();
    for (field, slot) in [
        ("plugins", &mut spec.plugins),
        ("disable_plugins", &mut spec.disable_plugins),
    ] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => {
                *slot = serde_json::from_value(v.clone()).map_err(|_| {
                    GatewayError::BadRequest(format!("`{field}` must be a list of plugin names"))
                })?;
            }
        }
    }
    let mut issues = Vec::new();
    crate::config::plugins::check_key_plugins(&state.config.plugins, &spec, "", &mut issues);
    match issues.first() {
        None => Ok(()),
        Some(i) => Err(GatewayError::BadRequest(format!(
            "{}: {}",
            i.path.trim_start_matches('.'),
            i.message
        ))),
    }
}

async fn create(State(state): State<AppState>, kind: EntityKind, body: Body) -> Response {
    let body: Value = match super::read_json(&state, body).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if let Err(e) = check_key_plugins(&state, kind, &body) {
        return fail(e);
    }
    let g = &state.governance;
    let (id, secret) = match g.directory().create(kind, body).await {
        Ok(x) => x,
        Err(e) => return gov(e),
    };
    let mut view = match g.directory().get(kind, &id, g.counters()).await {
        Ok(v) => v,
        Err(e) => return gov(e),
    };
    if let (Some(s), Value::Object(m)) = (secret, &mut view) {
        m.insert("secret".into(), json!(s));
    }
    tracing::info!(kind = ?kind, %id, "governance entity created");
    (StatusCode::CREATED, Json(view)).into_response()
}

async fn patch(
    State(state): State<AppState>,
    kind: EntityKind,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body: Value = match super::read_json(&state, body).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if let Err(e) = check_key_plugins(&state, kind, &body) {
        return fail(e);
    }
    let g = &state.governance;
    if let Err(e) = g.directory().patch(kind, &id, body).await {
        return gov(e);
    }
    match g.directory().get(kind, &id, g.counters()).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => gov(e),
    }
}

async fn remove(
    State(state): State<AppState>,
    kind: EntityKind,
    Path(id): Path<String>,
) -> Response {
    let g = &state.governance;
    match g.directory().delete(kind, &id, g.counters()).await {
        Ok(()) => Json(json!({"deleted": id})).into_response(),
        Err(e) => gov(e),
    }
}

/// `POST /api/keys/{id}/rotate` with `{"grace_seconds": N}` (default 0: the old secret stops now).
async fn rotate(State(state): State<AppState>, Path(id): Path<String>, body: Body) -> Response {
    let body: Value = match super::read_json(&state, body).await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let grace = match body.get("grace_seconds") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(n) => n,
            None => {
                return gov(GovernanceError::Invalid(
                    "`grace_seconds` must be a whole number of seconds >= 0".into(),
                ));
            }
        },
    };
    let g = &state.governance;
    let secret = match g.directory().rotate(&id, grace).await {
        Ok(s) => s,
        Err(e) => return gov(e),
    };
    let mut view = match g.directory().get(EntityKind::Key, &id, g.counters()).await {
        Ok(v) => v,
        Err(e) => return gov(e),
    };
    if let Value::Object(m) = &mut view {
        m.insert("secret".into(), json!(secret));
    }
    tracing::info!(%id, grace_seconds = grace, "virtual key rotated");
    Json(view).into_response()
}
