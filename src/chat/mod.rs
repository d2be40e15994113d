//! Canonical OpenAI-shaped chat types: the only request/response shape the core speaks. The plain
//! types live in the `switchyard-plugin` crate (plugins see exactly what the core sees); the
//! stream type and the clocks are the gateway's.

mod chunk;
mod raw;
mod stream;

pub use chunk::{Chunk, Heads, RawEvent};
pub use raw::RawAnswer;
pub use stream::{
    ChatStream, StreamCollector, StreamError, StreamItem, collect_stream, merge_call_delta,
};

pub use switchyard_plugin::chat::*;

/// A request's fields, borrowed, serialized as [`ChatRequest`] serializes them: the model and
/// the streaming fields can be replaced and the messages left out without cloning the request
/// (its conversation and tool schemas). The OpenAI provider sends it; the cache key encodes it
/// without the messages.
#[derive(serde::Serialize)]
pub struct RequestView<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [Message]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<std::borrow::Cow<'a, StreamOptions>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(flatten)]
    extra: &'a Extra,
}

impl<'a> RequestView<'a> {
    /// Every field of `req`, borrowed.
    pub fn of(req: &'a ChatRequest) -> Self {
        // Destructured so that a new `ChatRequest` field cannot be left out unnoticed.
        let ChatRequest {
            model,
            messages,
            stream,
            stream_options,
            tools,
            tool_choice,
            max_tokens,
            max_completion_tokens,
            temperature,
            top_p,
            stop,
            n,
            extra,
        } = req;
        Self {
            model,
            messages: Some(messages),
            stream: *stream,
            stream_options: stream_options.as_ref().map(std::borrow::Cow::Borrowed),
            tools: tools.as_deref(),
            tool_choice: tool_choice.as_ref(),
            max_tokens: *max_tokens,
            max_completion_tokens: *max_completion_tokens,
            temperature: *temperature,
            top_p: *top_p,
            stop: stop.as_ref(),
            n: *n,
            extra,
        }
    }

    /// Without the conversation and the streaming fields (what the cache key encodes of them).
    pub fn without_messages(mut self) -> Self {
        self.messages = None;
        self.stream = None;
        self.stream_options = None;
        self
    }

    /// With this attempt's upstream model and streaming fields instead of the client's.
    pub fn for_attempt(
        mut self,
        model: &'a str,
        stream: Option<bool>,
        stream_options: Option<StreamOptions>,
    ) -> Self {
        self.model = model;
        self.stream = stream;
        self.stream_options = stream_options.map(std::borrow::Cow::Owned);
        self
    }
}

/// Unix time in seconds, for `created`.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix time in milliseconds, for logs and series.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new id with this prefix: the creation time (hex milliseconds, so stored responses sort by
/// age) and 128 random bits.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:012x}{:032x}", unix_now_ms(), fastrand::u128(..))
}

/// The creation time (unix ms) of an id made by `new_id`.
pub fn id_time_ms(id: &str) -> Option<u64> {
    let hex = id.split_once('_')?.1.get(..12)?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests;
