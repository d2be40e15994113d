//! `[mcp]`: tool-loop bounds and the MCP servers to connect to, validated.
//!
//! One [`McpServerSpec`] is what a user writes, in `[[mcp.servers]]` or as the JSON body of
//! `POST /api/mcp/servers`; [`McpServerSpec::validate`] turns it into an [`McpServerConfig`].
//! Specs registered at run time are persisted as written (`env.NAME` unresolved), so a secret
//! taken from the environment never reaches the disk.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::RawMcp;
use super::{Issue, Secret};

/// Default bound on tool rounds per request.
pub const DEFAULT_MAX_ITERATIONS: u32 = 8;
/// Longest server name: leaves room for the tool part of `server__tool` within 64 characters.
pub const MAX_SERVER_NAME: usize = 32;

/// One MCP server as written by the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerSpec {
    /// Prefix of its tools (`name__tool`).
    pub name: String,
    /// `stdio` (default), `http` (streamable HTTP) or `sse` (legacy HTTP+SSE).
    #[serde(default = "stdio")]
    pub transport: String,
    /// stdio: the program to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// stdio: its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// stdio: extra environment variables (values may be `env.NAME`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// http/sse: the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// http/sse: extra request headers (values may be `env.NAME`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Only these tools (original names) are offered; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
}

fn stdio() -> String {
    "stdio".to_owned()
}

/// How to reach a server.
#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// A child process speaking JSON-RPC on stdin/stdout.
    Stdio {
        /// Program.
        command: String,
        /// Arguments.
        args: Vec<String>,
        /// Extra environment (resolved).
        env: Vec<(String, Secret)>,
    },
    /// Streamable HTTP (MCP 2025-03-26 and later).
    Http {
        /// Endpoint URL.
        url: String,
        /// Extra headers (resolved).
        headers: Vec<(String, Secret)>,
    },
    /// Legacy HTTP+SSE (MCP 2024-11-05): GET an event stream, POST messages to the endpoint it names.
    Sse {
        /// The SSE endpoint URL.
        url: String,
        /// Extra headers (resolved).
        headers: Vec<(String, Secret)>,
    },
}

impl McpTransport {
    /// `stdio`, `http` or `sse`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdio { .. } => "stdio",
            Self::Http { .. } => "http",
            Self::Sse { .. } => "sse",
        }
    }
}

/// One MCP server, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct McpServerConfig {
    /// Prefix of its tools.
    pub name: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// Only these tools are offered (original names); all when `None`.
    pub allowed_tools: Option<Vec<String>>,
    /// What the user wrote (persisted for run-time registrations).
    pub spec: McpServerSpec,
}

/// `[mcp]`, validated.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// Bound on tool rounds per request.
    pub max_iterations: u32,
    /// Bound on one tool call.
    pub tool_timeout: Duration,
    /// Servers from the config file.
    pub servers: Vec<McpServerConfig>,
    /// `Host` values `/mcp` accepts besides loopback; `["*"]` accepts any (merged with
    /// `[server] allowed_hosts`).
    pub allowed_hosts: Vec<String>,
    /// Whether `POST /api/mcp/servers` may register a stdio server (which runs a command on this
    /// host) when no admin token is set.
    pub allow_stdio_registration: bool,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            max_iterations: DEFAULT_MAX_ITERATIONS,
            tool_timeout: Duration::from_secs(30),
            servers: Vec::new(),
            allowed_hosts: Vec::new(),
            allow_stdio_registration: false,
        }
    }
}

/// Checks a server name: it becomes the prefix of tool names.
pub fn check_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SERVER_NAME {
        return Err(format!(
            "must be 1 to {MAX_SERVER_NAME} characters, got {}",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "`{name}` may only use letters, digits, `_` and `-` (it prefixes tool names)"
        ));
    }
    if name.contains("__") || name.starts_with('_') || name.ends_with('_') {
        return Err(format!(
            "`{name}` must not contain `__` or start or end with `_` (`__` separates server and tool)"
        ));
    }
    Ok(())
}

impl McpServerSpec {
    /// Validates the spec; `env.NAME` values are resolved through `env`. `path` prefixes the
    /// issue paths (`mcp.servers[0]` in a file, empty for the API).
    pub fn validate(
        &self,
        path: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<McpServerConfig, Vec<Issue>> {
        let mut issues = Vec::new();
        let at = |field: &str| {
            if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        if let Err(e) = check_server_name(&self.name) {
            issues.push(Issue::new(at("name"), e));
        }
        let mut resolve = |field: &str, map: &BTreeMap<String, String>| -> Vec<(String, Secret)> {
            let mut out = Vec::new();
            for (k, v) in map {
                match v.strip_prefix("env.") {
                    Some(var) => match env(var) {
                        Some(val) => out.push((k.clone(), Secret::new(val))),
                        None => issues.push(Issue::new(
                            at(&format!("{field}.{k}")),
                            format!("environment variable `{var}` is not set"),
                        )),
                    },
                    None => out.push((k.clone(), Secret::new(v.clone()))),
                }
            }
            out
        };
        let env_vars = resolve("env", &self.env);
        let headers = resolve("headers", &self.headers);
        for (k, v) in &headers {
            if axum::http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                issues.push(Issue::new(
                    at(&format!("headers.{k}")),
                    "not a valid header name",
                ));
            }
            if axum::http::HeaderValue::from_str(v.expose()).is_err() {
                issues.push(Issue::new(
                    at(&format!("headers.{k}")),
                    "not a valid header value",
                ));
            }
        }
        let url = || match self.url.as_deref().map(str::trim) {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(u.to_owned()),
            Some(u) => Err(Issue::new(
                at("url"),
                format!("`{u}` is not an http(s) URL"),
            )),
            None => Err(Issue::new(
                at("url"),
                format!("transport `{}` needs a url", self.transport),
            )),
        };
        let misplaced = |issues: &mut Vec<Issue>, fields: &[(&str, bool)]| {
            for (f, set) in fields {
                if *set {
                    issues.push(Issue::new(
                        at(f),
                        format!("not used by transport `{}`", self.transport),
                    ));
                }
            }
        };
        let transport = match self.transport.as_str() {
            "stdio" => {
                misplaced(
                    &mut issues,
                    &[
                        ("url", self.url.is_some()),
                        ("headers", !self.headers.is_empty()),
                    ],
                );
                match self.command.as_deref().map(str::trim) {
                    Some(c) if !c.is_empty() => Some(McpTransport::Stdio {
                        command: c.to_owned(),
                        args: self.args.clone(),
                        env: env_vars,
                    }),
                    _ => {
                        issues.push(Issue::new(
                            at("command"),
                            "transport `stdio` needs a command, e.g. \"mcp-calculator\"",
                        ));
                        None
                    }
                }
            }
            "http" | "sse" => {
                misplaced(
                    &mut issues,
                    &[
                        ("command", self.command.is_some()),
                        ("args", !self.args.is_empty()),
                        ("env", !self.env.is_empty()),
                    ],
                );
                match url() {
                    Ok(url) if self.transport == "http" => {
                        Some(McpTransport::Http { url, headers })
                    }
                    Ok(url) => Some(McpTransport::Sse { url, headers }),
                    Err(i) => {
                        issues.push(i);
                        None
                    }
                }
            }
            other => {
                issues.push(Issue::new(
                    at("transport"),
                    format!("`{other}` is not a transport; use `stdio`, `http` or `sse`"),
                ));
                None
            }
        };
        if let Some(tools) = &self.allowed_tools
            && tools.iter().any(|t| t.trim().is_empty())
        {
            issues.push(Issue::new(
                at("allowed_tools"),
                "tool names must not be empty",
            ));
        }
        match transport {
            Some(transport) if issues.is_empty() => Ok(McpServerConfig {
                name: self.name.clone(),
                transport,
                allowed_tools: self.allowed_tools.clone(),
                spec: self.clone(),
            }),
            _ => Err(issues),
        }
    }
}

/// Validates `[mcp]`, recording problems with their field paths.
pub fn validate(m: RawMcp, specs: &[Option<McpServerSpec>], issues: &mut Vec<Issue>) -> McpConfig {
    let max_iterations = m.max_iterations.unwrap_or(DEFAULT_MAX_ITERATIONS);
    if max_iterations > 100 {
        issues.push(Issue::new(
            "mcp.max_iterations",
            format!("must be at most 100, got {max_iterations}"),
        ));
    }
    let timeout_ms = m.tool_timeout_ms.unwrap_or(30_000);
    if timeout_ms == 0 {
        issues.push(Issue::new("mcp.tool_timeout_ms", "must be at least 1"));
    }
    let mut servers: Vec<McpServerConfig> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let Some(spec) = spec else { continue };
        let path = format!("mcp.servers[{i}]");
        // `env.NAME` values were resolved (and missing ones reported) for the whole file already.
        match spec.validate(&path, &|_| None) {
            Ok(s) => {
                if servers.iter().any(|o| o.name == s.name) {
                    issues.push(Issue::new(
                        format!("{path}.name"),
                        format!("another server is already named `{}`", s.name),
                    ));
                } else {
                    servers.push(s);
                }
            }
            Err(mut v) => issues.append(&mut v),
        }
    }
    McpConfig {
        max_iterations,
        tool_timeout: Duration::from_millis(timeout_ms.max(1)),
        servers,
        allowed_hosts: m.allowed_hosts,
        allow_stdio_registration: m.allow_stdio_registration.unwrap_or(false),
    }
}
