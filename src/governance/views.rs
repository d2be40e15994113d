//! How the admin API and the metrics show entities: the spec as written, each budget with its
//! spend, reservations, what is left and the next reset, each limit with its current window.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::counters::{AnyCounters, Kind};
use super::directory::{Directory, EntityKind, KeyEntry, Level};
use crate::config::governance::BudgetSpec;

/// (level, id, period, spent, remaining) of one budget.
pub type BudgetState = (&'static str, String, String, f64, f64);

fn time(ms: Option<i64>) -> Value {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map_or(Value::Null, |t| {
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
}

/// Budgets with spend, reservations, what is left and the next reset; limits with their window.
async fn usage(level: &Level, specs: &[BudgetSpec], counters: &AnyCounters) -> (Value, Value) {
    let buckets = level.buckets();
    let mut budgets = Vec::new();
    let budget_buckets = buckets.iter().filter(|c| c.kind == Kind::Budget);
    for (spec, c) in specs.iter().zip(budget_buckets) {
        let s = counters.snapshot(&c.bucket, c.window).await;
        budgets.push(json!({
            "max_usd": c.limit, "period": spec.period, "calendar_aligned": spec.calendar_aligned,
            "spent_usd": s.used, "reserved_usd": s.reserved,
            "remaining_usd": (c.limit - s.used - s.reserved).max(0.0),
            "resets_at": time(s.resets_at_ms),
        }));
    }
    let mut limits = serde_json::to_value(&level.limits).unwrap_or(Value::Null);
    let mut current = serde_json::Map::new();
    for c in buckets.iter().filter(|c| c.kind != Kind::Budget) {
        let s = counters.snapshot(&c.bucket, c.window).await;
        let name = match c.kind {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Concurrent => "concurrent",
            _ => "tool_calls",
        };
        current.insert(
            name.into(),
            json!({
                "limit": c.limit, "used": s.used, "reserved": s.reserved,
                "resets_at": time(s.resets_at_ms),
            }),
        );
    }
    if let Value::Object(m) = &mut limits {
        m.insert("current".into(), Value::Object(current));
    }
    (Value::Array(budgets), limits)
}

/// The spec as JSON plus its state.
async fn view(
    mut v: Value,
    level: &Level,
    specs: &[BudgetSpec],
    from_config: bool,
    created_ms: i64,
    counters: &AnyCounters,
) -> Value {
    let (budgets, limits) = usage(level, specs, counters).await;
    if let Value::Object(m) = &mut v {
        m.insert("budgets".into(), budgets);
        m.insert("rate_limits".into(), limits);
        let source = if from_config { "config" } else { "api" };
        m.insert("source".into(), json!(source));
        m.insert("created_at".into(), time(Some(created_ms)));
    }
    v
}

/// A customer or a team: its spec and its state.
async fn owner<S: serde::Serialize>(
    spec: &S,
    level: &Level,
    budgets: &[BudgetSpec],
    (from_config, created_ms): (bool, i64),
    counters: &AnyCounters,
) -> Value {
    let v = serde_json::to_value(spec).unwrap_or(Value::Null);
    view(v, level, budgets, from_config, created_ms, counters).await
}

async fn key(e: &KeyEntry, d: &Directory, counters: &AnyCounters) -> Value {
    let mut v = serde_json::to_value(&e.spec).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("value");
        let newest = e.secrets.iter().rev().find(|s| s.valid_until_ms.is_none());
        let prefix = newest.or(e.secrets.last()).map(|s| s.prefix.clone());
        m.insert("prefix".into(), json!(prefix));
        m.insert("customer".into(), json!(d.customer_of(e)));
        let now = Utc::now().timestamp_millis();
        let grace: Vec<Value> = e
            .secrets
            .iter()
            .filter(|s| s.valid_until_ms.is_some_and(|t| t > now))
            .map(|s| json!({"prefix": s.prefix, "valid_until": time(s.valid_until_ms)}))
            .collect();
        m.insert("rotated_secrets".into(), Value::Array(grace));
    }
    view(
        v,
        &e.level,
        &e.spec.budgets,
        e.from_config,
        e.created_ms,
        counters,
    )
    .await
}

/// One entity, if it exists.
pub async fn one(
    d: &Directory,
    kind: EntityKind,
    id: &str,
    counters: &AnyCounters,
) -> Option<Value> {
    Some(match kind {
        EntityKind::Customer => {
            let e = d.customers.get(id)?;
            let meta = (e.from_config, e.created_ms);
            owner(&e.spec, &e.level, &e.spec.budgets, meta, counters).await
        }
        EntityKind::Team => {
            let e = d.teams.get(id)?;
            let meta = (e.from_config, e.created_ms);
            owner(&e.spec, &e.level, &e.spec.budgets, meta, counters).await
        }
        EntityKind::Key => key(d.keys.get(id)?, d, counters).await,
    })
}

/// Every entity of a kind, by id.
pub async fn list(d: &Directory, kind: EntityKind, counters: &AnyCounters) -> Vec<Value> {
    let mut ids: Vec<&String> = match kind {
        EntityKind::Customer => d.customers.keys().collect(),
        EntityKind::Team => d.teams.keys().collect(),
        EntityKind::Key => d.keys.keys().collect(),
    };
    ids.sort();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(v) = one(d, kind, id, counters).await {
            out.push(v);
        }
    }
    out
}

/// Every budget of customers and teams (and keys when `per_key`).
pub async fn budget_states(
    d: &Directory,
    counters: &AnyCounters,
    per_key: bool,
) -> Vec<BudgetState> {
    let mut levels: Vec<(EntityKind, &str, &Level, &[BudgetSpec])> = Vec::new();
    for c in d.customers.values() {
        levels.push((EntityKind::Customer, &c.spec.id, &c.level, &c.spec.budgets));
    }
    for t in d.teams.values() {
        levels.push((EntityKind::Team, &t.spec.id, &t.level, &t.spec.budgets));
    }
    if per_key {
        for k in d.keys.values() {
            levels.push((EntityKind::Key, &k.spec.id, &k.level, &k.spec.budgets));
        }
    }
    let mut out = Vec::new();
    for (kind, id, level, specs) in levels {
        let budget_buckets = level.buckets().iter().filter(|c| c.kind == Kind::Budget);
        for (c, spec) in budget_buckets.zip(specs) {
            let s = counters.snapshot(&c.bucket, c.window).await;
            let period = spec.period.clone().unwrap_or_else(|| "none".into());
            let left = (c.limit - s.used - s.reserved).max(0.0);
            out.push((kind.word(), id.to_owned(), period, s.used, left));
        }
    }
    out
}
