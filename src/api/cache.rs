//! Cache administration under `/api/cache` (behind the admin token): stats, entries, deletes,
//! the threshold what-if (with shadow mode's would-be hits), and feedback on wrong answers.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::json_error as fail;
use crate::app::AppState;
use crate::cache::index::{AnyIndex, Entry, Selector, VectorIndex};
use crate::error::GatewayError;

/// `/api/cache/*`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/whatif", get(what_if))
        .route("/entries", get(entries).delete(purge))
        .route("/entries/{id}", delete(delete_one).get(get_one))
        .route("/entries/{id}/feedback", post(feedback))
        .route("/feedback", get(reported))
}

/// `POST /api/cache/entries/{id}/feedback` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    verdict: String,
    #[serde(default)]
    request_id: Option<String>,
}

/// Reports a served entry as wrong: removed, counted, its pair of questions kept.
async fn feedback(State(state): State<AppState>, Path(id): Path<String>, body: Body) -> Response {
    let result = async {
        let id = parse_id(&id)?;
        let b: FeedbackBody = super::read_json(&state, body).await?;
        if b.verdict != "wrong" {
            return Err(GatewayError::BadRequest(format!(
                "`verdict` must be `wrong` (a right answer needs no report), got `{}`",
                b.verdict.chars().take(40).collect::<String>()
            )));
        }
        index(&state)?;
        state
            .cache
            .report_wrong(Some(id), b.request_id.as_deref(), "api")
            .await
            .map_err(|e| match e {
                crate::cache::feedback::FeedbackError::NotFound(m) => GatewayError::NotFound(m),
                crate::cache::feedback::FeedbackError::Mismatch(m) => GatewayError::BadRequest(m),
                crate::cache::feedback::FeedbackError::Unavailable(m) => {
                    GatewayError::Unavailable(m)
                }
            })
    }
    .await;
    match result {
        Ok(r) => Json(json!({"removed": true, "reported": r})).into_response(),
        Err(e) => fail(e),
    }
}

/// `GET /api/cache/feedback[?format=jsonl]`.
#[derive(Debug, Deserialize)]
struct ReportedQuery {
    format: Option<String>,
}

/// `GET /api/cache/feedback`: the reported pairs, newest first; `?format=jsonl`: as labelled
/// must-not-hit pairs for `switchyard cache-eval --feedback FILE` (those whose asked question is
/// known).
async fn reported(
    State(state): State<AppState>,
    q: Result<Query<ReportedQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let jsonl = match super::query(q).map(|q| q.format) {
        Ok(None) => false,
        Ok(Some(f)) if f == "json" => false,
        Ok(Some(f)) if f == "jsonl" => true,
        Ok(Some(f)) => {
            return fail(GatewayError::BadRequest(format!(
                "`format` must be `json` or `jsonl`, got `{}`",
                f.chars().take(20).collect::<String>()
            )));
        }
        Err(e) => return fail(e),
    };
    match state.cache.reported().await {
        Ok(all) if jsonl => {
            let mut out = String::new();
            for r in &all {
                let Some(asked) = &r.prompt else { continue };
                let line =
                    json!({"a": r.cached_prompt, "b": asked, "hit": false, "kind": "reported"});
                out.push_str(&line.to_string());
                out.push('\n');
            }
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
                out,
            )
                .into_response()
        }
        Ok(mut all) => {
            all.reverse();
            Json(json!({"object": "list", "data": all})).into_response()
        }
        Err(e) => fail(GatewayError::Unavailable(format!(
            "reported cache answers could not be read: {e}"
        ))),
    }
}

fn index(state: &AppState) -> Result<std::sync::Arc<AnyIndex>, GatewayError> {
    if !state.config.cache.enabled {
        return Err(GatewayError::Http {
            status: axum::http::StatusCode::CONFLICT,
            code: "cache_disabled",
            message: "the cache is disabled ([cache] enabled = false): there are no entries".into(),
        });
    }
    state.cache.index().ok_or_else(|| {
        GatewayError::Unavailable(
            "the cache store is not open (cache disabled, still loading, or failed: see /ready)"
                .into(),
        )
    })
}

async fn stats(State(state): State<AppState>) -> Response {
    Json(state.cache.stats_json().await).into_response()
}

/// `GET /api/cache/whatif?threshold=0.78[&route=...]`.
#[derive(Debug, Deserialize)]
struct WhatIfQuery {
    threshold: Option<f32>,
    route: Option<String>,
}

async fn what_if(
    State(state): State<AppState>,
    q: Result<Query<WhatIfQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match super::query(q) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let t = q.threshold.unwrap_or(state.config.cache.threshold);
    if !(0.0..=1.0).contains(&t) {
        return fail(GatewayError::BadRequest(format!(
            "`threshold` must be between 0 and 1, got {t}"
        )));
    }
    match state.cache.what_if(t, q.route.as_deref()).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => fail(GatewayError::Unavailable(format!(
            "cache candidates could not be read: {e}"
        ))),
    }
}

/// Paging and filters of `GET /api/cache/entries`.
#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    model: Option<String>,
}

fn default_limit() -> usize {
    50
}

/// An entry as the API shows it: the answer's text, not its raw JSON.
fn summary(e: &Entry) -> serde_json::Value {
    let answer: Option<crate::chat::ChatResponse> = serde_json::from_str(&e.response).ok();
    let text = answer
        .as_ref()
        .and_then(|r| r.choices.first())
        .map(|c| c.message.text_content())
        .unwrap_or_default();
    json!({
        "id": e.id,
        "model": e.model,
        "provider": e.provider,
        "served_model": e.served_model,
        "prompt": e.prompt,
        "answer": text,
        "prompt_tokens": e.prompt_tokens,
        "completion_tokens": e.completion_tokens,
        "created": e.created,
        "expires": e.expires,
        "last_used": e.last_used,
        "hits": e.hits,
    })
}

async fn entries(State(state): State<AppState>, Query(page): Query<Page>) -> Response {
    if page.limit == 0 || page.limit > 500 || page.offset > 10_000 {
        return fail(GatewayError::BadRequest(
            "limit must be 1..=500 and offset at most 10000".into(),
        ));
    }
    let idx = match index(&state) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let total = idx.count().await.unwrap_or(0);
    match idx.list(page.offset, page.limit, page.model).await {
        Ok(list) => Json(json!({
            "total": total,
            "offset": page.offset,
            "limit": page.limit,
            "entries": list.iter().map(summary).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => fail(GatewayError::Unavailable(e.to_string())),
    }
}

fn parse_id(id: &str) -> Result<uuid::Uuid, GatewayError> {
    uuid::Uuid::parse_str(id)
        .map_err(|_| GatewayError::BadRequest(format!("`{id}` is not a cache entry id")))
}

async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let id = parse_id(&id)?;
        let idx = index(&state)?;
        match idx.get(id).await {
            Ok(Some(e)) => Ok(summary(&e)),
            Ok(None) => Err(GatewayError::NotFound(format!("no cache entry {id}"))),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}

async fn delete_one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let id = parse_id(&id)?;
        let idx = index(&state)?;
        match idx.delete(id).await {
            Ok(true) => Ok(json!({"deleted": 1, "id": id})),
            Ok(false) => Err(GatewayError::NotFound(format!("no cache entry {id}"))),
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        }
    }
    .await;
    state.cache.recount().await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}

/// `?model=` purges one model's entries; no query purges everything.
#[derive(Debug, Deserialize)]
struct Purge {
    #[serde(default)]
    model: Option<String>,
}

async fn purge(State(state): State<AppState>, Query(p): Query<Purge>) -> Response {
    let idx = match index(&state) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let sel = Selector {
        model: p.model.clone(),
        expired_at: None,
    };
    let result = idx.delete_where(sel).await;
    state.cache.recount().await;
    match result {
        Ok(n) => Json(json!({"deleted": n, "model": p.model})).into_response(),
        Err(e) => fail(GatewayError::Unavailable(e.to_string())),
    }
}
