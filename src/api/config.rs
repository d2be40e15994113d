//! Runtime configuration over the admin API: providers and routes created, changed and removed
//! without a restart (`POST /api/providers`, `PATCH`/`DELETE /api/providers/{name}`, the same
//! under `/api/routes`), their versions (`GET /api/config/versions`, `GET
//! /api/config/versions/{n}` as TOML, `POST /api/config/rollback/{n}`). Every change is validated
//! with the config file as `check` would, applied atomically, and recorded.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::config::layer::{Entry, Kind};
use crate::runtime::{ChangeError, Op};

/// The routes (behind the admin token); `POST /api/providers` and `POST /api/routes` are
/// mounted beside their `GET` in admin.rs ([`create`]).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/providers/{name}", entity(Kind::Provider))
        .route("/providers/{name}/test", post(test_provider))
        .route("/routes/{model}", entity(Kind::Route))
        .route("/config/versions", get(versions))
        .route("/config/export", get(export))
        .route("/config/versions/{n}", get(version))
        .route("/config/rollback/{n}", post(rollback))
}

type Body = Result<Json<Value>, axum::extract::rejection::JsonRejection>;

/// `POST` of a new entity of `kind`.
pub(super) fn create(kind: Kind) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>, headers: HeaderMap, body: Body| async move {
            match entry(body) {
                Ok(e) => change(&state, &headers, kind, Op::Create(e), true).await,
                Err(e) => error(e),
            }
        },
    )
}

/// `GET`, `PATCH` and `DELETE` of one entity of `kind`.
fn entity(kind: Kind) -> MethodRouter<AppState> {
    get(
        move |State(state): State<AppState>, Path(id): Path<String>| async move {
            match find(&state, kind, &id) {
                Some(v) => Json(v).into_response(),
                None => error(ChangeError::NotFound {
                    noun: kind.noun(),
                    id,
                }),
            }
        },
    )
    .patch(
        move |State(state): State<AppState>,
              headers: HeaderMap,
              Path(id): Path<String>,
              body: Body| async move {
            match entry(body) {
                Ok(e) => change(&state, &headers, kind, Op::Update(id, e), false).await,
                Err(e) => error(e),
            }
        },
    )
    .delete(
        move |State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>| async move {
            change(&state, &headers, kind, Op::Delete(id), false).await
        },
    )
}

/// An OpenAI-shaped error with the list of problems (empty when there is only one).
pub fn problem(status: StatusCode, code: &str, message: String, problems: Value) -> Response {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({"error": {"message": message, "type": kind, "code": code, "param": null}, "problems": problems});
    (status, Json(body)).into_response()
}

/// Who made a change: the web UI says so; anything else holds the admin token.
fn actor(headers: &HeaderMap) -> &'static str {
    match headers
        .get("x-switchyard-client")
        .and_then(|v| v.to_str().ok())
    {
        Some("ui") => "ui",
        _ => "api",
    }
}

fn error(e: ChangeError) -> Response {
    let message = e.to_string();
    match e {
        ChangeError::Unavailable => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
            json!([]),
        ),
        ChangeError::FileManaged { .. } => {
            problem(StatusCode::CONFLICT, "file_managed", message, json!([]))
        }
        ChangeError::Exists { .. } => problem(StatusCode::CONFLICT, "exists", message, json!([])),
        ChangeError::Conflict(_) => problem(StatusCode::CONFLICT, "conflict", message, json!([])),
        ChangeError::NotFound { .. } => {
            problem(StatusCode::NOT_FOUND, "not_found", message, json!([]))
        }
        ChangeError::BadRequest(_) => problem(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            message,
            json!([]),
        ),
        ChangeError::Invalid(issues) => {
            let list: Vec<Value> = issues
                .iter()
                .map(|i| json!({"path": i.path, "message": i.message}))
                .collect();
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            problem(
                StatusCode::BAD_REQUEST,
                "invalid_config",
                format!(
                    "the change would leave {} problem(s); nothing was changed: {}",
                    issues.len(),
                    text.join("; ")
                ),
                Value::Array(list),
            )
        }
        // The fleet's database is down: nothing was changed; try again when it is back.
        ChangeError::Store(crate::store::StoreError::Postgres(_)) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
            json!([]),
        ),
        ChangeError::Store(_) | ChangeError::Secret(_) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            message,
            json!([]),
        ),
    }
}

/// The body as an entry (a JSON object).
fn entry(body: Body) -> Result<Entry, ChangeError> {
    match body {
        Ok(Json(Value::Object(o))) => Ok(o),
        Ok(_) => Err(ChangeError::BadRequest(
            "the body must be a JSON object: the entry's fields as in the config file".into(),
        )),
        Err(e) => Err(ChangeError::BadRequest(format!(
            "the body is not JSON: {}",
            e.body_text()
        ))),
    }
}

/// Makes a change and applies its result; answers with the entity as now shown and the version.
async fn change(
    state: &AppState,
    headers: &HeaderMap,
    kind: Kind,
    op: Op,
    created: bool,
) -> Response {
    let id = match &op {
        Op::Create(e) => crate::config::layer::entry_id(kind, e).map(str::to_owned),
        Op::Update(id, _) | Op::Delete(id) => Some(id.clone()),
        Op::Rollback(_) => None,
    };
    let deleting = matches!(op, Op::Delete(_));
    match state.runtime.change(actor(headers), kind, op).await {
        Ok((version, merged)) => {
            state.apply(&merged);
            tracing::info!(version = version.n, actor = %version.actor, action = %version.action, "runtime configuration changed");
            if deleting {
                return StatusCode::NO_CONTENT.into_response();
            }
            let shown = id.and_then(|id| find(state, kind, &id));
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                Json(json!({"data": shown, "version": version.n, "action": version.action})),
            )
                .into_response()
        }
        Err(e) => error(e),
    }
}

/// The entity as written, secrets masked, with its source.
fn find(state: &AppState, kind: Kind, id: &str) -> Option<Value> {
    state
        .runtime
        .list(kind)
        .into_iter()
        .find(|e| e.get(kind.id_field()).and_then(Value::as_str) == Some(id))
}

async fn versions(State(state): State<AppState>) -> Response {
    match state.runtime.versions().await {
        Ok(list) => {
            Json(json!({"object": "list", "data": list, "current": state.runtime.version()}))
                .into_response()
        }
        Err(e) => error(e),
    }
}

/// `GET /api/config/export`: the whole effective configuration as TOML (secrets sealed).
async fn export(State(state): State<AppState>) -> Response {
    match state.runtime.export() {
        Ok(text) => ([("content-type", "application/toml; charset=utf-8")], text).into_response(),
        Err(e) => error(e),
    }
}

async fn version(State(state): State<AppState>, Path(n): Path<u64>) -> Response {
    match state.runtime.version_toml(n).await {
        Ok(text) => ([("content-type", "application/toml; charset=utf-8")], text).into_response(),
        Err(e) => error(e),
    }
}

async fn rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(n): Path<u64>,
) -> Response {
    // The kind only names entities in messages; a rollback restores both.
    change(&state, &headers, Kind::Provider, Op::Rollback(n), false).await
}

/// `POST /api/providers/{name}/test` (`{"model": "..."}`, default the provider's first listed
/// model): one small real call through the provider (no cache, plugins or tools), and its
/// latency or the provider's error.
async fn test_provider(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    use crate::request::ChatBackend;
    let table = state.router.table();
    let Some(provider) = table.providers.iter().find(|p| *p.name == *name) else {
        return error(ChangeError::NotFound {
            noun: "provider",
            id: name,
        });
    };
    let asked = body
        .as_ref()
        .and_then(|Json(b)| b.get("model"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(model) = asked.or_else(|| provider.models.first().cloned()) else {
        return error(ChangeError::BadRequest(format!(
            "name a model to test `{name}` with: {{\"model\": \"...\"}} (it lists none in `models`)"
        )));
    };
    let req: crate::chat::ChatRequest = match serde_json::from_value(json!({
        "model": format!("{name}/{model}"),
        "messages": [{"role": "user", "content": "Reply with the word OK."}],
        "max_tokens": 8,
    })) {
        Ok(r) => r,
        Err(e) => return error(ChangeError::BadRequest(e.to_string())),
    };
    let ctx = super::context(&state, &headers);
    let started = std::time::Instant::now();
    let result = state.router.chat(&req, &ctx).await;
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(outcome) => {
            let reply = match crate::router::decode_raw(outcome).map(|o| o.body) {
                Ok(crate::request::ChatBody::Complete(r)) => r
                    .choices
                    .first()
                    .and_then(|c| c.message.content.as_ref())
                    .map(|c| c.as_text())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            Json(json!({"ok": true, "provider": name, "model": model, "latency_ms": ms, "reply": reply}))
                .into_response()
        }
        Err(e) => {
            let e = crate::error::GatewayError::from(e);
            Json(json!({"ok": false, "provider": name, "model": model, "latency_ms": ms, "error": e.to_string()}))
                .into_response()
        }
    }
}
