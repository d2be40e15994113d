//! One long-lived connection per MCP server: connect, list tools, health-check, reconnect.
//!
//! A supervisor task owns the rmcp client. It publishes a [`Snapshot`] (status, peer, tools)
//! through an `ArcSwap`, so requests read it without locks and never wait on a server that is
//! down: they see `reconnecting` and get a tool error instead.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest,
    Implementation, PingRequest,
};
use rmcp::service::{NotificationContext, Peer, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::naming;
use super::sse_client;
use crate::chat::{Extra, FunctionDef, Schema, Tool};
use crate::config::{McpServerConfig, McpTransport};

/// Bound on connecting and listing tools.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a connected server is pinged.
const HEALTH_EVERY: Duration = Duration::from_secs(15);
/// How long a ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One tool of a server, as offered to models.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    /// `server__tool` (possibly shortened).
    pub exposed: String,
    /// The name the server knows it by.
    pub original: String,
    /// Server name.
    pub server: String,
    /// For the model.
    pub description: Option<String>,
    /// JSON Schema of the arguments (shared: every request offering the tool copies it once).
    pub input_schema: Schema,
    /// SHA-256 of the tool as offered to the model ([`ToolEntry::as_tool`] in JSON), computed
    /// once when the server lists it: the cache keys a request's offered tools by it instead of
    /// encoding every schema again per request.
    pub digest: [u8; 32],
}

impl ToolEntry {
    fn new(
        exposed: String,
        original: String,
        server: String,
        description: Option<String>,
        input_schema: Value,
    ) -> Self {
        // The tool's JSON as offered to models is made once, with the schema's.
        let input_schema = Schema::prepared_tool(input_schema, &exposed, description.as_deref());
        let mut entry = Self {
            exposed,
            original,
            server,
            description,
            input_schema,
            digest: [0; 32],
        };
        // Encoding a tool (strings and a JSON value) into a Vec cannot fail.
        let bytes = serde_json::to_vec(&entry.as_tool()).unwrap_or_default();
        entry.digest = Sha256::digest(&bytes).into();
        entry
    }

    /// The tool as the model is offered it (a function named `server__tool`).
    pub fn as_tool(&self) -> Tool {
        Tool {
            kind: "function".into(),
            function: FunctionDef {
                name: self.exposed.clone(),
                description: self.description.clone(),
                parameters: Some(self.input_schema.clone()),
                extra: Extra::new(),
            },
        }
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// First attempt under way.
    Connecting,
    /// Up.
    Connected {
        /// Unix seconds.
        since: u64,
    },
    /// Down; trying again.
    Reconnecting {
        /// Why the last attempt or connection failed.
        error: String,
        /// Attempts since it was last up.
        attempt: u32,
    },
    /// Removed or shutting down.
    Stopped,
}

impl Status {
    /// `connecting`, `connected`, `reconnecting`, `stopped`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected { .. } => "connected",
            Self::Reconnecting { .. } => "reconnecting",
            Self::Stopped => "stopped",
        }
    }
}

/// What requests see of a connection.
#[derive(Clone)]
pub struct Snapshot {
    /// Where it stands.
    pub status: Status,
    /// The client, while connected.
    pub peer: Option<Peer<RoleClient>>,
    /// Offered tools (after `allowed_tools`), the last known list.
    pub tools: Arc<Vec<Arc<ToolEntry>>>,
    /// Server name and version from its handshake.
    pub server_info: Option<String>,
    /// `allowed_tools` entries the server does not have.
    pub unknown_allowed: Vec<String>,
}

/// Why connecting failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(pub String);

/// A live client and its tools.
pub struct Connected {
    running: RunningService<RoleClient, HubClient>,
    tools: Vec<Arc<ToolEntry>>,
    unknown_allowed: Vec<String>,
    tools_changed: Arc<Notify>,
    server_info: Option<String>,
}

/// Our side of the MCP session: says who we are, hears about tool list changes.
#[derive(Clone)]
pub struct HubClient {
    tools_changed: Arc<Notify>,
}

impl ClientHandler for HubClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("switchyard", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn on_tool_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }
}

/// A registered server and its supervisor's published state.
pub struct ServerHandle {
    /// Its configuration.
    pub config: McpServerConfig,
    /// Registered through the admin API (persisted) rather than the config file.
    pub dynamic: bool,
    state: ArcSwap<Snapshot>,
    stop: CancellationToken,
}

impl ServerHandle {
    /// A handle in `connecting` state; `stop` ends its supervisor.
    pub fn new(config: McpServerConfig, dynamic: bool, stop: CancellationToken) -> Self {
        Self {
            config,
            dynamic,
            state: ArcSwap::from_pointee(Snapshot {
                status: Status::Connecting,
                peer: None,
                tools: Arc::new(Vec::new()),
                server_info: None,
                unknown_allowed: Vec::new(),
            }),
            stop,
        }
    }

    /// The current state.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Whether `s` is the current state (no reference counted).
    pub(crate) fn is_current(&self, s: &Arc<Snapshot>) -> bool {
        Arc::ptr_eq(&self.state.load(), s)
    }

    /// Ends the supervisor and closes the connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn publish(&self, f: impl FnOnce(&Snapshot) -> Snapshot) {
        let next = f(&self.state.load());
        self.state.store(Arc::new(next));
    }

    fn set_connected(&self, c: &Connected) {
        self.publish(|_| Snapshot {
            status: Status::Connected {
                since: crate::chat::unix_now(),
            },
            peer: Some(c.running.peer().clone()),
            tools: Arc::new(c.tools.clone()),
            server_info: c.server_info.clone(),
            unknown_allowed: c.unknown_allowed.clone(),
        });
    }

    fn set_down(&self, status: Status) {
        self.publish(|s| Snapshot {
            status,
            peer: None,
            tools: s.tools.clone(),
            server_info: s.server_info.clone(),
            unknown_allowed: s.unknown_allowed.clone(),
        });
    }
}

/// Connects, handshakes and lists the tools, within [`CONNECT_TIMEOUT`].
pub async fn connect(
    config: &McpServerConfig,
    http: &reqwest::Client,
) -> Result<Connected, ConnectError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(config, http)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError(format!(
            "no answer within {} s (handshake and tools/list)",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

async fn connect_inner(
    config: &McpServerConfig,
    http: &reqwest::Client,
) -> Result<Connected, ConnectError> {
    let tools_changed = Arc::new(Notify::new());
    let client = HubClient {
        tools_changed: tools_changed.clone(),
    };
    let name = config.name.as_str();
    let running = match &config.transport {
        McpTransport::Stdio { command, args, env } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).kill_on_drop(true);
            for (k, v) in env {
                cmd.env(k, v.expose());
            }
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| ConnectError(format!("cannot start `{command}`: {e}")))?;
            if let Some(stderr) = stderr {
                forward_stderr(name.to_owned(), stderr);
            }
            client.serve(transport).await.map_err(|e| {
                ConnectError(format!(
                    "`{command}` did not complete the MCP handshake: {e}"
                ))
            })?
        }
        McpTransport::Http { url, headers } => {
            let mut map = HashMap::new();
            for (k, v) in headers {
                let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    axum::http::HeaderValue::from_str(v.expose()),
                ) else {
                    return Err(ConnectError(format!("header `{k}` is not valid")));
                };
                map.insert(k, v);
            }
            let cfg =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(map);
            let transport = StreamableHttpClientTransport::with_client(http.clone(), cfg);
            client
                .serve(transport)
                .await
                .map_err(|e| url_error(url, &e))?
        }
        McpTransport::Sse { url, headers } => {
            let transport = sse_client::connect(http, url, headers)
                .await
                .map_err(|e| url_error(url, &e))?;
            client
                .serve(transport)
                .await
                .map_err(|e| url_error(url, &e))?
        }
    };
    let server_info = running.peer_info().and_then(|i| {
        i.server_info
            .as_ref()
            .map(|s| format!("{} {}", s.name, s.version))
    });
    let listed = running
        .list_all_tools()
        .await
        .map_err(|e| ConnectError(format!("tools/list failed: {e}")))?;
    let (tools, unknown_allowed) = catalog(config, &listed)?;
    Ok(Connected {
        running,
        tools,
        unknown_allowed,
        tools_changed,
        server_info,
    })
}

/// An error about `url`, with the URL's query string (which may hold a token) left out.
fn url_error(url: &str, e: &dyn std::fmt::Display) -> ConnectError {
    let shown = url.split(['?', '#']).next().unwrap_or_default();
    let msg = e.to_string().replace(url, shown);
    ConnectError(format!("{shown}: {msg}"))
}

/// Offered tools of a server: `allowed_tools` applied, names made valid, collisions rejected.
pub fn catalog(
    config: &McpServerConfig,
    listed: &[rmcp::model::Tool],
) -> Result<(Vec<Arc<ToolEntry>>, Vec<String>), ConnectError> {
    let mut out: Vec<ToolEntry> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for t in listed {
        let original = t.name.to_string();
        if let Some(allowed) = &config.allowed_tools
            && !allowed.iter().any(|a| a == &original)
        {
            continue;
        }
        let exposed = naming::exposed(&config.name, &original);
        if let Some(prev) = seen.insert(exposed.clone(), original.clone()) {
            return Err(ConnectError(format!(
                "tools `{prev}` and `{original}` of server `{}` would both be offered as `{exposed}`; \
                 list one of them in allowed_tools",
                config.name
            )));
        }
        out.push(ToolEntry::new(
            exposed,
            original,
            config.name.clone(),
            t.description.as_ref().map(|d| d.to_string()),
            Value::Object((*t.input_schema).clone()),
        ));
    }
    // A stable order: the same tools give the same request (and the same cache key) every time.
    out.sort_by(|a, b| a.exposed.cmp(&b.exposed));
    let unknown = config
        .allowed_tools
        .iter()
        .flatten()
        .filter(|a| !listed.iter().any(|t| t.name == a.as_str()))
        .cloned()
        .collect();
    // Shared: every request offered a tool holds the entry, not a copy of it.
    Ok((out.into_iter().map(Arc::new).collect(), unknown))
}

/// The server's stderr, line by line, into our log.
fn forward_stderr(server: String, stderr: tokio::process::ChildStderr) {
    // Ends by itself when the child exits; holds nothing shutdown must wait for.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "switchyard::mcp::stderr", server = %server, "{line}");
        }
    });
}

/// Keeps a server connected until `handle` is stopped: health checks, tool list refresh,
/// reconnect with exponential backoff. `first` is an already made connection, if any.
pub async fn supervise(handle: Arc<ServerHandle>, first: Option<Connected>, http: reqwest::Client) {
    let name = handle.config.name.clone();
    let mut next = first;
    let mut attempt: u32 = 0;
    let mut backoff = BACKOFF_MIN;
    loop {
        let conn = match next.take() {
            Some(c) => c,
            None => {
                let r = tokio::select! {
                    () = handle.stop.cancelled() => break,
                    r = connect(&handle.config, &http) => r,
                };
                match r {
                    Ok(c) => c,
                    Err(e) => {
                        attempt += 1;
                        tracing::warn!(server = %name, attempt, error = %e, retry_in_ms = backoff.as_millis() as u64, "MCP server unavailable");
                        handle.set_down(Status::Reconnecting {
                            error: e.0,
                            attempt,
                        });
                        tokio::select! {
                            () = handle.stop.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
        };
        tracing::info!(server = %name, tools = conn.tools.len(), "MCP server connected");
        handle.set_connected(&conn);
        backoff = BACKOFF_MIN;
        let Some(why) = watch(&handle, conn).await else {
            break;
        };
        attempt = 1;
        tracing::warn!(server = %name, error = %why, "MCP server connection lost; reconnecting");
        handle.set_down(Status::Reconnecting {
            error: why,
            attempt,
        });
    }
    handle.set_down(Status::Stopped);
}

/// Watches a live connection; returns why it ended, or `None` when the handle was stopped.
async fn watch(handle: &ServerHandle, conn: Connected) -> Option<String> {
    let Connected {
        running,
        tools_changed,
        ..
    } = conn;
    let peer = running.peer().clone();
    let mut closed = std::pin::pin!(running.waiting());
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            () = handle.stop.cancelled() => return None,
            r = &mut closed => {
                return Some(match r {
                    Ok(q) => format!("connection closed ({q:?})"),
                    Err(e) => format!("connection task failed: {e}"),
                });
            }
            () = tools_changed.notified() => {
                match tokio::time::timeout(PING_TIMEOUT, peer.list_all_tools()).await {
                    Ok(Ok(listed)) => match catalog(&handle.config, &listed) {
                        Ok((tools, unknown)) => handle.publish(|s| Snapshot {
                            tools: Arc::new(tools),
                            unknown_allowed: unknown,
                            ..s.clone()
                        }),
                        Err(e) => tracing::warn!(server = %handle.config.name, error = %e, "new tool list rejected; keeping the old one"),
                    },
                    Ok(Err(e)) => return Some(format!("tools/list failed: {e}")),
                    Err(_) => return Some("tools/list timed out".into()),
                }
            }
            _ = tick.tick() => {
                let ping = ClientRequest::PingRequest(PingRequest {
                    method: Default::default(),
                    extensions: Default::default(),
                });
                match tokio::time::timeout(PING_TIMEOUT, peer.send_request(ping)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Some(format!("ping failed: {e}")),
                    Err(_) => return Some(format!("no answer to ping within {} s", PING_TIMEOUT.as_secs())),
                }
            }
        }
    }
}

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The tool answered.
    Ok,
    /// The tool answered with `isError`.
    ToolError,
    /// No answer within the timeout.
    Timeout,
    /// The server is down, or the call failed at the protocol level.
    Failed,
}

impl CallOutcome {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ToolError => "tool_error",
            Self::Timeout => "timeout",
            Self::Failed => "failed",
        }
    }
}

/// Calls `tool` (its original name) on `peer` within `timeout`; every failure becomes text the
/// model can read. Dropping the future cancels the call (rmcp sends `notifications/cancelled`).
pub async fn call(
    peer: &Peer<RoleClient>,
    tool: &str,
    args: Map<String, Value>,
    timeout: Duration,
) -> (CallOutcome, String) {
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(args);
    match tokio::time::timeout(timeout, peer.call_tool(params)).await {
        Ok(Ok(result)) => {
            let text = result_text(&result);
            if result.is_error == Some(true) {
                (CallOutcome::ToolError, text)
            } else {
                (CallOutcome::Ok, text)
            }
        }
        Ok(Err(e)) => (CallOutcome::Failed, format!("the tool call failed: {e}")),
        Err(_) => (
            CallOutcome::Timeout,
            format!("the tool did not answer within {} ms", timeout.as_millis()),
        ),
    }
}

/// The text a model reads for a tool result: text blocks as they are, other blocks and
/// structured content as JSON.
pub fn result_text(r: &CallToolResult) -> String {
    let mut parts: Vec<String> = r
        .content
        .iter()
        .map(|b| match b.as_text() {
            Some(t) => t.text.clone(),
            None => serde_json::to_string(b).unwrap_or_default(),
        })
        .collect();
    if parts.is_empty()
        && let Some(s) = &r.structured_content
    {
        parts.push(s.to_string());
    }
    parts.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, description: &str, schema: Value) -> ToolEntry {
        ToolEntry::new(
            name.into(),
            "add".into(),
            "calc".into(),
            Some(description.into()),
            schema,
        )
    }

    #[test]
    fn a_tools_digest_covers_everything_the_model_is_offered() {
        let schema = serde_json::json!({"type": "object", "properties": {"a": {"type": "number"}}});
        let a = entry("calc__add", "Adds.", schema.clone());
        assert_eq!(
            a.digest,
            <[u8; 32]>::from(Sha256::digest(
                serde_json::to_vec(&a.as_tool()).expect("encode")
            ))
        );
        assert_eq!(a.digest, entry("calc__add", "Adds.", schema.clone()).digest);
        let others = [
            entry("calc__sum", "Adds.", schema.clone()),
            entry("calc__add", "Adds two numbers.", schema),
            entry(
                "calc__add",
                "Adds.",
                serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
            ),
        ];
        for o in others {
            assert_ne!(a.digest, o.digest, "{:?}", o.as_tool());
        }
    }
}
