//! Application state, router assembly and the server with graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::listener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::origin::HostPolicy;
use crate::cache::Cache;
use crate::config::{Config, env_hint};
use crate::governance::Governance;
use crate::mcp::McpHub;
use crate::router::{RouteTable, Router};
use crate::store::Store;
use crate::telemetry::metrics::{Metrics, ProviderLabels};
use crate::telemetry::prices::Prices;
use crate::telemetry::requestlog::RequestLog;

/// Shared state, behind one `Arc`: every handler and middleware clones it, and one reference
/// count is cheaper than one per field (it showed in the request path's profile).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds: `Arc` handles only.
pub struct Shared {
    /// The validated config.
    pub config: Arc<Config>,
    /// Routes, providers, retries, breakers.
    pub router: Arc<Router>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Background work that shutdown waits for.
    pub tasks: TaskTracker,
    /// Cancelled when the server begins shutting down.
    pub shutdown: CancellationToken,
    /// The semantic cache.
    pub cache: Arc<Cache>,
    /// The sled store, when it could be opened.
    pub store: Option<Store>,
    /// MCP servers, their tools, the tool loop's state.
    pub mcp: Arc<McpHub>,
    /// The request log.
    pub log: Arc<RequestLog>,
    /// Estimated prices (built-in table + `[prices]`).
    pub prices: Arc<Prices>,
    /// The `Host` names and browser origins the admin API and `/mcp` accept.
    pub hosts: Arc<HostPolicy>,
    /// Virtual keys, budgets, rate limits.
    pub governance: Arc<Governance>,
    /// Responses API answers kept for `GET` and `previous_response_id`.
    pub responses: Arc<crate::store::responses::ResponseStore>,
    /// The `[[plugins]]`, loaded.
    pub plugins: Arc<crate::plugins::PluginHost>,
    /// The HTTP client for MCP servers, webhooks and other calls that are not a provider's.
    pub client: reqwest::Client,
    /// The providers' HTTP client (a reload builds its providers on it).
    pub upstream: crate::providers::client::Client,
    /// Providers and routes added through the admin API, and their versions.
    pub runtime: Arc<crate::runtime::RuntimeConfig>,
    /// The fleet's shared Postgres, with `[server] state = "postgres"`.
    pub pg: Option<Arc<crate::store::postgres::Postgres>>,
}

/// What a reload of the config file did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// The file read.
    pub path: String,
    /// Providers and routes now in use.
    pub providers: usize,
    /// Routes now in use.
    pub routes: usize,
    /// Sections that changed in the file but apply only at the next start.
    pub restart_needed: Vec<&'static str>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was not started from a file.
    #[error(
        "the gateway was started without a config file (zero-config): there is nothing to reload"
    )]
    NoFile,
    /// The file could not be read, or is not valid: every problem, and nothing changed.
    #[error("{0}")]
    Invalid(crate::config::ConfigError),
}

impl AppState {
    /// Reads the config file again, validates it whole, and applies its providers and routes
    /// atomically; an invalid file changes nothing. Sections that apply only at start are named.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let Some(path) = self.config.source.clone() else {
            return Err(ReloadError::NoFile);
        };
        let new = Config::load(&path).map_err(ReloadError::Invalid)?;
        let old = &self.config;
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mut restart_needed = Vec::new();
        let mut server = new.server.clone();
        // The bound address was resolved at start; only a change of what the file says counts.
        server.listen = old.server.listen;
        for (name, changed) in [
            ("server", differs(&old.server, &server)),
            ("router", differs(&old.router, &new.router)),
            ("cache", differs(&old.cache, &new.cache)),
            ("mcp", differs(&old.mcp, &new.mcp)),
            ("logs", differs(&old.logs, &new.logs)),
            ("responses", differs(&old.responses, &new.responses)),
            ("plugins", differs(&old.plugins, &new.plugins)),
            ("governance", differs(&old.governance, &new.governance)),
            ("telemetry", differs(&old.telemetry, &new.telemetry)),
            ("prices", differs(&old.prices, &new.prices)),
        ] {
            if changed {
                restart_needed.push(name);
            }
        }
        let merged = self
            .runtime
            .merge_file(&new)
            .map_err(|issues| ReloadError::Invalid(crate::config::ConfigError::Invalid(issues)))?;
        let (providers, routes) = self.apply(&merged);
        self.runtime.reloaded(&new).await;
        tracing::info!(path = %path.display(), providers, routes, restart_needed = ?restart_needed, "config reloaded: providers and routes applied");
        Ok(Reloaded {
            path: path.display().to_string(),
            providers,
            routes,
            restart_needed,
        })
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// A plugin could not be loaded.
    #[error("cannot load the plugins: {0}")]
    Plugins(String),
    /// The runtime configuration (providers and routes added through the admin API) could not
    /// be loaded, or no longer fits the file.
    #[error("runtime configuration: {0}")]
    Runtime(String),
    /// Governance could not start (its store).
    #[error("governance: {0}")]
    Governance(String),
    /// The server stopped with an error.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

impl AppState {
    /// Builds the state for a config.
    pub async fn new(config: Config) -> Result<Self, AppError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = crate::providers::client::reqwest_client().map_err(AppError::Client)?;
        let upstream = crate::providers::client::Client::new().map_err(AppError::Client)?;
        let metrics = Arc::new(Metrics::new());
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let store = open_store(&config);
        let pg = match &config.server.state {
            crate::config::StateConfig::Embedded => None,
            crate::config::StateConfig::Postgres(url) => Some(Arc::new(
                crate::store::postgres::Postgres::connect(url.expose())
                    .await
                    .map_err(|e| {
                        AppError::Runtime(format!("cannot use the Postgres state ({e})"))
                    })?,
            )),
        };
        let shared = pg
            .clone()
            .map(|p| p as Arc<dyn crate::store::versions::VersionStore>);
        let (runtime, merged) =
            crate::runtime::RuntimeConfig::open(&config, store.as_ref(), shared)
                .await
                .map_err(AppError::Runtime)?;
        let table = match &merged {
            Some(m) => RouteTable::build(&with_table_of(&config, m), &upstream),
            None => RouteTable::build(&config, &upstream),
        };
        let router = Arc::new(Router::new(table, config.router.clone(), metrics.clone()));
        let prices = Arc::new(Prices::new(&config.prices));
        let governance = Governance::start(
            config.governance.clone(),
            store.clone(),
            pg.clone(),
            prices.clone(),
            &tasks,
            &shutdown,
        )
        .await
        .map_err(|e| AppError::Governance(e.to_string()))?;
        let log = RequestLog::start(
            config.logs.clone(),
            store.clone(),
            pg.clone(),
            metrics.clone(),
            &tasks,
            &shutdown,
        );
        let cache = Cache::start(
            config.cache.clone(),
            &config.server.data_dir,
            crate::store::Stores {
                local: store.clone(),
                shared: pg.clone(),
            },
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
            prices.clone(),
        );
        let mcp = McpHub::start(
            config.mcp.clone(),
            store.clone(),
            pg.clone(),
            metrics.clone(),
            tasks.clone(),
            shutdown.clone(),
            client.clone(),
        );
        let responses = Arc::new(match &pg {
            Some(pg) => crate::store::responses::ResponseStore::shared(
                pg.clone(),
                config.responses.ttl,
                config.responses.max_stored,
            ),
            None => crate::store::responses::ResponseStore::open(
                store.clone(),
                config.responses.ttl,
                config.responses.max_stored,
            ),
        });
        let plugins = Arc::new(
            crate::plugins::PluginHost::new(&config.plugins, client.clone(), metrics.clone())
                .map_err(AppError::Plugins)?,
        );
        let state = Self(Arc::new(Shared {
            client: client.clone(),
            upstream,
            runtime: Arc::new(runtime),
            pg: pg.clone(),
            mcp,
            responses,
            plugins,
            hosts: Arc::new(HostPolicy::new(&config)),
            governance,
            config: Arc::new(config),
            router,
            metrics,
            tasks,
            shutdown,
            cache,
            store,
            log,
            prices,
        }));
        if let Some(pg) = pg {
            state.watch_shared_config(pg);
        }
        Ok(state)
    }

    /// Follows the runtime configuration other instances change: a `NOTIFY` from Postgres
    /// applies a new version at once, and the newest version number is polled every 500 ms as
    /// well (a notification is lost while the listening connection is down).
    fn watch_shared_config(&self, pg: Arc<crate::store::postgres::Postgres>) {
        let state = self.clone();
        self.tasks.spawn(async move {
            let mut listening: Option<(tokio_postgres::Client, tokio::sync::mpsc::Receiver<String>)> =
                None;
            loop {
                if listening.is_none() {
                    match pg.listen().await {
                        Ok(l) => listening = Some(l),
                        Err(e) => tracing::warn!(error = %e, "cannot listen for configuration changes (polling instead)"),
                    }
                }
                let notified = async {
                    match listening.as_mut() {
                        Some((_, rx)) => rx.recv().await.is_some(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = state.shutdown.cancelled() => break,
                    alive = notified => if !alive { listening = None; },
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                if let Some(merged) = state.runtime.refresh().await {
                    state.apply(&merged);
                }
                state.mcp.sync().await;
                if let Err(e) = state.governance.directory().refresh().await {
                    tracing::debug!(error = %e, "governance entities not refreshed");
                }
            }
        });
    }

    /// Puts `merged`'s providers and routes in service atomically (requests in flight finish on
    /// the old table): how many of each are now in use.
    pub fn apply(&self, merged: &Config) -> (usize, usize) {
        let table = RouteTable::build(&with_table_of(&self.config, merged), &self.upstream);
        let counts = (table.providers.len(), table.routes.len());
        self.router.replace(table);
        counts
    }

    /// Updates gauges that are computed, not counted (breaker states, budgets).
    pub async fn refresh_gauges(&self) {
        let g = &self.governance;
        let unchecked = g
            .fail_open_admits
            .load(std::sync::atomic::Ordering::Relaxed);
        let counted = self.metrics.gov_unchecked.get();
        if unchecked > counted {
            self.metrics.gov_unchecked.inc_by(unchecked - counted);
        }
        for (level, id, period, spent, remaining) in g
            .directory()
            .budget_states(g.counters(), g.config().metrics_per_key)
            .await
        {
            let labels = crate::telemetry::metrics::BudgetLabels {
                level: level.to_owned(),
                id,
                period,
            };
            self.metrics.budget_spent.get_or_create(&labels).set(spent);
            self.metrics
                .budget_remaining
                .get_or_create(&labels)
                .set(remaining);
        }
        let table = self.router.table();
        let breakers = self.router.breakers();
        for p in &table.providers {
            let open = breakers
                .iter()
                .filter(|(k, s)| {
                    k.provider == p.name && *s != crate::router::breaker::State::Closed
                })
                .count();
            self.metrics
                .breakers_open
                .get_or_create(&ProviderLabels {
                    provider: p.name.to_string(),
                })
                .set(open as i64);
        }
    }
}

/// A running server.
pub struct Server {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), AppError>>,
}

impl Server {
    /// Binds `config.server.listen` (or `listen` when given) and starts serving.
    pub async fn start(mut config: Config, listen: Option<SocketAddr>) -> Result<Self, AppError> {
        let addr = listen.unwrap_or(config.server.listen);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AppError::Bind { addr, source })?;
        // The address actually bound (port 0 resolved) is the one the Host check accepts.
        config.server.listen = addr;
        let fd_limit = listener::raise_fd_limit();
        let limits = listener::Limits {
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
            max_connections: config
                .server
                .max_connections
                .unwrap_or_else(|| listener::default_max_connections(fd_limit)),
        };
        let state = AppState::new(config).await?;
        log_startup(&state, addr);
        reload_on_sighup(&state);
        tracing::debug!(
            ?fd_limit,
            max_connections = limits.max_connections,
            "connection limits"
        );
        let shutdown = state.shutdown.clone();
        let app = crate::api::Gateway::new(state.clone());
        let token = shutdown.clone();
        // The server task itself: it owns the TaskTracker and waits for it before finishing.
        #[allow(clippy::disallowed_methods)]
        let handle = tokio::spawn(async move {
            let served = listener::serve(listener, app, limits, token).await;
            // Every request is answered: the log writes the last records and stops.
            state.log.finish().await;
            state.tasks.close();
            state.tasks.wait().await;
            served.map_err(AppError::Serve)
        });
        Ok(Self {
            addr,
            shutdown,
            handle,
        })
    }

    /// Stops accepting connections, drains in-flight requests and background tasks.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> Result<(), AppError> {
        match self.handle.await {
            Ok(r) => r,
            Err(e) => Err(AppError::Serve(std::io::Error::other(e.to_string()))),
        }
    }

    /// A token that, when cancelled, starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

fn log_startup(state: &AppState, addr: SocketAddr) {
    let cfg = &state.config;
    // What is in service: the file's providers and routes with those added through the API.
    let table = state.router.table();
    let names: Vec<String> = table
        .providers
        .iter()
        .map(|p| format!("{} ({})", p.name, p.kind.as_str()))
        .collect();
    tracing::info!(%addr, providers = %names.join(", "), routes = table.routes.len(), "switchyard listening");
    if table.providers.is_empty() {
        tracing::warn!(
            "no provider configured: set one of {} or pass --config, or add one in the web UI (http://{addr}/#/providers) or with POST /api/providers; chat requests fail until then",
            env_hint()
        );
    }
    if cfg.server.admin_token.is_none() {
        if addr.ip().is_loopback() {
            tracing::warn!(
                "no [server] admin_token: the admin API (/api/*) accepts changes only from this machine, and any local program may make them; set admin_token to require it"
            );
        } else {
            tracing::warn!(%addr, "no [server] admin_token: the admin API (/api/*) can be read by anyone who can reach this address and changed only from this machine; set admin_token");
        }
    }
}

/// `config` with the providers and routes of `merged` (the file with the runtime layer).
fn with_table_of(config: &Config, merged: &Config) -> Config {
    let mut out = config.clone();
    out.providers.clone_from(&merged.providers);
    out.routes.clone_from(&merged.routes);
    out
}

/// Opens the sled store under `data_dir/store`; without it the gateway still serves (analytics
/// are then kept in memory only).
fn open_store(config: &Config) -> Option<Store> {
    let dir = config.server.data_dir.join("store");
    match Store::open(&dir) {
        Ok((store, recovered)) => {
            if let Some(r) = recovered {
                tracing::error!("{r}");
            }
            Some(store)
        }
        Err(e) => {
            tracing::error!(error = %e, "the store could not be opened; analytics are kept in memory only");
            None
        }
    }
}

/// `SIGHUP` reloads the config file (as `POST /api/config/reload` does); the outcome is logged.
fn reload_on_sighup(state: &AppState) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: reload with POST /api/config/reload");
            return;
        };
        let state = state.clone();
        let stop = state.shutdown.clone();
        state.tasks.clone().spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    got = hup.recv() => {
                        if got.is_none() {
                            return;
                        }
                        if let Err(e) = state.reload().await {
                            tracing::error!(error = %e, "SIGHUP: the config was not reloaded; nothing changed");
                        }
                    }
                }
            }
        });
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received: draining in-flight requests");
}
