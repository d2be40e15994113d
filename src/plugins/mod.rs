//! The plugin host: runs the `[[plugins]]` hooks in order (answers in reverse order), times them,
//! applies `on_error`, and is the only place that knows the kinds (compiled-in, WebAssembly,
//! webhook). The pipeline calls it at stage 2 (`on_request`) and wraps the answer with it (stage
//! 6); with no plugin in scope a request costs one empty check.

mod stats;
mod wasm;
mod webhook;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use switchyard_plugin::{ChunkVerdict, Hooks, Plugin, PluginError, RequestInfo, State, Verdict};
use tracing::Instrument;

use crate::chat::{ChatRequest, ChatResponse};
use crate::config::plugins::{OnError, PluginConfig, PluginKind};
use crate::request::{ChatBody, ChatOutcome};
use crate::telemetry::metrics::Metrics;

pub use stats::{HookStats, PluginView};

/// Loads the WebAssembly plugins to check them as the gateway would at start (the module
/// compiles, imports only what the gateway provides, has the ABI's exports, and its `init` accepts
/// the plugin's `config`): every problem, with its entry's path. `switchyard check` runs this.
pub fn check(config: &[PluginConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, p) in config.iter().enumerate() {
        if let PluginKind::Wasm(source) = &p.kind
            && let Err(list) = wasm::Wasm::load(&p.name, source, &p.config)
        {
            problems.extend(
                list.into_iter()
                    .map(|m| format!("plugins[{i}] `{}`: {m}", p.name)),
            );
        }
    }
    problems
}

/// Why the plugins stopped a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginStop {
    /// A plugin refused it: the status (400..599) and message the client gets.
    #[error("{message} (blocked by plugin `{plugin}`)")]
    Rejected {
        /// Which plugin.
        plugin: String,
        /// HTTP status.
        status: u16,
        /// What the client reads.
        message: String,
    },
    /// A `fail_closed` plugin failed.
    #[error("plugin `{plugin}` failed: {message}")]
    Failed {
        /// Which plugin.
        plugin: String,
        /// What went wrong.
        message: String,
    },
}

/// How one plugin runs.
enum Runner {
    Native(Box<dyn Plugin>),
    Webhook(webhook::Webhook),
}

/// A loaded plugin.
struct Loaded {
    name: String,
    kind: &'static str,
    runner: Runner,
    hooks: Hooks,
    scope: Vec<String>,
    on_error: OnError,
    mandatory: bool,
    default_on: bool,
    stats: stats::Stats,
}

/// The loaded plugins, in order.
pub struct PluginHost {
    plugins: Vec<Loaded>,
    metrics: Arc<Metrics>,
    /// Whether any plugin has `on_complete` (asked once per request).
    complete: bool,
}

impl PluginHost {
    /// Loads the configured plugins (their configs were validated with the config).
    pub fn new(
        config: &[PluginConfig],
        client: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let mut plugins = Vec::with_capacity(config.len());
        for p in config {
            let (kind, runner, hooks) = match &p.kind {
                PluginKind::Builtin(factory) => {
                    let plugin = factory(&p.config).map_err(|errors| {
                        let list: Vec<String> = errors
                            .iter()
                            .map(|e| format!("{}: {}", e.path, e.message))
                            .collect();
                        format!("plugin `{}`: {}", p.name, list.join("; "))
                    })?;
                    let hooks = plugin.hooks();
                    ("builtin", Runner::Native(plugin), hooks)
                }
                PluginKind::Wasm(source) => {
                    let plugin =
                        wasm::Wasm::load(&p.name, source, &p.config).map_err(|problems| {
                            format!("plugin `{}`: {}", p.name, problems.join("; "))
                        })?;
                    let hooks = plugin.hooks();
                    ("wasm", Runner::Native(Box::new(plugin)), hooks)
                }
                PluginKind::Webhook {
                    url,
                    headers,
                    timeout,
                    request,
                    response,
                    complete,
                } => (
                    "webhook",
                    Runner::Webhook(webhook::Webhook::new(
                        url.clone(),
                        headers.clone(),
                        *timeout,
                        client.clone(),
                    )),
                    Hooks {
                        request: *request,
                        response: *response,
                        complete: *complete,
                        ..Hooks::default()
                    },
                ),
            };
            plugins.push(Loaded {
                name: p.name.clone(),
                kind,
                runner,
                hooks,
                scope: p.scope.clone(),
                on_error: p.on_error,
                mandatory: p.mandatory,
                default_on: p.default_on,
                stats: stats::Stats::default(),
            });
        }
        let complete = plugins.iter().any(|p| p.hooks.complete);
        Ok(Self {
            plugins,
            metrics,
            complete,
        })
    }

    /// Whether any plugin is configured.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Whether any plugin wants the records of finished requests.
    pub fn wants_complete(&self) -> bool {
        self.complete
    }

    /// Hands a finished request's record to the `on_complete` hooks in scope, in a tracked
    /// background task (compiled-in hooks on a blocking thread): the client never waits for them.
    pub fn complete(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        model: &str,
        record: serde_json::Value,
    ) {
        let wanted: Vec<usize> = self
            .plugins
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.hooks.complete
                    && (p.scope.is_empty() || crate::governance::glob::any(&p.scope, model))
            })
            .map(|(i, _)| i)
            .collect();
        if wanted.is_empty() {
            return;
        }
        let host = self.clone();
        tasks.spawn(async move {
            let record = Arc::new(record);
            for i in wanted {
                let Some(p) = host.plugins.get(i) else {
                    continue;
                };
                let started = Instant::now();
                let result = match &p.runner {
                    Runner::Native(_) => {
                        let (host2, rec) = (host.clone(), record.clone());
                        tokio::task::spawn_blocking(move || {
                            let Some(Loaded {
                                runner: Runner::Native(plugin),
                                ..
                            }) = host2.plugins.get(i)
                            else {
                                return Ok(());
                            };
                            guarded(|| plugin.on_complete(&rec))
                        })
                        .await
                        .unwrap_or_else(|_| Err(PluginError("the hook's thread failed".into())))
                    }
                    Runner::Webhook(w) => w.on_complete(&record).await,
                };
                let outcome = if result.is_ok() { "ok" } else { "error" };
                host.count(p, "complete", outcome, started);
                if let Err(e) = result {
                    tracing::warn!(plugin = %p.name, error = %e, "plugin on_complete failed");
                }
            }
        });
    }

    /// Starts a request's run over the plugins whose scope covers `info.model` and that the key's
    /// choices leave on (a mandatory plugin always runs; an opt-in one only for keys that add
    /// it); `None` when none.
    pub fn begin(
        self: &Arc<Self>,
        info: RequestInfo,
        key: Option<&crate::request::KeyPlugins>,
    ) -> Option<Run> {
        if self.plugins.is_empty() {
            return None;
        }
        let listed =
            |names: Option<&Vec<String>>, p: &Loaded| names.is_some_and(|n| n.contains(&p.name));
        let active: Vec<(usize, Shared)> = self
            .plugins
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.scope.is_empty() || crate::governance::glob::any(&p.scope, &info.model)
            })
            .filter(|(_, p)| {
                p.mandatory
                    || (p.default_on && !listed(key.map(|k| &k.remove), p))
                    || listed(key.map(|k| &k.add), p)
            })
            .map(|(i, _)| (i, Shared::default()))
            .collect();
        (!active.is_empty()).then(|| Run {
            host: self.clone(),
            info,
            active,
            ran: 0,
        })
    }

    /// Every plugin with its hooks and counts, for `GET /api/plugins`.
    pub fn views(&self) -> Vec<PluginView> {
        self.plugins
            .iter()
            .enumerate()
            .map(|(i, p)| PluginView {
                order: i,
                name: p.name.clone(),
                kind: p.kind,
                hooks: p.hooks,
                scope: p.scope.clone(),
                on_error: match p.on_error {
                    OnError::FailClosed => "fail_closed",
                    OnError::FailOpen => "fail_open",
                },
                mandatory: p.mandatory,
                default_on: p.default_on,
                stats: p.stats.views(),
            })
            .collect()
    }

    /// The plugin in slot `k` of a request's list with its state, when it has the hook `has` asks
    /// for.
    fn hooked<'a>(
        &'a self,
        slots: &'a [(usize, Shared)],
        k: usize,
        has: impl Fn(&Hooks) -> bool,
    ) -> Option<(&'a Loaded, &'a Shared)> {
        let (i, state) = slots.get(k)?;
        let p = self.plugins.get(*i)?;
        has(&p.hooks).then_some((p, state))
    }

    /// Records one hook call.
    fn count(&self, p: &Loaded, hook: &'static str, outcome: &'static str, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        p.stats.record(hook, outcome, secs);
        self.metrics.plugin_call(&p.name, hook, outcome, secs);
    }
}

/// A plugin's state for one request, shared by its hooks (locked only inside a hook).
type Shared = Arc<std::sync::Mutex<State>>;

/// Runs `f` on a locked state; a poisoned lock (a hook panicked holding it) starts afresh.
fn with_state<T>(state: &Shared, f: impl FnOnce(&mut State) -> T) -> T {
    let mut guard = state.lock().unwrap_or_else(|poisoned| {
        let mut g = poisoned.into_inner();
        *g = None;
        g
    });
    f(&mut guard)
}

/// The trace span of one hook call (a child of the request's span).
fn hook_span(p: &Loaded, hook: &'static str) -> tracing::Span {
    tracing::info_span!(
        "plugin",
        otel.name = format!("plugin {} {hook}", p.name),
        otel.kind = "internal",
        switchyard.plugin = p.name.as_str(),
        switchyard.plugin.kind = p.kind,
        switchyard.plugin.hook = hook,
    )
}

/// Runs a native hook, turning a panic into the plugin's error.
fn guarded<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(PluginError("the plugin panicked".into())))
}

/// Handles a hook failure by the plugin's `on_error`.
fn failure(info: &RequestInfo, p: &Loaded, e: PluginError) -> Result<(), PluginStop> {
    tracing::warn!(plugin = %p.name, error = %e, request_id = %info.request_id, "plugin hook failed");
    match p.on_error {
        OnError::FailOpen => Ok(()),
        OnError::FailClosed => Err(PluginStop::Failed {
            plugin: p.name.clone(),
            message: e.0,
        }),
    }
}

/// One request's pass through the plugins in scope.
pub struct Run {
    host: Arc<PluginHost>,
    info: RequestInfo,
    /// (plugin index, its state for this request; shared with the tool hooks of the MCP loop).
    active: Vec<(usize, Shared)>,
    /// How many of `active` ran `on_request` (the answer goes back through those only).
    ran: usize,
}

/// What `on_request` left to do.
pub enum Next {
    /// Go on to the cache and the providers.
    Continue,
    /// A plugin answered: no cache, no provider.
    Respond(Box<ChatResponse>),
}

impl Run {
    fn plugin(&self, i: usize) -> Option<&Loaded> {
        self.host.plugins.get(i)
    }

    /// Runs `on_request` in order. A rejection or direct answer stops the walk; the answer then
    /// goes back through the plugins that already ran.
    pub async fn on_request(&mut self, req: &mut ChatRequest) -> Result<Next, PluginStop> {
        let host = self.host.clone();
        for k in 0..self.active.len() {
            self.ran = k + 1;
            let Some((p, state)) = host.hooked(&self.active, k, |h| h.request) else {
                continue;
            };
            let started = Instant::now();
            let span = hook_span(p, "request");
            let verdict = match &p.runner {
                Runner::Native(plugin) => span.in_scope(|| {
                    with_state(state, |st| {
                        guarded(|| plugin.on_request(&self.info, req, st))
                    })
                }),
                Runner::Webhook(w) => w.on_request(&self.info, req).instrument(span).await,
            };
            match verdict {
                Ok(Verdict::Continue) => host.count(p, "request", "ok", started),
                Ok(Verdict::Reject { status, message }) => {
                    host.count(p, "request", "blocked", started);
                    return Err(PluginStop::Rejected {
                        plugin: p.name.clone(),
                        status: status.clamp(400, 599),
                        message,
                    });
                }
                Ok(Verdict::Respond(resp)) => {
                    host.count(p, "request", "answered", started);
                    // The answering plugin's own `on_response` does not see its answer.
                    self.ran = k;
                    return Ok(Next::Respond(resp));
                }
                Err(e) => {
                    host.count(p, "request", "error", started);
                    failure(&self.info, p, e)?;
                }
            }
        }
        Ok(Next::Continue)
    }

    /// Runs `on_response` over a complete answer, in reverse order.
    pub async fn on_response(&mut self, resp: &mut ChatResponse) -> Result<(), PluginStop> {
        let host = self.host.clone();
        for k in (0..self.ran).rev() {
            let Some((p, state)) = host.hooked(&self.active, k, |h| h.response) else {
                continue;
            };
            let started = Instant::now();
            let span = hook_span(p, "response");
            let result = match &p.runner {
                Runner::Native(plugin) => span.in_scope(|| {
                    with_state(state, |st| {
                        guarded(|| plugin.on_response(&self.info, resp, st))
                    })
                }),
                Runner::Webhook(w) => w.on_response(&self.info, resp).instrument(span).await,
            };
            match result {
                Ok(()) => host.count(p, "response", "ok", started),
                Err(e) => {
                    host.count(p, "response", "error", started);
                    failure(&self.info, p, e)?;
                }
            }
        }
        Ok(())
    }

    /// The tool hooks of the plugins that saw the request, for the MCP loop; `None` when none has
    /// any.
    pub fn tool_hooks(&self) -> Option<Arc<dyn crate::request::ToolHooks>> {
        let plugins: Vec<(usize, Shared)> = self.active[..self.ran]
            .iter()
            .filter(|(i, _)| {
                self.plugin(*i).is_some_and(|p| {
                    matches!(p.runner, Runner::Native(_))
                        && (p.hooks.tool_call || p.hooks.tool_result)
                })
            })
            .cloned()
            .collect();
        (!plugins.is_empty()).then(|| {
            Arc::new(ToolRun {
                host: self.host.clone(),
                info: self.info.clone(),
                plugins,
            }) as Arc<dyn crate::request::ToolHooks>
        })
    }

    /// Puts the answer through the plugins: `on_response` now for a complete answer, each chunk
    /// through `on_stream_chunk` (reverse order) as it passes for a stream.
    /// The answer may change, so JSON an earlier stage wrote for it is dropped.
    pub async fn wrap(mut self, outcome: ChatOutcome) -> Result<ChatOutcome, PluginStop> {
        let body = match outcome.body {
            ChatBody::Complete(mut resp) => {
                self.on_response(&mut resp).await?;
                ChatBody::Complete(resp)
            }
            // Made only when no plugin runs (`RequestContext::raw_answer`), and decoded by the
            // pipeline before the plugins see an answer (`pipeline::finish`).
            ChatBody::Raw(raw) => ChatBody::Raw(raw),
            ChatBody::Stream(stream) => {
                let streaming = self.active[..self.ran]
                    .iter()
                    .any(|(i, _)| self.plugin(*i).is_some_and(|p| p.hooks.stream));
                if !streaming {
                    ChatBody::Stream(stream)
                } else {
                    ChatBody::Stream(Box::pin(self.stream(stream)))
                }
            }
        };
        Ok(ChatOutcome {
            body,
            json: None,
            ..outcome
        })
    }

    /// Calls `f` for each plugin with stream hooks that saw the request, last first, until it
    /// says stop (`Ok(false)`); a hook error goes through the plugin's `on_error`.
    fn each_stream_plugin(
        &mut self,
        mut f: impl FnMut(&Loaded, &dyn Plugin, &RequestInfo, &mut State) -> Result<bool, PluginError>,
    ) -> Result<(), PluginStop> {
        let host = self.host.clone();
        for k in (0..self.ran).rev() {
            let Some((p, state)) = host.hooked(&self.active, k, |h| h.stream) else {
                continue;
            };
            let Runner::Native(plugin) = &p.runner else {
                continue;
            };
            match with_state(state, |st| {
                guarded(|| f(p, plugin.as_ref(), &self.info, st))
            }) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => failure(&self.info, p, e)?,
            }
        }
        Ok(())
    }

    /// One chunk through the stream hooks, last plugin first; `false` when a plugin dropped it.
    fn chunk(&mut self, chunk: &mut crate::chat::ChatChunk) -> Result<bool, PluginStop> {
        let host = self.host.clone();
        let mut dropped = false;
        self.each_stream_plugin(|p, plugin, info, state| {
            let started = Instant::now();
            let verdict = plugin.on_stream_chunk(info, chunk, state);
            let outcome = match &verdict {
                Ok(ChunkVerdict::Keep) => "ok",
                Ok(ChunkVerdict::Drop) => "dropped",
                Err(_) => "error",
            };
            host.count(p, "stream_chunk", outcome, started);
            dropped = verdict? == ChunkVerdict::Drop;
            Ok(!dropped)
        })?;
        Ok(!dropped)
    }

    /// What the stream plugins held back, flushed at the end (last plugin first).
    fn end(&mut self) -> Result<Vec<crate::chat::ChatChunk>, PluginStop> {
        let mut out = Vec::new();
        self.each_stream_plugin(|_, plugin, info, state| {
            out.extend(plugin.on_stream_end(info, state)?);
            Ok(true)
        })?;
        Ok(out)
    }

    fn stream(
        mut self,
        mut stream: crate::chat::ChatStream,
    ) -> impl futures_util::Stream<Item = crate::chat::StreamItem> + Send + 'static {
        async_stream::stream! {
            let mut template: Option<crate::chat::ChatChunk> = None;
            while let Some(item) = stream.next().await {
                let mut chunk = match item {
                    Ok(c) => c,
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                // Plugins see and may change the whole chunk.
                let whole = match chunk.make_mut() {
                    Ok(c) => c,
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                if template.is_none() {
                    template = Some(whole.clone());
                }
                match self.chunk(whole) {
                    Ok(true) => yield Ok(chunk),
                    Ok(false) => {}
                    Err(stop) => {
                        yield Err(crate::chat::StreamError::new(stop.to_string()));
                        return;
                    }
                }
            }
            match self.end() {
                Ok(chunks) => {
                    for mut c in chunks {
                        // Held text goes out under the stream's own id and model.
                        if let Some(t) = &template {
                            c.id.clone_from(&t.id);
                            c.model.clone_from(&t.model);
                            c.created = t.created;
                        }
                        yield Ok(Box::new(c.into()));
                    }
                }
                Err(stop) => yield Err(crate::chat::StreamError::new(stop.to_string())),
            }
        }
    }
}

/// The tool hooks of one request's plugins: calls in order, results in reverse order.
struct ToolRun {
    host: Arc<PluginHost>,
    info: RequestInfo,
    plugins: Vec<(usize, Shared)>,
}

impl std::fmt::Debug for ToolRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRun")
            .field("plugins", &self.plugins.len())
            .finish()
    }
}

impl crate::request::ToolHooks for ToolRun {
    fn before(&self, tool: &str, arguments: &mut String) -> Result<(), String> {
        for k in 0..self.plugins.len() {
            let Some((p, state)) = self.host.hooked(&self.plugins, k, |h| h.tool_call) else {
                continue;
            };
            let Runner::Native(plugin) = &p.runner else {
                continue;
            };
            let started = Instant::now();
            let verdict = hook_span(p, "tool_call").in_scope(|| {
                with_state(state, |st| {
                    guarded(|| plugin.on_tool_call(&self.info, tool, arguments, st))
                })
            });
            match verdict {
                Ok(switchyard_plugin::ToolVerdict::Continue) => {
                    self.host.count(p, "tool_call", "ok", started);
                }
                Ok(switchyard_plugin::ToolVerdict::Block(why)) => {
                    self.host.count(p, "tool_call", "blocked", started);
                    return Err(format!("{why} (blocked by plugin `{}`)", p.name));
                }
                Err(e) => {
                    self.host.count(p, "tool_call", "error", started);
                    failure(&self.info, p, e).map_err(|stop| stop.to_string())?;
                }
            }
        }
        Ok(())
    }

    fn after(&self, tool: &str, result: &mut String) {
        for k in (0..self.plugins.len()).rev() {
            let Some((p, state)) = self.host.hooked(&self.plugins, k, |h| h.tool_result) else {
                continue;
            };
            let Runner::Native(plugin) = &p.runner else {
                continue;
            };
            let started = Instant::now();
            let r = hook_span(p, "tool_result").in_scope(|| {
                with_state(state, |st| {
                    guarded(|| plugin.on_tool_result(&self.info, tool, result, st))
                })
            });
            let outcome = if r.is_ok() { "ok" } else { "error" };
            self.host.count(p, "tool_result", outcome, started);
            if let Err(e) = r
                && failure(&self.info, p, e).is_err()
            {
                // A result a fail_closed plugin could not check is not shown to the model.
                *result = format!(
                    "Error: plugin `{}` could not check this tool's result",
                    p.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
