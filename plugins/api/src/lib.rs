//! `switchyard-plugin`: what a Switchyard plugin implements and what it sees.
//!
//! A plugin implements [`Plugin`] and says which hooks it has ([`Hooks`]); the gateway calls only
//! those, in the order of the `[[plugins]]` entries (answers in reverse order). Every hook sees
//! the canonical OpenAI-shaped types of [`chat`], the same values the gateway's core uses, so a
//! compiled-in plugin costs no conversion. A plugin is built from its `config` table by a
//! [`Factory`], which validates it so `switchyard check` reports mistakes with their paths.
//!
//! Hooks, in request-path order:
//! - [`Plugin::on_request`]: may change the request, reject it ([`Verdict::Reject`]) or answer it
//!   ([`Verdict::Respond`], which skips the cache and the providers).
//! - [`Plugin::on_response`]: may change the complete answer.
//! - [`Plugin::on_stream_chunk`]: may change or drop a chunk; [`Plugin::on_stream_end`] flushes
//!   what a plugin held back (text it needed to see across chunk boundaries).
//! - [`Plugin::on_tool_call`] and [`Plugin::on_tool_result`]: the MCP tools the gateway runs in
//!   its loop (may block a call, change its arguments, or change its result).
//! - [`Plugin::on_complete`]: the request's record, after the answer, off the request's path.
//!
//! Per-request state (say, the placeholders a redaction must restore) lives in [`State`], handed to
//! each hook of the same request.

#[macro_use]
mod open;
pub mod chat;

use std::any::Any;

pub use chat::{ChatChunk, ChatRequest, ChatResponse};
pub use serde_json::Value;

/// Which hooks a plugin implements; the others cost nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    /// [`Plugin::on_request`].
    pub request: bool,
    /// [`Plugin::on_response`].
    pub response: bool,
    /// [`Plugin::on_stream_chunk`] and [`Plugin::on_stream_end`].
    pub stream: bool,
    /// [`Plugin::on_tool_call`]: before the gateway runs an MCP tool in its loop.
    pub tool_call: bool,
    /// [`Plugin::on_tool_result`]: a gateway tool's result, before the model sees it.
    pub tool_result: bool,
    /// [`Plugin::on_complete`]: the request's record, after the answer.
    pub complete: bool,
}

/// What a request is about, read-only. Credentials are never included.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// `x-request-id`.
    pub request_id: String,
    /// The model or route the client asked for.
    pub model: String,
    /// The virtual key's id, when the request is governed.
    pub key: Option<String>,
}

/// What `on_request` decides.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Go on (with the request as the hook left it).
    Continue,
    /// Refuse: the client gets `status` (400 to 599) and `message` in an OpenAI-shaped error.
    Reject {
        /// HTTP status.
        status: u16,
        /// What the client reads.
        message: String,
    },
    /// Answer directly, skipping the cache and the providers.
    Respond(Box<ChatResponse>),
}

/// What `on_stream_chunk` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Send the chunk (as the hook left it).
    Keep,
    /// Do not send it.
    Drop,
}

/// What `on_tool_call` decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolVerdict {
    /// Run the tool (with the arguments as the hook left them).
    Continue,
    /// Do not run it: the model gets this message as the tool's result.
    Block(String),
}

/// A plugin's per-request scratch space, kept between its hooks of one request.
pub type State = Option<Box<dyn Any + Send + Sync>>;

/// A hook that failed; the gateway applies the plugin's `on_error` (`fail_closed` refuses the
/// request, `fail_open` goes on without the plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError(pub String);

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PluginError {}

/// A mistake in a plugin's `config` table: the path inside it (`rules[2].pattern`) and what is
/// wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path inside the plugin's `config`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A plugin's `config` table, or a table nested in it at `path`, as a map: absent (`null`) is
/// empty; a value that is not a table is an error at `path` (`None`), and so is every field not
/// in `known`.
pub fn config_table(
    value: &Value,
    path: &str,
    known: &[&str],
    errors: &mut Vec<ConfigError>,
) -> Option<serde_json::Map<String, Value>> {
    let map = match value {
        Value::Null => serde_json::Map::new(),
        Value::Object(o) => o.clone(),
        _ => {
            errors.push(ConfigError::new(path, "must be a table"));
            return None;
        }
    };
    for k in map.keys() {
        if !known.contains(&k.as_str()) {
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            errors.push(ConfigError::new(
                at,
                format!("unknown field (expected {})", known.join(", ")),
            ));
        }
    }
    Some(map)
}

/// Builds a plugin from its `config` table (JSON), or says everything wrong with it.
pub type Factory = fn(config: &Value) -> Result<Box<dyn Plugin>, Vec<ConfigError>>;

/// A Switchyard plugin. Hooks run on the request's task: keep them short (no blocking I/O).
pub trait Plugin: Send + Sync + 'static {
    /// The hooks this plugin implements.
    fn hooks(&self) -> Hooks;

    /// Before the cache and the providers.
    fn on_request(
        &self,
        _info: &RequestInfo,
        _req: &mut ChatRequest,
        _state: &mut State,
    ) -> Result<Verdict, PluginError> {
        Ok(Verdict::Continue)
    }

    /// A complete answer (also a cache hit, or another plugin's direct answer).
    fn on_response(
        &self,
        _info: &RequestInfo,
        _resp: &mut ChatResponse,
        _state: &mut State,
    ) -> Result<(), PluginError> {
        Ok(())
    }

    /// One chunk of a streamed answer.
    fn on_stream_chunk(
        &self,
        _info: &RequestInfo,
        _chunk: &mut ChatChunk,
        _state: &mut State,
    ) -> Result<ChunkVerdict, PluginError> {
        Ok(ChunkVerdict::Keep)
    }

    /// The stream is ending (with or without a finish reason): chunks to send before its end.
    fn on_stream_end(
        &self,
        _info: &RequestInfo,
        _state: &mut State,
    ) -> Result<Vec<ChatChunk>, PluginError> {
        Ok(Vec::new())
    }

    /// Before the gateway runs MCP tool `tool` (`server__tool`) in its loop: may change the
    /// JSON-encoded arguments or block the call.
    fn on_tool_call(
        &self,
        _info: &RequestInfo,
        _tool: &str,
        _arguments: &mut String,
        _state: &mut State,
    ) -> Result<ToolVerdict, PluginError> {
        Ok(ToolVerdict::Continue)
    }

    /// After the answer (its last byte, or the client leaving): the request's record as the
    /// request log keeps it (bodies only with `[logs] log_bodies`), for analytics and export. It
    /// runs on a background thread and never delays the client.
    fn on_complete(&self, _record: &Value) -> Result<(), PluginError> {
        Ok(())
    }

    /// A gateway tool's result text, before the model sees it: may change it.
    fn on_tool_result(
        &self,
        _info: &RequestInfo,
        _tool: &str,
        _result: &mut String,
        _state: &mut State,
    ) -> Result<(), PluginError> {
        Ok(())
    }
}
