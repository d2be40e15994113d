//! McpHub: the registered servers, their tools, and tool calls by exposed name.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use sha2::{Digest, Sha256};

use super::conn::{self, CallOutcome, ServerHandle, Snapshot, Status, ToolEntry};
use super::toolloop::Continuations;
use super::{McpError, McpOptions, naming};
use crate::config::{McpConfig, McpServerConfig, McpServerSpec, McpTransport};
use crate::store::{Store, trees};
use crate::telemetry::metrics::Metrics;

/// The registered MCP servers.
pub struct McpHub {
    servers: RwLock<BTreeMap<String, Arc<ServerHandle>>>,
    config: McpConfig,
    store: Option<Store>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    http: reqwest::Client,
    /// Serializes registrations so two with one name cannot both connect.
    registering: tokio::sync::Mutex<()>,
    /// A fleet's shared registrations (`[server] state = "postgres"`), instead of the store.
    shared: Option<Arc<crate::store::postgres::Postgres>>,
    /// Gateway tool rounds held for clients that continue after a mixed turn.
    pub(crate) continuations: Continuations,
    /// The whole offer per tool gate, made once and reused while every server's state is the one
    /// it was made from (requests without MCP narrowing headers).
    offers: RwLock<Vec<Offer>>,
}

/// What every server offers to one gate (none: an ungoverned request), and what it was made of.
struct Offer {
    /// Kept alive while the offer is, so its address names it and no other gate.
    gate: Option<Arc<dyn crate::request::ToolGate>>,
    /// Each server's state the offer was made from, in the servers' order.
    made_of: Vec<Arc<Snapshot>>,
    tools: Arc<[Arc<ToolEntry>]>,
    /// SHA-256 over the tools' digests, in order.
    digest: [u8; 32],
}

/// Offers kept at most (one per tool gate in use; the oldest goes first).
const OFFERS_KEPT: usize = 256;

/// The address a gate is known by in the offers (0: no gate).
fn gate_addr(gate: Option<&Arc<dyn crate::request::ToolGate>>) -> usize {
    gate.map_or(0, |g| Arc::as_ptr(g).cast::<()>() as usize)
}

/// A server's tools a request may be offered: none unless it is connected; those the request's
/// `x-switchyard-mcp-tools` names (when it names any) and its key may use.
fn visible<'a>(
    snap: &'a Snapshot,
    wanted: Option<&'a [String]>,
    gate: Option<&'a dyn crate::request::ToolGate>,
) -> impl Iterator<Item = &'a Arc<ToolEntry>> + 'a {
    let connected = matches!(snap.status, Status::Connected { .. });
    snap.tools
        .iter()
        .filter(move |_| connected)
        .filter(move |t| wanted.is_none_or(|w| w.contains(&t.exposed)))
        .filter(move |t| gate.is_none_or(|g| g.allows(&t.exposed)))
}

/// SHA-256 over the tools' digests, in order: what the cache keys an offer by.
pub(crate) fn offer_digest(tools: &[Arc<ToolEntry>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for t in tools {
        h.update(t.digest);
    }
    h.finalize().into()
}

/// A server as the admin API shows it (no secrets: header and env values are never shown).
#[derive(Debug, Serialize)]
pub struct ServerView {
    /// Name (tool prefix).
    pub name: String,
    /// `stdio`, `http` or `sse`.
    pub transport: &'static str,
    /// `config` (file) or `api` (registered at run time, persisted).
    pub source: &'static str,
    /// stdio: the program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// http/sse: the endpoint, without its query string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names of the extra headers / environment variables (values hidden).
    pub header_names: Vec<String>,
    /// Names of the extra environment variables (values hidden).
    pub env_names: Vec<String>,
    /// `connecting`, `connected`, `reconnecting`, `stopped`.
    pub status: &'static str,
    /// Why it is not connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Reconnect attempts since it was last up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Unix seconds it has been connected since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<u64>,
    /// The server's name and version, from its handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_info: Option<String>,
    /// `allowed_tools`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// `allowed_tools` entries the server does not have.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_allowed_tools: Vec<String>,
    /// Offered tools, as models see them.
    pub tools: Vec<ToolView>,
}

/// A tool as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ToolView {
    /// What models call it (`server__tool`).
    pub name: String,
    /// Server name.
    pub server: String,
    /// Its name on the server.
    pub tool: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    pub input_schema: Value,
    /// Whether its server is connected now.
    pub available: bool,
}

/// The result of one tool call, as the model will read it.
#[derive(Debug, Clone)]
pub struct ToolResult {
    /// How it ended.
    pub outcome: CallOutcome,
    /// Result text (or what went wrong).
    pub text: String,
}

fn tool_view(t: &ToolEntry, available: bool) -> ToolView {
    ToolView {
        name: t.exposed.clone(),
        server: t.server.clone(),
        tool: t.original.clone(),
        description: t.description.clone(),
        input_schema: (*t.input_schema).clone(),
        available,
    }
}

fn view(h: &ServerHandle) -> ServerView {
    let snap = h.snapshot();
    let (command, url, header_names, env_names) = match &h.config.transport {
        McpTransport::Stdio { command, env, .. } => (
            Some(command.clone()),
            None,
            Vec::new(),
            env.iter().map(|(k, _)| k.clone()).collect(),
        ),
        McpTransport::Http { url, headers } | McpTransport::Sse { url, headers } => (
            None,
            Some(url.split(['?', '#']).next().unwrap_or_default().to_owned()),
            headers.iter().map(|(k, _)| k.clone()).collect(),
            Vec::new(),
        ),
    };
    let connected = matches!(snap.status, Status::Connected { .. });
    let (error, attempt, since) = match &snap.status {
        Status::Reconnecting { error, attempt } => (Some(error.clone()), Some(*attempt), None),
        Status::Connected { since } => (None, None, Some(*since)),
        _ => (None, None, None),
    };
    ServerView {
        name: h.config.name.clone(),
        transport: h.config.transport.kind(),
        source: if h.dynamic { "api" } else { "config" },
        command,
        url,
        header_names,
        env_names,
        status: snap.status.label(),
        error,
        attempt,
        connected_since: since,
        server_info: snap.server_info.clone(),
        allowed_tools: h.config.allowed_tools.clone(),
        unknown_allowed_tools: snap.unknown_allowed.clone(),
        tools: snap.tools.iter().map(|t| tool_view(t, connected)).collect(),
    }
}

impl McpHub {
    /// Starts a supervisor for every configured and every persisted server (in the background:
    /// a server that is down does not delay start-up).
    pub fn start(
        config: McpConfig,
        store: Option<Store>,
        shared: Option<Arc<crate::store::postgres::Postgres>>,
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
        http: reqwest::Client,
    ) -> Arc<Self> {
        let hub = Arc::new(Self {
            servers: RwLock::new(BTreeMap::new()),
            config,
            store,
            metrics,
            tasks,
            shutdown,
            http,
            registering: tokio::sync::Mutex::new(()),
            shared,
            continuations: Continuations::default(),
            offers: RwLock::new(Vec::new()),
        });
        for s in hub.config.servers.clone() {
            hub.add(s, false, None);
        }
        for spec in hub.persisted() {
            let name = spec.name.clone();
            if hub.get(&name).is_some() {
                tracing::warn!(server = %name, "an MCP server registered through the API has the name of one in the config file; the config file's is used");
                continue;
            }
            match spec.validate("", &|k| std::env::var(k).ok()) {
                Ok(cfg) => hub.add(cfg, true, None),
                Err(issues) => {
                    let why: Vec<String> = issues.iter().map(ToString::to_string).collect();
                    tracing::error!(server = %name, problems = %why.join("; "), "a persisted MCP server registration is no longer valid; not started (DELETE /api/mcp/servers/{name} removes it)");
                }
            }
        }
        hub
    }

    fn persisted(&self) -> Vec<McpServerSpec> {
        // A fleet's registrations come from Postgres, by `sync`.
        let Some(store) = self.store.as_ref().filter(|_| self.shared.is_none()) else {
            return Vec::new();
        };
        match store.list::<McpServerSpec>(trees::MCP_SERVERS) {
            Ok(items) => items
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Ok(spec) => Some(spec),
                    Err(e) => {
                        tracing::error!(key = %k, error = %e, "a persisted MCP server registration cannot be read; skipped");
                        None
                    }
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "persisted MCP server registrations cannot be read");
                Vec::new()
            }
        }
    }

    fn add(&self, config: McpServerConfig, dynamic: bool, first: Option<conn::Connected>) {
        let handle = Arc::new(ServerHandle::new(
            config,
            dynamic,
            self.shutdown.child_token(),
        ));
        if let Ok(mut map) = self.servers.write() {
            map.insert(handle.config.name.clone(), handle.clone());
        }
        self.tasks
            .spawn(conn::supervise(handle, first, self.http.clone()));
    }

    fn get(&self, name: &str) -> Option<Arc<ServerHandle>> {
        self.servers.read().ok()?.get(name).cloned()
    }

    fn handles(&self) -> Vec<Arc<ServerHandle>> {
        self.servers
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any server is registered.
    pub fn has_servers(&self) -> bool {
        self.servers.read().map(|m| !m.is_empty()).unwrap_or(false)
    }

    /// Counts one finished tool loop.
    pub(crate) fn metrics_loop(&self, how: &'static str) {
        self.metrics.tool_loop(how);
    }

    /// Bound on tool rounds from config.
    pub fn max_iterations(&self) -> u32 {
        self.config.max_iterations
    }

    /// Bound on one tool call.
    pub fn tool_timeout(&self) -> Duration {
        self.config.tool_timeout
    }

    /// Registers a server at run time: validates, connects (so a bad command or URL is reported
    /// now), persists, and keeps it connected from then on.
    pub async fn register(&self, spec: McpServerSpec) -> Result<ServerView, McpError> {
        let cfg = spec
            .validate("", &|k| std::env::var(k).ok())
            .map_err(|issues| {
                McpError::Invalid(
                    issues
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
        let _one_at_a_time = self.registering.lock().await;
        if self.get(&cfg.name).is_some() {
            return Err(McpError::Conflict(format!(
                "an MCP server named `{}` is already registered",
                cfg.name
            )));
        }
        let connected = conn::connect(&cfg, &self.http)
            .await
            .map_err(|e| McpError::Connect {
                name: cfg.name.clone(),
                reason: e.0,
            })?;
        if let Some(pg) = &self.shared {
            let spec =
                serde_json::to_value(&cfg.spec).map_err(|e| McpError::Store(e.to_string()))?;
            if !pg
                .mcp_put(&cfg.name, &spec)
                .await
                .map_err(|e| McpError::Store(e.to_string()))?
            {
                return Err(McpError::Conflict(format!(
                    "an MCP server named `{}` is already registered (by another instance)",
                    cfg.name
                )));
            }
        } else if let Some(store) = &self.store {
            store
                .put(trees::MCP_SERVERS, &cfg.name, &cfg.spec)
                .and_then(|()| store.flush())
                .map_err(|e| McpError::Store(e.to_string()))?;
        } else {
            tracing::warn!(server = %cfg.name, "no store: this MCP server registration lasts until restart");
        }
        let name = cfg.name.clone();
        tracing::info!(server = %name, transport = cfg.transport.kind(), "MCP server registered");
        let handle = Arc::new(ServerHandle::new(cfg, true, self.shutdown.child_token()));
        // Publish the connected state before anyone can read the handle.
        let snapshot_view = {
            if let Ok(mut map) = self.servers.write() {
                map.insert(name.clone(), handle.clone());
            }
            handle.clone()
        };
        self.tasks
            .spawn(conn::supervise(handle, Some(connected), self.http.clone()));
        // The supervisor publishes `connected` as its first step; wait for it briefly so the
        // answer shows the tools.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !matches!(snapshot_view.snapshot().status, Status::Connected { .. })
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(view(&snapshot_view))
    }

    /// A fleet: starts the servers other instances registered and stops those they removed
    /// (config-file servers are this instance's own and never touched).
    pub async fn sync(&self) {
        let Some(pg) = &self.shared else { return };
        let specs = match pg.mcp_list().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the fleet's MCP registrations");
                return;
            }
        };
        let _one_at_a_time = self.registering.lock().await;
        let mut wanted = BTreeMap::new();
        for v in specs {
            match serde_json::from_value::<McpServerSpec>(v) {
                Ok(spec) => {
                    wanted.insert(spec.name.clone(), spec);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an MCP registration in Postgres cannot be read; skipped")
                }
            }
        }
        for (name, spec) in &wanted {
            if self.get(name).is_some() {
                continue;
            }
            match spec.validate("", &|k| std::env::var(k).ok()) {
                Ok(cfg) => {
                    tracing::info!(server = %name, "MCP server registered by another instance: starting it");
                    self.add(cfg, true, None);
                }
                Err(issues) => {
                    let why: Vec<String> = issues.iter().map(ToString::to_string).collect();
                    tracing::warn!(server = %name, problems = %why.join("; "), "an MCP server registered by another instance is not valid here; not started");
                }
            }
        }
        for h in self.handles() {
            if h.dynamic && !wanted.contains_key(&h.config.name) {
                if let Ok(mut map) = self.servers.write() {
                    map.remove(&h.config.name);
                }
                h.stop();
                tracing::info!(server = %h.config.name, "MCP server removed by another instance");
            }
        }
    }

    /// Removes a server registered through the API (and its persisted record).
    pub async fn remove(&self, name: &str) -> Result<(), McpError> {
        let handle = self
            .get(name)
            .ok_or_else(|| McpError::NotFound(name.to_owned()))?;
        if !handle.dynamic {
            return Err(McpError::Conflict(format!(
                "MCP server `{name}` is defined in the config file; remove it there and restart"
            )));
        }
        if let Some(pg) = &self.shared {
            pg.mcp_delete(name)
                .await
                .map_err(|e| McpError::Store(e.to_string()))?;
        } else if let Some(store) = &self.store {
            store
                .remove(trees::MCP_SERVERS, name)
                .and_then(|_| store.flush())
                .map_err(|e| McpError::Store(e.to_string()))?;
        }
        if let Ok(mut map) = self.servers.write() {
            map.remove(name);
        }
        handle.stop();
        tracing::info!(server = %name, "MCP server removed");
        Ok(())
    }

    /// Every server, by name.
    pub fn servers(&self) -> Vec<ServerView> {
        self.handles().iter().map(|h| view(h)).collect()
    }

    /// One server.
    pub fn server(&self, name: &str) -> Option<ServerView> {
        self.get(name).map(|h| view(&h))
    }

    /// Every offered tool of every server (connected or not).
    pub fn tools(&self) -> Vec<ToolView> {
        let mut out = Vec::new();
        for h in self.handles() {
            let snap = h.snapshot();
            let up = matches!(snap.status, Status::Connected { .. });
            out.extend(snap.tools.iter().map(|t| tool_view(t, up)));
        }
        out
    }

    /// Tools to offer for a request: connected servers only, narrowed by the request's headers
    /// and, for a governed request, by what its key may run. Unknown names in the headers are an
    /// error the client should hear about.
    pub fn offer(
        &self,
        opts: &McpOptions,
        gate: Option<&dyn crate::request::ToolGate>,
    ) -> Result<Vec<Arc<ToolEntry>>, String> {
        let handles = self.handles();
        if let Some(wanted) = &opts.servers {
            for w in wanted {
                if !handles.iter().any(|h| &h.config.name == w) {
                    let known: Vec<&str> = handles.iter().map(|h| h.config.name.as_str()).collect();
                    return Err(format!(
                        "x-switchyard-mcp-servers: no MCP server named `{w}` (registered: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        let mut out = Vec::new();
        for h in &handles {
            if opts
                .servers
                .as_ref()
                .is_some_and(|s| !s.contains(&h.config.name))
            {
                continue;
            }
            let snap = h.snapshot();
            out.extend(visible(&snap, opts.tools.as_deref(), gate).cloned());
        }
        if let Some(wanted) = &opts.tools {
            for w in wanted {
                // A tool the key may not run is as unknown to it as one that does not exist.
                let known = gate.is_none_or(|g| g.allows(w))
                    && handles
                        .iter()
                        .any(|h| h.snapshot().tools.iter().any(|t| &t.exposed == w));
                if !known {
                    return Err(match gate {
                        None => format!(
                            "x-switchyard-mcp-tools: no MCP tool named `{w}` (GET /api/mcp/tools lists them)"
                        ),
                        Some(_) => format!(
                            "x-switchyard-mcp-tools: no MCP tool named `{w}` that this virtual key may run"
                        ),
                    });
                }
            }
        }
        Ok(out)
    }

    /// What [`McpHub::offer`] gives a request without MCP narrowing headers, and its digest:
    /// made once per gate and reused while no server's state (status, tool list) has changed.
    /// A gate's answers must not change over its life (a key's gate is rebuilt with the key).
    pub fn offer_all(
        &self,
        gate: Option<&Arc<dyn crate::request::ToolGate>>,
    ) -> (Arc<[Arc<ToolEntry>]>, [u8; 32]) {
        let addr = gate_addr(gate);
        {
            let servers = self.servers.read().unwrap_or_else(PoisonError::into_inner);
            let offers = self.offers.read().unwrap_or_else(PoisonError::into_inner);
            let current = |o: &Offer| {
                o.made_of.len() == servers.len()
                    && servers
                        .values()
                        .zip(&o.made_of)
                        .all(|(h, s)| h.is_current(s))
            };
            if let Some(o) = offers
                .iter()
                .find(|o| gate_addr(o.gate.as_ref()) == addr && current(o))
            {
                return (o.tools.clone(), o.digest);
            }
        }
        // Made from the states read here: a server that changes meanwhile makes the next
        // request's check fail, and the offer is made again.
        let made_of: Vec<Arc<Snapshot>> = self.handles().iter().map(|h| h.snapshot()).collect();
        let tools: Arc<[Arc<ToolEntry>]> = made_of
            .iter()
            .flat_map(|s| visible(s, None, gate.map(|g| &**g)))
            .cloned()
            .collect();
        let digest = offer_digest(&tools);
        let mut offers = self.offers.write().unwrap_or_else(PoisonError::into_inner);
        offers.retain(|o| gate_addr(o.gate.as_ref()) != addr);
        if offers.len() >= OFFERS_KEPT {
            offers.remove(0);
        }
        offers.push(Offer {
            gate: gate.cloned(),
            made_of,
            tools: tools.clone(),
            digest,
        });
        (tools, digest)
    }

    /// Runs a tool by its exposed name; every failure is a result the model can read.
    pub async fn call(&self, exposed: &str, arguments: &str, timeout: Duration) -> ToolResult {
        let started = Instant::now();
        let handle = naming::server_of(exposed).and_then(|s| self.get(s));
        let snap = handle.as_ref().map(|h| h.snapshot());
        let entry = snap
            .as_ref()
            .and_then(|s| s.tools.iter().find(|t| t.exposed == exposed).cloned());
        let (server, tool) = match &entry {
            Some(e) => (e.server.as_str(), e.original.as_str()),
            None => ("unknown", "unknown"),
        };
        let (outcome, text) = match (&entry, snap.as_ref().and_then(|s| s.peer.clone())) {
            (None, _) => (
                CallOutcome::Failed,
                format!("no MCP tool named `{exposed}` is registered"),
            ),
            (Some(_), None) => {
                let why = match snap.as_ref().map(|s| &s.status) {
                    Some(Status::Reconnecting { error, .. }) => format!(" ({error})"),
                    _ => String::new(),
                };
                (
                    CallOutcome::Failed,
                    format!("MCP server `{server}` is not connected{why}; try again later"),
                )
            }
            (Some(e), Some(peer)) => match parse_arguments(arguments) {
                Ok(args) => conn::call(&peer, &e.original, args, timeout).await,
                Err(why) => (CallOutcome::ToolError, why),
            },
        };
        let secs = started.elapsed().as_secs_f64();
        self.metrics.tool_call(server, tool, outcome.label(), secs);
        match outcome {
            CallOutcome::Ok => {
                tracing::debug!(server, tool, ms = secs * 1000.0, "MCP tool call");
            }
            _ => {
                tracing::info!(server, tool, outcome = outcome.label(), ms = secs * 1000.0, detail = %text, "MCP tool call did not succeed");
            }
        }
        ToolResult { outcome, text }
    }
}

/// Tool arguments as the model wrote them: a JSON object (empty string = no arguments).
fn parse_arguments(s: &str) -> Result<Map<String, Value>, String> {
    if s.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the arguments must be a JSON object".into()),
        Err(e) => Err(format!("the arguments are not valid JSON: {e}")),
    }
}
