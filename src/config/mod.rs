//! Configuration: raw TOML (serde) -> validated [`Config`]; `env.NAME` values; zero-config defaults.
//!
//! Parsing never stops at the first problem: [`Config::parse`] returns every [`Issue`] with its
//! field path, which is what `switchyard check` prints.

pub mod cache;
pub mod governance;
pub mod layer;
pub mod mcp;
pub mod observe;
pub mod plugins;
mod raw;
pub mod sealed;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use cache::{CacheConfig, CacheMode, CacheStore};
pub use mcp::{McpConfig, McpServerConfig, McpServerSpec, McpTransport};
pub use observe::{LogsConfig, Price, ResponsesConfig, TelemetryConfig};
use raw::{RawCache, RawKey, RawMcp, RawProvider, RawRoute, RawRouter, RawServer};

/// One problem found in a config, with the field path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path such as `providers[1].keys[0].value`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Issue {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{} problem(s) in the config:\n{}", .0.len(), .0.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Issue>),
}

/// A secret string (provider key, admin token): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Provider kinds; everything but `anthropic` speaks the OpenAI wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// api.openai.com
    OpenAi,
    /// Any server speaking OpenAI's chat API; `base_url` required.
    OpenAiCompatible,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    Azure,
    /// Anthropic Messages API.
    Anthropic,
    /// Groq (OpenAI-compatible preset).
    Groq,
    /// Mistral (OpenAI-compatible preset).
    Mistral,
    /// OpenRouter (OpenAI-compatible preset).
    OpenRouter,
    /// DeepSeek (OpenAI-compatible preset).
    DeepSeek,
    /// xAI (OpenAI-compatible preset).
    Xai,
    /// Ollama's OpenAI-compatible endpoint.
    Ollama,
    /// Gemini's native `generateContent` API (Google's OpenAI-compatible endpoint when the base
    /// URL ends in `/openai`).
    Gemini,
    /// Cohere through its OpenAI compatibility API.
    Cohere,
    /// Amazon Bedrock's Converse API, SigV4-signed (or a Bedrock API key).
    Bedrock,
    /// Google Vertex AI: Gemini's `generateContent` and Anthropic's Messages (`rawPredict`),
    /// with a service-account key.
    Vertex,
}

impl ProviderKind {
    /// Every accepted `kind` string.
    pub const NAMES: &[&str] = &[
        "openai",
        "openai-compatible",
        "azure",
        "anthropic",
        "groq",
        "mistral",
        "openrouter",
        "deepseek",
        "xai",
        "ollama",
        "gemini",
        "cohere",
        "bedrock",
        "vertex",
    ];

    /// Parses a `kind` string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "openai" => Self::OpenAi,
            "openai-compatible" => Self::OpenAiCompatible,
            "azure" => Self::Azure,
            "anthropic" => Self::Anthropic,
            "groq" => Self::Groq,
            "mistral" => Self::Mistral,
            "openrouter" => Self::OpenRouter,
            "deepseek" => Self::DeepSeek,
            "xai" => Self::Xai,
            "ollama" => Self::Ollama,
            "gemini" => Self::Gemini,
            "cohere" => Self::Cohere,
            "bedrock" => Self::Bedrock,
            "vertex" => Self::Vertex,
            _ => return None,
        })
    }

    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::OpenAiCompatible => "openai-compatible",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Groq => "groq",
            Self::Mistral => "mistral",
            Self::OpenRouter => "openrouter",
            Self::DeepSeek => "deepseek",
            Self::Xai => "xai",
            Self::Ollama => "ollama",
            Self::Gemini => "gemini",
            Self::Cohere => "cohere",
            Self::Bedrock => "bedrock",
            Self::Vertex => "vertex",
        }
    }

    /// The vendor's base URL as its SDK uses it; `None` where the user must give one.
    pub fn default_base_url(self) -> Option<&'static str> {
        Some(match self {
            Self::OpenAi => "https://api.openai.com/v1",
            Self::Anthropic => "https://api.anthropic.com",
            Self::Groq => "https://api.groq.com/openai/v1",
            Self::Mistral => "https://api.mistral.ai/v1",
            Self::OpenRouter => "https://openrouter.ai/api/v1",
            Self::DeepSeek => "https://api.deepseek.com/v1",
            Self::Xai => "https://api.x.ai/v1",
            Self::Ollama => "http://127.0.0.1:11434/v1",
            Self::Gemini => "https://generativelanguage.googleapis.com",
            Self::Cohere => "https://api.cohere.ai/compatibility/v1",
            // Bedrock's and Vertex AI's depend on the region.
            Self::OpenAiCompatible | Self::Azure | Self::Bedrock | Self::Vertex => return None,
        })
    }

    /// Whether requests need a key (Ollama and self-hosted servers may not).
    pub fn needs_key(self) -> bool {
        !matches!(
            self,
            Self::Ollama | Self::OpenAiCompatible | Self::Bedrock | Self::Vertex
        )
    }
}

/// A weighted provider key.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// The key.
    pub secret: Secret,
    /// Relative weight (> 0).
    pub weight: f64,
    /// Where it came from, for display: `env.NAME` or `inline`.
    pub source: String,
}

/// A validated `[[providers]]` entry.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Name used in `provider/model`.
    pub name: String,
    /// Wire format and preset.
    pub kind: ProviderKind,
    /// Base URL, without a trailing slash.
    pub base_url: String,
    /// Keys, weighted (may be empty for keyless kinds).
    pub keys: Vec<KeyConfig>,
    /// Per-attempt timeout (whole answer; time to first chunk for streams).
    pub timeout: Duration,
    /// Retries on the same target before falling back.
    pub max_retries: u32,
    /// Azure `api-version`.
    pub api_version: Option<String>,
    /// Models listed by `GET /v1/models`, and reachable by their bare name.
    pub models: Vec<String>,
    /// Extra headers sent upstream (e.g. OpenRouter's `HTTP-Referer`).
    pub headers: BTreeMap<String, Secret>,
    /// Bedrock: the region and the credentials requests are signed with.
    pub aws: Option<AwsConfig>,
    /// Vertex AI: project, location and service account.
    pub vertex: Option<VertexConfig>,
}

/// Vertex AI's project, location and service-account key.
#[derive(Debug, Clone)]
pub struct VertexConfig {
    /// The Google Cloud project.
    pub project: String,
    /// `us-central1`, `europe-west4`, `global`, ...
    pub location: String,
    /// The service-account key's JSON.
    pub credentials: Secret,
}

/// Bedrock's region and AWS credentials (absent credentials: `keys` hold Bedrock API keys).
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// `us-east-1`, ...
    pub region: String,
    /// Access key id and secret access key, for SigV4.
    pub credentials: Option<(Secret, Secret)>,
    /// The STS session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// A route target: `provider/model` split, with a weight.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Provider name.
    pub provider: String,
    /// Upstream model name.
    pub model: String,
    /// Relative weight (> 0).
    pub weight: f64,
}

/// A validated `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The name clients ask for.
    pub model: String,
    /// Weighted primary targets.
    pub targets: Vec<TargetConfig>,
    /// Tried in order when the chosen targets fail.
    pub fallbacks: Vec<TargetConfig>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// Bearer token for `/api/*`, when set.
    pub admin_token: Option<Secret>,
    /// Whole-request deadline.
    pub request_timeout: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Interval of SSE keep-alive comments.
    pub sse_keep_alive: Duration,
    /// Time allowed for a request head (and for a new connection's first request).
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait idle for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once (`None`: derived from the open-file limit at start).
    pub max_connections: Option<usize>,
    /// `Host` names the admin API, the web UI's calls and `/mcp` accept besides loopback names
    /// and the listen address; `"*"` accepts any.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://admin.example.com`) allowed to call the admin API from a browser.
    pub cors_origins: Vec<String>,
    /// Listen beyond loopback without requiring virtual keys (an explicit opt-out).
    pub allow_unauthenticated: bool,
    /// Where durable shared state lives (today: the runtime configuration and its versions).
    pub state: StateConfig,
    /// `config_source = "api"`: the file's providers and routes only seed an empty store, then
    /// the API manages them all.
    pub api_managed: bool,
}

/// `[server] state`: the embedded store, or Postgres shared by a fleet of instances.
#[derive(Debug, Clone, PartialEq)]
pub enum StateConfig {
    /// `data_dir/store` (sled): one instance.
    Embedded,
    /// A Postgres database (`postgres_url`): every instance sees every change.
    Postgres(Secret),
}

/// `[router]`: the one retry policy and the breaker.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// First backoff step.
    pub retry_base: Duration,
    /// Largest computed backoff.
    pub retry_max: Duration,
    /// A `Retry-After` longer than this falls back instead of waiting.
    pub max_retry_after: Duration,
    /// Consecutive failures that open a breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before letting one probe through.
    pub breaker_cooldown: Duration,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[[providers]]`, in file order.
    pub providers: Vec<ProviderConfig>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[router]`.
    pub router: RouterConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[mcp]`.
    pub mcp: McpConfig,
    /// `[logs]`: the request log.
    pub logs: LogsConfig,
    /// `[responses]`: stored Responses API answers.
    pub responses: ResponsesConfig,
    /// `[[plugins]]`, in order.
    pub plugins: Vec<plugins::PluginConfig>,
    /// `[governance]`: virtual keys, budgets, rate limits.
    pub governance: governance::GovernanceConfig,
    /// `[telemetry]`: OpenTelemetry traces.
    pub telemetry: TelemetryConfig,
    /// `[prices]`: overrides and additions to the built-in price table (lower-case name fragments).
    pub prices: BTreeMap<String, Price>,
    /// True when providers were detected from the environment (no config file).
    pub zero_config: bool,
    /// The file it was read from (what a reload reads again).
    pub source: Option<std::path::PathBuf>,
    /// The document as written (`env.NAME` references unresolved): the base the runtime layer
    /// (providers and routes added through the API) is merged onto. `None` for zero-config.
    pub raw: Option<std::sync::Arc<toml::Table>>,
}

/// Environment variables zero-config reads, in detection order: (variable, provider name, kind).
pub const ENV_PROVIDERS: &[(&str, &str, ProviderKind)] = &[
    ("OPENAI_API_KEY", "openai", ProviderKind::OpenAi),
    ("ANTHROPIC_API_KEY", "anthropic", ProviderKind::Anthropic),
    ("GEMINI_API_KEY", "gemini", ProviderKind::Gemini),
    ("GROQ_API_KEY", "groq", ProviderKind::Groq),
    ("MISTRAL_API_KEY", "mistral", ProviderKind::Mistral),
    ("COHERE_API_KEY", "cohere", ProviderKind::Cohere),
    ("OPENROUTER_API_KEY", "openrouter", ProviderKind::OpenRouter),
    ("DEEPSEEK_API_KEY", "deepseek", ProviderKind::DeepSeek),
    ("XAI_API_KEY", "xai", ProviderKind::Xai),
];

/// The variables a user can set to get a provider, for messages.
pub fn env_hint() -> String {
    let mut v: Vec<&str> = ENV_PROVIDERS.iter().map(|(k, _, _)| *k).collect();
    v.push("OLLAMA_BASE_URL");
    v.join(", ")
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg =
            Self::parse(&text, &|k| std::env::var(k).ok()).map_err(ConfigError::Invalid)?;
        cfg.source = Some(path.to_owned());
        Ok(cfg)
    }

    /// Parses and validates config text, resolving `env.NAME` through `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, Vec<Issue>> {
        let mut issues = Vec::new();
        let mut doc: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => return Err(vec![Issue::new("", format!("not valid TOML: {e}"))]),
        };
        let raw = std::sync::Arc::new(doc.clone());
        for key in doc.keys() {
            if !raw::SECTIONS.contains(&key.as_str()) {
                issues.push(Issue::new(key.clone(), "unknown field"));
            }
        }
        let mut sources = BTreeMap::new();
        for key in raw::SECTIONS {
            if let Some(v) = doc.get_mut(*key) {
                raw::resolve_env(v, key, env, &mut sources, &mut issues);
            }
        }
        // Secrets sealed with the gateway's key, as `GET /api/config/export` writes them.
        if text.contains(sealed::PREFIX) {
            let data_dir = raw_data_dir(&raw);
            match sealed::SecretBox::existing(&data_dir, env(sealed::KEY_VAR)) {
                Ok(Some(key)) => {
                    for (k, v) in doc.iter_mut() {
                        raw::open_sealed(v, k, &key, &mut sources, &mut issues);
                    }
                }
                Ok(None) => issues.push(Issue::new(
                    "",
                    format!(
                        "the config holds sealed secrets, but there is no key to open them: set {} to the key that sealed them (or keep secret.key in data_dir)",
                        sealed::KEY_VAR
                    ),
                )),
                Err(e) => issues.push(Issue::new("", e.to_string())),
            }
        }
        let mut take = |k: &str| doc.remove(k);
        let server: RawServer = take("server")
            .and_then(|v| raw::section(v, "server", &mut issues))
            .unwrap_or_default();
        let router: RawRouter = take("router")
            .and_then(|v| raw::section(v, "router", &mut issues))
            .unwrap_or_default();
        let cache: RawCache = take("cache")
            .and_then(|v| raw::section(v, "cache", &mut issues))
            .unwrap_or_default();
        let mut mcp_raw: RawMcp = take("mcp")
            .and_then(|v| raw::section(v, "mcp", &mut issues))
            .unwrap_or_default();
        let mcp_specs: Vec<Option<McpServerSpec>> = array(
            Some(toml::Value::Array(std::mem::take(&mut mcp_raw.servers))),
            "mcp.servers",
            &mut issues,
        );
        let logs: observe::RawLogs = take("logs")
            .and_then(|v| raw::section(v, "logs", &mut issues))
            .unwrap_or_default();
        let responses: observe::RawResponses = take("responses")
            .and_then(|v| raw::section(v, "responses", &mut issues))
            .unwrap_or_default();
        let telemetry: observe::RawTelemetry = take("telemetry")
            .and_then(|v| raw::section(v, "telemetry", &mut issues))
            .unwrap_or_default();
        let governance: governance::RawGovernance = take("governance")
            .and_then(|v| raw::section(v, "governance", &mut issues))
            .unwrap_or_default();
        let prices: BTreeMap<String, toml::Value> = take("prices")
            .and_then(|v| raw::section(v, "prices", &mut issues))
            .unwrap_or_default();
        let providers_raw: Vec<Option<RawProvider>> =
            array(take("providers"), "providers", &mut issues);
        let routes_raw: Vec<Option<RawRoute>> = array(take("routes"), "routes", &mut issues);
        let plugins_raw: Vec<Option<plugins::RawPlugin>> =
            array(take("plugins"), "plugins", &mut issues);

        let server = validate_server(server, &mut issues);
        let router = validate_router(router, &mut issues);
        let mut cache = cache::validate(cache, &mut issues);
        cache.routes = cache::route_policies(&routes_raw, &mut issues);
        let mcp = mcp::validate(mcp_raw, &mcp_specs, &mut issues);
        let logs = observe::validate_logs(logs, &mut issues);
        let responses = observe::validate_responses(responses, &mut issues);
        let plugins = plugins::validate(&plugins_raw, &mut issues);
        let telemetry = observe::validate_telemetry(telemetry, &mut issues);
        let prices = observe::validate_prices(prices, &mut issues);
        let governance = governance::validate(governance, &mut issues);
        for (i, k) in governance.keys.iter().enumerate() {
            plugins::check_key_plugins(&plugins, k, &format!("governance.keys[{i}]"), &mut issues);
        }
        let providers = validate_providers(&providers_raw, &sources, &mut issues);
        let routes = validate_routes(&routes_raw, &providers_raw, &mut issues);
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Config {
            server,
            providers,
            routes,
            router,
            cache,
            mcp,
            logs,
            responses,
            plugins,
            telemetry,
            prices,
            governance,
            zero_config: false,
            source: None,
            raw: Some(raw),
        })
    }

    /// What makes serving on `listen` unsafe: beyond loopback, requests need virtual keys (or the
    /// explicit `allow_unauthenticated`), and the admin API needs `admin_token`.
    pub fn exposure_issues(&self, listen: SocketAddr) -> Vec<Issue> {
        let mut out = Vec::new();
        if listen.ip().to_canonical().is_loopback() {
            return out;
        }
        if !self.governance.require_virtual_key && !self.server.allow_unauthenticated {
            out.push(Issue::new(
                "governance.require_virtual_key",
                format!("the gateway would listen on {listen}, beyond loopback, and spend its provider keys for anyone who reaches it: set [governance] require_virtual_key = true (and create keys), or [server] allow_unauthenticated = true if something in front of it authenticates"),
            ));
        }
        if self.server.admin_token.is_none() {
            out.push(Issue::new(
                "server.admin_token",
                format!("the admin API (/api/*) would be reachable on {listen}, beyond loopback: set [server] admin_token (e.g. \"env.SWITCHYARD_ADMIN_TOKEN\")"),
            ));
        }
        out
    }

    /// The zero-config setup: defaults, and one provider per `*_API_KEY` variable set.
    pub fn zero_config(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut providers = Vec::new();
        for (var, name, kind) in ENV_PROVIDERS {
            let Some(key) = env(var).filter(|k| !k.trim().is_empty()) else {
                continue;
            };
            // The vendors' SDKs honour these too; handy for proxies and local tests.
            let base_var = format!("{}_BASE_URL", name.to_uppercase());
            let base = env(&base_var)
                .or_else(|| kind.default_base_url().map(str::to_owned))
                .unwrap_or_default();
            providers.push(default_provider(
                name,
                *kind,
                base,
                Some((key, format!("env.{var}"))),
            ));
        }
        if let Some(p) = zero_config_bedrock(env) {
            providers.push(p);
        }
        if let Some(url) = env("OLLAMA_BASE_URL").filter(|u| !u.trim().is_empty()) {
            let url = url.trim_end_matches('/');
            let base = if url.ends_with("/v1") {
                url.to_owned()
            } else {
                format!("{url}/v1")
            };
            providers.push(default_provider("ollama", ProviderKind::Ollama, base, None));
        }
        Config {
            server: validate_server(RawServer::default(), &mut Vec::new()),
            providers,
            routes: Vec::new(),
            router: validate_router(RawRouter::default(), &mut Vec::new()),
            cache: CacheConfig::default(),
            mcp: McpConfig::default(),
            logs: LogsConfig::default(),
            responses: ResponsesConfig::default(),
            plugins: Vec::new(),
            governance: governance::GovernanceConfig::default(),
            telemetry: TelemetryConfig::default(),
            prices: BTreeMap::new(),
            zero_config: true,
            source: None,
            raw: None,
        }
    }
}

/// `[server] data_dir` as written (where a sealing key file would be), before validation.
fn raw_data_dir(doc: &toml::Table) -> PathBuf {
    doc.get("server")
        .and_then(|s| s.get("data_dir"))
        .and_then(toml::Value::as_str)
        .map_or_else(|| PathBuf::from("./data"), PathBuf::from)
}

/// Bedrock from the AWS SDKs' variables: `AWS_REGION` (or `AWS_DEFAULT_REGION`) with
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), or a Bedrock API key in
/// `AWS_BEARER_TOKEN_BEDROCK`.
fn zero_config_bedrock(env: &dyn Fn(&str) -> Option<String>) -> Option<ProviderConfig> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"))?;
    let bearer = var("AWS_BEARER_TOKEN_BEDROCK");
    let credentials = var("AWS_ACCESS_KEY_ID")
        .zip(var("AWS_SECRET_ACCESS_KEY"))
        .map(|(i, s)| (Secret::new(i), Secret::new(s)));
    if bearer.is_none() && credentials.is_none() {
        return None;
    }
    let base = var("BEDROCK_BASE_URL")
        .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
    let mut p = default_provider(
        "bedrock",
        ProviderKind::Bedrock,
        base,
        bearer.map(|b| (b, "env.AWS_BEARER_TOKEN_BEDROCK".to_owned())),
    );
    p.aws = Some(AwsConfig {
        region,
        credentials,
        session_token: var("AWS_SESSION_TOKEN").map(Secret::new),
    });
    Some(p)
}

fn default_provider(
    name: &str,
    kind: ProviderKind,
    base_url: String,
    key: Option<(String, String)>,
) -> ProviderConfig {
    ProviderConfig {
        name: name.to_owned(),
        kind,
        base_url: base_url.trim_end_matches('/').to_owned(),
        keys: key
            .map(|(k, source)| KeyConfig {
                secret: Secret::new(k),
                weight: 1.0,
                source,
            })
            .into_iter()
            .collect(),
        timeout: Duration::from_secs(60),
        max_retries: 2,
        api_version: None,
        models: Vec::new(),
        headers: BTreeMap::new(),
        aws: None,
        vertex: None,
    }
}

fn array<T: serde::de::DeserializeOwned>(
    v: Option<toml::Value>,
    path: &str,
    issues: &mut Vec<Issue>,
) -> Vec<Option<T>> {
    match v {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| raw::section(item, &format!("{path}[{i}]"), issues))
            .collect(),
        Some(_) => {
            issues.push(Issue::new(
                path,
                format!("expected an array of tables ([[{path}]])"),
            ));
            Vec::new()
        }
    }
}

fn validate_server(s: RawServer, issues: &mut Vec<Issue>) -> ServerConfig {
    let listen_s = s.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen = listen_s.parse().unwrap_or_else(|_| {
        issues.push(Issue::new(
            "server.listen",
            format!("`{listen_s}` is not an address like 127.0.0.1:8080"),
        ));
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let max_body = s.max_body_bytes.unwrap_or(10 * 1024 * 1024);
    if max_body == 0 {
        issues.push(Issue::new(
            "server.max_body_bytes",
            "must be greater than 0",
        ));
    }
    let timeout = s.request_timeout_ms.unwrap_or(120_000);
    if timeout == 0 {
        issues.push(Issue::new(
            "server.request_timeout_ms",
            "must be greater than 0",
        ));
    }
    let header_ms = s.header_read_timeout_ms.unwrap_or(10_000);
    if header_ms == 0 {
        issues.push(Issue::new(
            "server.header_read_timeout_ms",
            "must be greater than 0",
        ));
    }
    let idle_ms = s.idle_timeout_ms.unwrap_or(30_000);
    if idle_ms == 0 {
        issues.push(Issue::new(
            "server.idle_timeout_ms",
            "must be greater than 0",
        ));
    }
    if s.max_connections == Some(0) {
        issues.push(Issue::new("server.max_connections", "must be at least 1"));
    }
    for (i, h) in s.allowed_hosts.iter().enumerate() {
        if h.is_empty() || h.contains(['/', ' ']) {
            issues.push(Issue::new(
                format!("server.allowed_hosts[{i}]"),
                format!("`{h}` is not a host name (like gateway.internal or 10.0.0.5), nor \"*\""),
            ));
        }
    }
    for (i, o) in s.cors_origins.iter().enumerate() {
        let ok = (o.starts_with("http://") || o.starts_with("https://"))
            && !o
                .trim_end_matches('/')
                .contains(|c: char| c.is_whitespace())
            && o.matches('/').count() <= 3;
        if !ok {
            issues.push(Issue::new(
                format!("server.cors_origins[{i}]"),
                format!("`{o}` is not an origin like https://admin.example.com"),
            ));
        }
    }
    let api_managed = match s.config_source.as_deref() {
        None | Some("file") => false,
        Some("api") => true,
        Some(other) => {
            issues.push(Issue::new(
                "server.config_source",
                format!("`{other}` is not file or api"),
            ));
            false
        }
    };
    let state = match (s.state.as_deref(), s.postgres_url.filter(|u| !u.is_empty())) {
        (None | Some("embedded"), None) => StateConfig::Embedded,
        (None | Some("embedded"), Some(_)) => {
            issues.push(Issue::new(
                "server.postgres_url",
                "only used with state = \"postgres\"",
            ));
            StateConfig::Embedded
        }
        (Some("postgres"), Some(url)) => {
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.contains('='))
            {
                issues.push(Issue::new(
                    "server.postgres_url",
                    "must be a postgres:// URL or a key=value connection string",
                ));
            }
            StateConfig::Postgres(Secret::new(url))
        }
        (Some("postgres"), None) => {
            issues.push(Issue::new(
                "server.postgres_url",
                "state = \"postgres\" needs the database's URL (postgres://user@host/db, or env.NAME)",
            ));
            StateConfig::Embedded
        }
        (Some(other), _) => {
            issues.push(Issue::new(
                "server.state",
                format!("`{other}` is not embedded or postgres"),
            ));
            StateConfig::Embedded
        }
    };
    ServerConfig {
        header_read_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections: s
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        allowed_hosts: s.allowed_hosts,
        allow_unauthenticated: s.allow_unauthenticated.unwrap_or(false),
        state,
        api_managed,
        cors_origins: s
            .cors_origins
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect(),
        listen,
        data_dir: PathBuf::from(s.data_dir.unwrap_or_else(|| "./data".into())),
        admin_token: s.admin_token.filter(|t| !t.is_empty()).map(Secret::new),
        request_timeout: Duration::from_millis(timeout),
        max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
        sse_keep_alive: Duration::from_millis(s.sse_keep_alive_ms.unwrap_or(15_000).max(100)),
    }
}

fn validate_router(r: RawRouter, issues: &mut Vec<Issue>) -> RouterConfig {
    let failures = r.breaker_failures.unwrap_or(5);
    if failures == 0 {
        issues.push(Issue::new("router.breaker_failures", "must be at least 1"));
    }
    RouterConfig {
        retry_base: Duration::from_millis(r.retry_base_ms.unwrap_or(100)),
        retry_max: Duration::from_millis(r.retry_max_ms.unwrap_or(2_000)),
        max_retry_after: Duration::from_millis(r.max_retry_after_ms.unwrap_or(10_000)),
        breaker_failures: failures,
        breaker_cooldown: Duration::from_millis(r.breaker_cooldown_ms.unwrap_or(30_000)),
    }
}

fn validate_weight(w: Option<f64>, path: String, issues: &mut Vec<Issue>) -> f64 {
    let w = w.unwrap_or(1.0);
    if !(w.is_finite() && w > 0.0) {
        issues.push(Issue::new(
            path,
            format!("weight must be a positive number, got {w}"),
        ));
    }
    w
}

fn validate_providers(
    raw: &[Option<RawProvider>],
    sources: &BTreeMap<String, String>,
    issues: &mut Vec<Issue>,
) -> Vec<ProviderConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let Some(p) = p else { continue };
        let at = format!("providers[{i}]");
        if p.name.is_empty() || p.name.contains('/') {
            issues.push(Issue::new(
                format!("{at}.name"),
                "must be non-empty and contain no `/`",
            ));
        }
        if !seen.insert(p.name.clone()) {
            issues.push(Issue::new(
                format!("{at}.name"),
                format!("duplicate provider name `{}`", p.name),
            ));
        }
        let Some(kind) = ProviderKind::parse(&p.kind) else {
            let msg = format!(
                "unknown kind `{}`; expected one of: {}",
                p.kind,
                ProviderKind::NAMES.join(", ")
            );
            issues.push(Issue::new(format!("{at}.kind"), msg));
            continue;
        };
        let aws = aws_config(p, kind, &at, issues);
        let vertex = vertex_config(p, kind, &at, issues);
        let regional = aws
            .as_ref()
            .map(|a| format!("https://bedrock-runtime.{}.amazonaws.com", a.region))
            .or_else(|| {
                (kind == ProviderKind::Vertex).then(|| {
                    vertex_host(
                        p.location
                            .as_deref()
                            .filter(|l| !l.is_empty())
                            .unwrap_or("us-central1"),
                    )
                })
            });
        let base_url = match p
            .base_url
            .as_deref()
            .or(kind.default_base_url())
            .or(regional.as_deref())
        {
            Some(u)
                if (u.starts_with("http://") || u.starts_with("https://"))
                    && reqwest::Url::parse(u).is_ok() =>
            {
                u.trim_end_matches('/').to_owned()
            }
            Some(u) => {
                issues.push(Issue::new(
                    format!("{at}.base_url"),
                    format!("`{u}` is not an http(s) URL"),
                ));
                String::new()
            }
            None => {
                issues.push(Issue::new(
                    format!("{at}.base_url"),
                    format!("required for kind `{}`", kind.as_str()),
                ));
                String::new()
            }
        };
        if kind == ProviderKind::Bedrock
            && p.keys.is_empty()
            && aws.as_ref().is_some_and(|a| a.credentials.is_none())
        {
            issues.push(Issue::new(
                format!("{at}.aws_access_key_id"),
                "kind `bedrock` needs aws_access_key_id and aws_secret_access_key (or `keys` holding Bedrock API keys)",
            ));
        }
        if p.keys.is_empty() && kind.needs_key() {
            issues.push(Issue::new(
                format!("{at}.keys"),
                format!("kind `{}` needs at least one key", kind.as_str()),
            ));
        }
        let keys = p
            .keys
            .iter()
            .enumerate()
            .map(|(j, k)| {
                let (value, weight, vpath) = match k {
                    RawKey::Plain(v) => (v, None, format!("{at}.keys[{j}]")),
                    RawKey::Weighted { value, weight } => {
                        (value, *weight, format!("{at}.keys[{j}].value"))
                    }
                };
                if value.is_empty() {
                    issues.push(Issue::new(vpath.clone(), "key is empty"));
                }
                KeyConfig {
                    secret: Secret::new(value.clone()),
                    weight: validate_weight(weight, format!("{at}.keys[{j}].weight"), issues),
                    source: sources
                        .get(&vpath)
                        .cloned()
                        .unwrap_or_else(|| "inline".into()),
                }
            })
            .collect();
        if p.timeout_ms == Some(0) {
            issues.push(Issue::new(
                format!("{at}.timeout_ms"),
                "must be greater than 0",
            ));
        }
        if p.api_version.is_some() && kind != ProviderKind::Azure {
            issues.push(Issue::new(
                format!("{at}.api-version"),
                "only used by kind `azure`",
            ));
        }
        out.push(ProviderConfig {
            name: p.name.clone(),
            kind,
            base_url,
            keys,
            timeout: Duration::from_millis(p.timeout_ms.unwrap_or(60_000)),
            max_retries: p.max_retries.unwrap_or(2),
            api_version: (kind == ProviderKind::Azure)
                .then(|| p.api_version.clone().unwrap_or_else(|| "2024-10-21".into())),
            models: p.models.clone(),
            headers: p
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                .collect(),
            aws,
            vertex,
        });
    }
    out
}

/// Vertex AI's host for a location (`global` has no regional prefix).
pub fn vertex_host(location: &str) -> String {
    if location == "global" {
        "https://aiplatform.googleapis.com".into()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    }
}

/// Vertex AI's `project`, `location` and `credentials` (a key file's path, or its JSON), checked:
/// the key must be a service-account key with an email and a PKCS#8 private key.
fn vertex_config(
    p: &RawProvider,
    kind: ProviderKind,
    at: &str,
    issues: &mut Vec<Issue>,
) -> Option<VertexConfig> {
    if kind != ProviderKind::Vertex {
        for (field, v) in [
            ("project", &p.project),
            ("location", &p.location),
            ("credentials", &p.credentials),
        ] {
            if v.is_some() {
                issues.push(Issue::new(
                    format!("{at}.{field}"),
                    "only used by kind `vertex`",
                ));
            }
        }
        return None;
    }
    let Some(cred) = p
        .credentials
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        issues.push(Issue::new(
            format!("{at}.credentials"),
            "kind `vertex` needs a service-account key: its path or its JSON (e.g. \"env.GOOGLE_APPLICATION_CREDENTIALS\")",
        ));
        return None;
    };
    let json = if cred.starts_with('{') {
        cred.to_owned()
    } else {
        match std::fs::read_to_string(cred) {
            Ok(t) => t,
            Err(e) => {
                issues.push(Issue::new(
                    format!("{at}.credentials"),
                    format!("cannot read the key file: {e}"),
                ));
                return None;
            }
        }
    };
    let key: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => {
            issues.push(Issue::new(
                format!("{at}.credentials"),
                format!("the key is not JSON: {e}"),
            ));
            return None;
        }
    };
    let field = |k: &str| {
        key.get(k)
            .and_then(serde_json::Value::as_str)
            .filter(|v| !v.is_empty())
    };
    if field("type") != Some("service_account") || field("client_email").is_none() {
        issues.push(Issue::new(
            format!("{at}.credentials"),
            "not a service-account key (`type` must be `service_account`, with a `client_email`)",
        ));
        return None;
    }
    use rustls_pki_types::pem::PemObject;
    let pem_ok = field("private_key").is_some_and(|k| {
        rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(k.as_bytes()).is_ok_and(|der| {
            ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).is_ok()
        })
    });
    if !pem_ok {
        issues.push(Issue::new(
            format!("{at}.credentials"),
            "the key's `private_key` is not a PEM PKCS#8 RSA private key",
        ));
        return None;
    }
    let project = p
        .project
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| field("project_id").map(str::to_owned));
    let Some(project) = project else {
        issues.push(Issue::new(
            format!("{at}.project"),
            "kind `vertex` needs a project (or a key with `project_id`)",
        ));
        return None;
    };
    let location = p
        .location
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "us-central1".into());
    if !location
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        issues.push(Issue::new(
            format!("{at}.location"),
            format!(
                "`{location}` is not a Google Cloud location (e.g. \"us-central1\", \"global\")"
            ),
        ));
    }
    Some(VertexConfig {
        project,
        location,
        credentials: Secret::new(json),
    })
}

/// Bedrock's `region` and AWS credentials, checked; these fields on another kind are reported.
fn aws_config(
    p: &RawProvider,
    kind: ProviderKind,
    at: &str,
    issues: &mut Vec<Issue>,
) -> Option<AwsConfig> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    let (region, id, secret, token) = (
        given(&p.region),
        given(&p.aws_access_key_id),
        given(&p.aws_secret_access_key),
        given(&p.aws_session_token),
    );
    if kind != ProviderKind::Bedrock {
        for (field, v) in [
            ("region", &p.region),
            ("aws_access_key_id", &p.aws_access_key_id),
            ("aws_secret_access_key", &p.aws_secret_access_key),
            ("aws_session_token", &p.aws_session_token),
        ] {
            if v.is_some() {
                issues.push(Issue::new(
                    format!("{at}.{field}"),
                    "only used by kind `bedrock`",
                ));
            }
        }
        return None;
    }
    let Some(region) = region else {
        issues.push(Issue::new(
            format!("{at}.region"),
            "kind `bedrock` needs a region (e.g. \"us-east-1\")",
        ));
        return None;
    };
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        issues.push(Issue::new(
            format!("{at}.region"),
            format!("`{region}` is not an AWS region name (e.g. \"us-east-1\")"),
        ));
    }
    let credentials = match (id, secret) {
        (Some(i), Some(s)) => Some((Secret::new(i), Secret::new(s))),
        (None, None) => None,
        (Some(_), None) => {
            issues.push(Issue::new(
                format!("{at}.aws_secret_access_key"),
                "required with aws_access_key_id",
            ));
            None
        }
        (None, Some(_)) => {
            issues.push(Issue::new(
                format!("{at}.aws_access_key_id"),
                "required with aws_secret_access_key",
            ));
            None
        }
    };
    Some(AwsConfig {
        region,
        credentials,
        session_token: token.map(Secret::new),
    })
}

fn validate_routes(
    raw: &[Option<RawRoute>],
    providers: &[Option<RawProvider>],
    issues: &mut Vec<Issue>,
) -> Vec<RouteConfig> {
    let names: HashSet<&str> = providers
        .iter()
        .flatten()
        .map(|p| p.name.as_str())
        .collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let target =
        |model: &str, weight: f64, path: String, issues: &mut Vec<Issue>| -> Option<TargetConfig> {
            let Some((provider, upstream)) = model.split_once('/') else {
                issues.push(Issue::new(
                    path,
                    format!("`{model}` must be `provider/model`"),
                ));
                return None;
            };
            if !names.contains(provider) {
                issues.push(Issue::new(
                    path,
                    format!(
                        "unknown provider `{provider}` (configured: {})",
                        sorted(&names)
                    ),
                ));
                return None;
            }
            Some(TargetConfig {
                provider: provider.to_owned(),
                model: upstream.to_owned(),
                weight,
            })
        };
    for (i, r) in raw.iter().enumerate() {
        let Some(r) = r else { continue };
        let at = format!("routes[{i}]");
        if r.model.is_empty() {
            issues.push(Issue::new(format!("{at}.model"), "must not be empty"));
        }
        if !seen.insert(r.model.clone()) {
            issues.push(Issue::new(
                format!("{at}.model"),
                format!("duplicate route `{}`", r.model),
            ));
        }
        if r.targets.is_empty() {
            issues.push(Issue::new(
                format!("{at}.targets"),
                "a route needs at least one target",
            ));
        }
        let targets = r
            .targets
            .iter()
            .enumerate()
            .filter_map(|(j, t)| {
                let w = validate_weight(t.weight, format!("{at}.targets[{j}].weight"), issues);
                target(&t.model, w, format!("{at}.targets[{j}].model"), issues)
            })
            .collect();
        let fallbacks = r
            .fallbacks
            .iter()
            .enumerate()
            .filter_map(|(j, f)| target(f, 1.0, format!("{at}.fallbacks[{j}]"), issues))
            .collect();
        out.push(RouteConfig {
            model: r.model.clone(),
            targets,
            fallbacks,
        });
    }
    out
}

fn sorted(names: &HashSet<&str>) -> String {
    let mut v: Vec<&str> = names.iter().copied().collect();
    v.sort_unstable();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests;
