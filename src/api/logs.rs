//! The request log and usage under `/api` (behind the admin token): `GET /api/logs` (filters,
//! paging), `GET /api/logs/{request_id}`, `GET /api/usage` (aggregates and a time series).

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::json_error as fail;
use crate::app::AppState;
use crate::error::GatewayError;
use crate::telemetry::requestlog::LogQuery;

/// `/api/logs*` and `/api/usage`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/logs", get(list))
        .route("/logs/{id}", get(one))
        .route("/usage", get(usage))
}

/// The query string as log filters, checked.
fn filters(q: Result<Query<LogQuery>, QueryRejection>) -> Result<LogQuery, GatewayError> {
    let q = super::query(q)?;
    q.validate().map_err(GatewayError::BadRequest)?;
    Ok(q)
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    fail(GatewayError::Unavailable(format!(
        "the request log could not be read: {e}"
    )))
}

async fn list(
    State(state): State<AppState>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let q = match filters(q) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    match state.log.page(&q).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.log.find(&id).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => fail(GatewayError::NotFound(format!(
            "no logged request with id `{id}`"
        ))),
        Err(e) => unavailable(e),
    }
}

async fn usage(
    State(state): State<AppState>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let q = match filters(q) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let now = crate::chat::unix_now_ms();
    let to = q.to.unwrap_or(now + 1);
    let from = q.from.unwrap_or_else(|| to.saturating_sub(86_400_000));
    let auto = ((to - from) / 48 / 1000).max(60);
    let bucket = match q.bucket {
        Some(0) => {
            return fail(GatewayError::BadRequest(
                "`bucket` must be at least 1 second".into(),
            ));
        }
        Some(b) => b,
        None => auto,
    };
    let filters = LogQuery {
        from: Some(from),
        to: Some(to),
        ..q
    };
    match state
        .log
        .usage_of(&filters, now, Duration::from_secs(bucket))
        .await
    {
        Ok(u) => Json(u).into_response(),
        Err(e) => unavailable(e),
    }
}
