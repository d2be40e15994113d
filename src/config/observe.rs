//! `[logs]`, `[telemetry]` and `[prices]`: the request log, OpenTelemetry export and the price
//! table behind cost estimates, validated.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Issue;

/// `[logs]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLogs {
    pub enabled: Option<bool>,
    pub log_bodies: Option<bool>,
    pub retention_days: Option<u64>,
    pub max_records: Option<u64>,
    pub queue: Option<usize>,
}

/// `[telemetry]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub sample_ratio: Option<f64>,
    pub otlp_headers: BTreeMap<String, String>,
}

/// One `[prices]` entry: USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt tokens, USD per million.
    pub input: f64,
    /// Completion tokens, USD per million.
    pub output: f64,
}

/// `[logs]`, validated.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    /// Keep a record of every request in the store.
    pub enabled: bool,
    /// Keep request and response bodies too (off by default: they may hold personal data).
    pub log_bodies: bool,
    /// Records older than this are deleted.
    pub retention: Duration,
    /// At most this many records; the oldest go first.
    pub max_records: u64,
    /// Records waiting to be written; when full, new ones are dropped and counted.
    pub queue: usize,
}

impl Default for LogsConfig {
    fn default() -> Self {
        validate_logs(RawLogs::default(), &mut Vec::new())
    }
}

/// `[telemetry]`, validated.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint (e.g. `http://127.0.0.1:4317`); traces are off when absent.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Fraction of new traces sampled (a continued trace follows its parent's decision).
    pub sample_ratio: f64,
    /// gRPC metadata sent with every export (e.g. an auth header for a hosted collector).
    pub otlp_headers: BTreeMap<String, super::Secret>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        validate_telemetry(RawTelemetry::default(), &mut Vec::new())
    }
}

/// Validates `[logs]`.
pub fn validate_logs(r: RawLogs, issues: &mut Vec<Issue>) -> LogsConfig {
    let days = r.retention_days.unwrap_or(30);
    if days == 0 {
        issues.push(Issue::new("logs.retention_days", "must be at least 1"));
    }
    let max_records = r.max_records.unwrap_or(1_000_000);
    if max_records == 0 {
        issues.push(Issue::new("logs.max_records", "must be at least 1"));
    }
    let queue = r.queue.unwrap_or(10_000);
    if queue == 0 {
        issues.push(Issue::new("logs.queue", "must be at least 1"));
    }
    LogsConfig {
        enabled: r.enabled.unwrap_or(true),
        log_bodies: r.log_bodies.unwrap_or(false),
        retention: Duration::from_secs(days.saturating_mul(86_400)),
        max_records,
        queue,
    }
}

/// Validates `[telemetry]`.
pub fn validate_telemetry(r: RawTelemetry, issues: &mut Vec<Issue>) -> TelemetryConfig {
    let endpoint = r.otlp_endpoint.filter(|e| !e.trim().is_empty());
    if let Some(e) = &endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        issues.push(Issue::new(
            "telemetry.otlp_endpoint",
            format!("`{e}` is not an http:// or https:// URL (OTLP over gRPC, e.g. http://127.0.0.1:4317)"),
        ));
    }
    let ratio = r.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        issues.push(Issue::new(
            "telemetry.sample_ratio",
            format!("must be between 0 and 1, got {ratio}"),
        ));
    }
    TelemetryConfig {
        otlp_endpoint: endpoint,
        service_name: r
            .service_name
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "switchyard".into()),
        sample_ratio: ratio,
        otlp_headers: r
            .otlp_headers
            .into_iter()
            .map(|(k, v)| (k, super::Secret::new(v)))
            .collect(),
    }
}

/// Validates `[prices]`: model name fragment -> price.
pub fn validate_prices(
    raw: BTreeMap<String, toml::Value>,
    issues: &mut Vec<Issue>,
) -> BTreeMap<String, Price> {
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let path = format!("prices.{name}");
        let Some(p) = super::raw::section::<Price>(value, &path, issues) else {
            continue;
        };
        let bad = |x: f64| !(x.is_finite() && x >= 0.0);
        if bad(p.input) || bad(p.output) {
            issues.push(Issue::new(
                path,
                "input and output must be non-negative USD per million tokens",
            ));
            continue;
        }
        out.insert(name.to_ascii_lowercase(), p);
    }
    out
}

/// `[responses]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawResponses {
    pub ttl_seconds: Option<u64>,
    pub max_stored: Option<u64>,
}

/// `[responses]`, validated: how long Responses API answers stored with `store: true` are kept.
#[derive(Debug, Clone)]
pub struct ResponsesConfig {
    /// A stored response (and `previous_response_id` to it) lasts this long (default 30 days).
    pub ttl: Duration,
    /// At most this many stored responses; the oldest go first.
    pub max_stored: u64,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        validate_responses(RawResponses::default(), &mut Vec::new())
    }
}

/// Validates `[responses]`.
pub fn validate_responses(r: RawResponses, issues: &mut Vec<Issue>) -> ResponsesConfig {
    let ttl = r.ttl_seconds.unwrap_or(30 * 86_400);
    if !(1..=365 * 86_400).contains(&ttl) {
        issues.push(Issue::new(
            "responses.ttl_seconds",
            format!("must be between 1 and 31536000 (a year), got {ttl}"),
        ));
    }
    let max_stored = r.max_stored.unwrap_or(100_000);
    if max_stored == 0 {
        issues.push(Issue::new(
            "responses.max_stored",
            "must be at least 1 (send `store: false` to keep nothing)",
        ));
    }
    ResponsesConfig {
        ttl: Duration::from_secs(ttl),
        max_stored,
    }
}
