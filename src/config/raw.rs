//! The config file as written: serde types, unknown-field detection and `env.NAME` resolution.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Issue;

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub data_dir: Option<String>,
    pub admin_token: Option<String>,
    pub request_timeout_ms: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub sse_keep_alive_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_connections: Option<u64>,
    pub allowed_hosts: Vec<String>,
    pub cors_origins: Vec<String>,
    pub allow_unauthenticated: Option<bool>,
    pub state: Option<String>,
    pub postgres_url: Option<String>,
    pub config_source: Option<String>,
}

/// One `[[providers]]` entry.
#[derive(Debug, Deserialize)]
pub struct RawProvider {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default, rename = "api-version", alias = "api_version")]
    pub api_version: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Bedrock: AWS region and credentials.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub aws_access_key_id: Option<String>,
    #[serde(default)]
    pub aws_secret_access_key: Option<String>,
    #[serde(default)]
    pub aws_session_token: Option<String>,
    /// Vertex AI: project, location and the service-account key (a path or the JSON itself).
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub credentials: Option<String>,
}

/// Fields whose `env.NAME` may be unset: the field is then absent (an optional credential).
pub const OPTIONAL_ENV_FIELDS: &[&str] = &["aws_session_token"];

/// A key: `"env.X"` or `{ value = "env.X", weight = 0.5 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawKey {
    Plain(String),
    Weighted {
        value: String,
        #[serde(default)]
        weight: Option<f64>,
    },
}

/// One `[[routes]]` entry.
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub model: String,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// The route's cache policy; unset fields follow `[cache]`.
    #[serde(default)]
    pub cache: Option<RawRouteCache>,
}

/// `[[routes]] cache = { mode, threshold, ttl_seconds }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub mode: Option<String>,
    pub threshold: Option<f64>,
    pub ttl_seconds: Option<u64>,
}

/// A weighted route target.
#[derive(Debug, Deserialize)]
pub struct RawTarget {
    pub model: String,
    #[serde(default)]
    pub weight: Option<f64>,
}

/// `[router]`: retry and circuit-breaker tuning.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRouter {
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub max_retry_after_ms: Option<u64>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown_ms: Option<u64>,
}

/// `[cache]` as CONTRACT.md defines it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCache {
    pub enabled: Option<bool>,
    pub mode: Option<String>,
    pub threshold: Option<f64>,
    pub ttl_seconds: Option<u64>,
    pub store: Option<String>,
    pub qdrant_url: Option<String>,
    pub embedding_model: Option<String>,
    pub onnx_runtime: Option<String>,
    pub max_entries: Option<u64>,
    pub qdrant_collection: Option<String>,
    pub qdrant_api_key: Option<String>,
    pub guard: Option<bool>,
    pub replay_delay_ms: Option<u64>,
    pub cache_tool_answers: Option<bool>,
    pub verifier: Option<String>,
    pub verifier_model: Option<String>,
    pub verifier_threshold: Option<f64>,
    pub conversations: Option<String>,
    pub conversation_model: Option<String>,
}

/// `[mcp]` as CONTRACT.md defines it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMcp {
    pub max_iterations: Option<u32>,
    pub tool_timeout_ms: Option<u64>,
    pub allowed_hosts: Vec<String>,
    pub allow_stdio_registration: Option<bool>,
    /// Each entry is deserialized on its own (as a `McpServerSpec`), so one bad server does not hide the others.
    pub servers: Vec<toml::Value>,
}

/// Top-level sections, each deserialized on its own so one bad section does not hide the others.
pub const SECTIONS: &[&str] = &[
    "server",
    "providers",
    "routes",
    "router",
    "cache",
    "mcp",
    "logs",
    "responses",
    "telemetry",
    "prices",
    "governance",
    "plugins",
];

/// Deserializes `value` as `T`, recording unknown fields and type errors under `path`.
pub fn section<T: DeserializeOwned>(
    value: toml::Value,
    path: &str,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    let mut unknown = Vec::new();
    let mut record = |p: serde_ignored::Path<'_>| unknown.push(join(path, &render(&p)));
    let de = serde_ignored::Deserializer::new(value, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    for u in unknown {
        issues.push(Issue::new(u, "unknown field"));
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let at = if inner == "." {
                path.to_owned()
            } else {
                join(path, &inner)
            };
            issues.push(Issue::new(at, e.into_inner().to_string()));
            None
        }
    }
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => rest.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

fn render(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match p {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render(parent)),
        Path::Map { parent, key } => join(&render(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render(parent),
    }
}

/// Replaces every `env.NAME` string with the variable's value, in place.
///
/// Opens the sealed secrets (`sealed:v1:...`) in a provider entry; one that does not open is an
/// issue at its path. The source shown for them is `sealed`.
pub fn open_sealed(
    value: &mut toml::Value,
    path: &str,
    key: &super::sealed::SecretBox,
    sources: &mut BTreeMap<String, String>,
    issues: &mut Vec<Issue>,
) {
    match value {
        toml::Value::String(s) if super::sealed::SecretBox::is_sealed(s) => match key.open_value(s)
        {
            Ok(plain) => {
                sources.insert(path.to_owned(), "sealed".into());
                *s = plain;
            }
            Err(e) => issues.push(Issue::new(path, e.to_string())),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                open_sealed(item, &format!("{path}[{i}]"), key, sources, issues);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                open_sealed(v, &format!("{path}.{k}"), key, sources, issues);
            }
        }
        _ => {}
    }
}

/// Returns the `path -> "env.NAME"` map of what was replaced (so secrets can be shown by source),
/// and records a missing variable as an issue at its path.
pub fn resolve_env(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    sources: &mut BTreeMap<String, String>,
    issues: &mut Vec<Issue>,
) {
    match value {
        toml::Value::String(s) => {
            let Some(name) = s.strip_prefix("env.") else {
                return;
            };
            match env(name) {
                Some(v) => {
                    sources.insert(path.to_owned(), s.clone());
                    *s = v;
                }
                None if OPTIONAL_ENV_FIELDS
                    .iter()
                    .any(|f| path.rsplit('.').next() == Some(*f)) =>
                {
                    s.clear();
                }
                None => issues.push(Issue::new(
                    path,
                    format!("environment variable `{name}` is not set"),
                )),
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_env(item, &format!("{path}[{i}]"), env, sources, issues);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                resolve_env(v, &join(path, k), env, sources, issues);
            }
        }
        _ => {}
    }
}
