//! The canonical chat types: OpenAI's chat completions shape, the one request/response shape the
//! gateway's core speaks and every plugin hook sees.
//!
//! Every struct keeps the fields it does not model in `extra`, so an OpenAI-compatible upstream
//! receives exactly what the client sent (new OpenAI parameters pass through untouched).
//!
//! Those structs are read by `open_deserialize!` (the end of this file), not by serde's derive:
//! what an absent field becomes is said there, and only there. A field added to a struct and not
//! to its `open_deserialize!` list does not compile.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use serde_json::{Map, Value};

/// Fields of a JSON object this gateway does not model, kept verbatim.
pub type Extra = Map<String, Value>;

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChatRequest {
    /// Model or route name as the client asked for it (`provider/model` or a route).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Stream the answer as server-sent events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// `{"include_usage": true}` asks for a final usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Functions the model may call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"auto" | "none" | "required" | {"type":"function","function":{"name":..}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// Legacy output bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Output bound (newer name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// A string or a list of strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    /// Number of choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Everything else (response_format, seed, user, metadata, ...), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatRequest {
    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for a final usage chunk in a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The output bound, whichever name the client used.
    pub fn output_limit(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// `stream_options` of a chat request.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamOptions {
    /// Send a final chunk with `usage` and empty `choices`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Unmodelled options, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Who speaks in a message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions (also `developer`, treated the same).
    #[serde(alias = "developer")]
    System,
    /// The human.
    User,
    /// The model.
    Assistant,
    /// A tool result answering `tool_call_id`.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Text or content parts; absent on an assistant message that only calls tools.
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by the assistant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `role: tool`: which call this answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Unmodelled fields (refusal, audio, ...), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Message {
    /// A plain text message.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            extra: Extra::new(),
        }
    }

    /// The message's text: the string, or its text parts joined.
    pub fn text_content(&self) -> String {
        self.text_view().into_owned()
    }

    /// The message's text as `text_content` gives it, borrowed when the content is one string.
    pub fn text_view(&self) -> std::borrow::Cow<'_, str> {
        match &self.content {
            None => std::borrow::Cow::Borrowed(""),
            Some(Content::Text(t)) => std::borrow::Cow::Borrowed(t),
            Some(c) => std::borrow::Cow::Owned(c.as_text()),
        }
    }
}

/// Message content: a string, or a list of typed parts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (`text`, `image_url`, ...).
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text of this content; parts that are not text are skipped.
    pub fn as_text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join(""),
        }
    }
}

/// One typed content part.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContentPart {
    /// `text`, `image_url`, `input_audio`, `file`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `{"url": ..., "detail": ...}` of an `image_url` part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<Value>,
    /// Unmodelled fields, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A function the model may call.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function's declaration.
    pub function: FunctionDef,
}

/// How a [`Tool`] is written, field by field.
#[derive(Serialize)]
struct ToolFields<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    function: &'a FunctionDef,
}

impl Tool {
    /// The tool's JSON made when its schema was prepared ([`Schema::prepared_tool`]), if the
    /// tool is still the one it was made for: the same name and description, a function, no
    /// other field. A tool changed since (a plugin may rename one) is written field by field.
    fn prepared(&self) -> Option<&serde_json::value::RawValue> {
        let f = &self.function;
        let made = f.parameters.as_ref()?.0.tool.as_ref()?;
        (self.kind == "function"
            && f.extra.is_empty()
            && f.name == made.name
            && f.description == made.description)
            .then_some(&*made.text)
    }
}

impl Serialize for Tool {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.prepared() {
            Some(raw) => raw.serialize(s),
            None => ToolFields {
                kind: &self.kind,
                function: &self.function,
            }
            .serialize(s),
        }
    }
}

/// Declaration of a callable function.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionDef {
    /// Name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments. Shared: the gateway offers the same MCP tool schemas to
    /// every request, so a request holds them without copying, and their JSON is made once
    /// ([`Schema::prepared`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Schema>,
    /// Unmodelled fields (`strict`), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A JSON value shared between requests (a tool's JSON Schema). One made with
/// [`Schema::prepared`] also keeps its JSON text, made once, which is then copied wherever it is
/// written instead of being encoded again: the gateway offers the same MCP tool schemas to every
/// request. Reads as the value it holds (`Deref`); a changed schema is a new one.
#[derive(Clone)]
pub struct Schema(Arc<SchemaInner>);

struct SchemaInner {
    value: Value,
    text: Option<Box<serde_json::value::RawValue>>,
    /// For a tool's schema: the whole tool around it, written once.
    tool: Option<PreparedTool>,
}

/// A tool's JSON and what it was made from (see [`Tool::prepared`]).
struct PreparedTool {
    name: String,
    description: Option<String>,
    text: Box<serde_json::value::RawValue>,
}

impl Schema {
    /// Wraps a value (written by encoding it, as a `Value` is).
    pub fn new(value: Value) -> Self {
        Self(Arc::new(SchemaInner {
            value,
            text: None,
            tool: None,
        }))
    }

    /// Wraps a value that will be written many times: its JSON text is made now.
    pub fn prepared(value: Value) -> Self {
        let text = serde_json::value::to_raw_value(&value).ok();
        Self(Arc::new(SchemaInner {
            value,
            text,
            tool: None,
        }))
    }

    /// The parameters of a tool that will be offered many times (the gateway's MCP tools): the
    /// JSON of the schema and of the whole tool (`{"type":"function","function":{"name",
    /// "description","parameters"}}`) are made now, and a [`Tool`] holding this schema with the
    /// same name and description is written from them.
    pub fn prepared_tool(value: Value, name: &str, description: Option<&str>) -> Self {
        let mut schema = Self::prepared(value);
        let tool = Tool {
            kind: "function".into(),
            function: FunctionDef {
                name: name.to_owned(),
                description: description.map(str::to_owned),
                parameters: Some(schema.clone()),
                extra: Extra::new(),
            },
        };
        let made = serde_json::value::to_raw_value(&tool).ok();
        // The tool written, its copy of the schema goes: the schema is held once again.
        drop(tool);
        if let (Some(text), Some(inner)) = (made, Arc::get_mut(&mut schema.0)) {
            inner.tool = Some(PreparedTool {
                name: name.to_owned(),
                description: description.map(str::to_owned),
                text,
            });
        }
        schema
    }

    /// The value.
    pub fn value(&self) -> &Value {
        &self.0.value
    }
}

impl std::ops::Deref for Schema {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0.value
    }
}

impl From<Value> for Schema {
    fn from(value: Value) -> Self {
        Self::new(value)
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
    }
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.value.fmt(f)
    }
}

impl Serialize for Schema {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0.text {
            Some(raw) => raw.serialize(s),
            None => self.0.value.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(Self::new)
    }
}

/// A call the assistant made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCall {
    /// Call id, echoed by the tool result.
    pub id: String,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// Name and JSON-encoded arguments.
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".to_owned()
}

/// Function name and arguments of a call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON-encoded string, as OpenAI sends them.
    #[serde(default)]
    pub arguments: String,
}

/// Token counts of one answer.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Usage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Sum of both.
    pub total_tokens: u64,
    /// How the input tokens break down (`cached_tokens`, `cache_write_tokens`, `audio_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<Box<TokenDetails>>,
    /// How the output tokens break down (`reasoning_tokens`, `audio_tokens`, predictions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<Box<TokenDetails>>,
    /// Unmodelled fields, passed through (a detail that is not an object lands here too).
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// Usage from input and output counts.
    pub fn new(prompt: u64, completion: u64) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            ..Self::default()
        }
    }

    /// Input tokens read from a prompt cache (0 when not reported).
    pub fn cached_tokens(&self) -> u64 {
        detail(&self.prompt_tokens_details, |d| d.cached_tokens)
    }

    /// Input tokens written to a prompt cache (0 when not reported).
    pub fn cache_write_tokens(&self) -> u64 {
        detail(&self.prompt_tokens_details, |d| d.cache_write_tokens)
    }

    /// Output tokens spent reasoning (0 when not reported).
    pub fn reasoning_tokens(&self) -> u64 {
        detail(&self.completion_tokens_details, |d| d.reasoning_tokens)
    }
}

fn detail(d: &Option<Box<TokenDetails>>, count: fn(&TokenDetails) -> Option<u64>) -> u64 {
    d.as_deref().and_then(count).unwrap_or(0)
}

/// One of usage's detail objects: token counts by kind (boxed in `Usage`, which every answer and
/// streamed chunk moves several times). The kinds OpenAI names are fields (a
/// count that is not a whole number stays in `extra` as it came); any other member (a vendor's
/// own count) is kept in `extra`, in order. Written back, the named kinds come first.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TokenDetails {
    /// Input tokens read from a prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Input tokens written to a prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    /// Output tokens spent reasoning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Audio tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
    /// Predicted output tokens that appeared in the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_prediction_tokens: Option<u64>,
    /// Predicted output tokens that did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_prediction_tokens: Option<u64>,
    /// Other members, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl TokenDetails {
    /// Prompt-cache reads and writes (`cached_tokens`, `cache_write_tokens`).
    pub fn prompt_cache(read: u64, write: u64) -> Self {
        Self {
            cached_tokens: Some(read),
            cache_write_tokens: Some(write),
            ..Self::default()
        }
    }

    /// Sets member `name` to `value`: a named kind holding a whole number into its field, anything
    /// else into `extra` (a later member of the same name replaces an earlier one, as in a map).
    pub fn set(&mut self, name: &str, value: Value) {
        let slot = match name {
            "cached_tokens" => &mut self.cached_tokens,
            "cache_write_tokens" => &mut self.cache_write_tokens,
            "reasoning_tokens" => &mut self.reasoning_tokens,
            "audio_tokens" => &mut self.audio_tokens,
            "accepted_prediction_tokens" => &mut self.accepted_prediction_tokens,
            "rejected_prediction_tokens" => &mut self.rejected_prediction_tokens,
            _ => {
                self.extra.insert(name.to_owned(), value);
                return;
            }
        };
        *slot = value.as_u64();
        if slot.is_some() {
            if !self.extra.is_empty() {
                self.extra.remove(name);
            }
        } else {
            self.extra.insert(name.to_owned(), value);
        }
    }
}

/// `chat.completion` response body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatResponse {
    /// Completion id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model that answered.
    pub model: String,
    /// The answers.
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Unmodelled fields (system_fingerprint, service_tier), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

/// One answer of a response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Choice {
    /// Position among `n` choices.
    pub index: u32,
    /// The assistant's message.
    pub message: Message,
    /// `stop`, `length`, `tool_calls`, `content_filter`.
    pub finish_reason: Option<String>,
    /// Unmodelled fields (logprobs), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `chat.completion.chunk`: one event of a stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatChunk {
    /// Completion id, the same on every chunk.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model that answered.
    pub model: String,
    /// Deltas; empty on the final usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Present on the final usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Unmodelled fields, passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatChunk {
    /// A chunk of choice 0 carrying `delta` (and, on the last one, the finish reason).
    pub fn of(id: &str, created: u64, model: &str, delta: Delta, finish: Option<String>) -> Self {
        Self {
            id: id.to_owned(),
            object: chunk_object(),
            created,
            model: model.to_owned(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                extra: Extra::new(),
            }],
            usage: None,
            extra: Extra::new(),
        }
    }
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ChunkChoice {
    /// Which choice this delta extends.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// Set on the last delta of the choice.
    pub finish_reason: Option<String>,
    /// Unmodelled fields (logprobs), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// New content of a streamed choice.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Delta {
    /// `assistant`, on the first delta.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A piece of text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Pieces of tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Unmodelled fields (refusal, reasoning_content), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A piece of a streamed tool call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ToolCallDelta {
    /// Which call of the message this extends.
    #[serde(default)]
    pub index: u32,
    /// Call id, on the first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on the first piece.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (first piece) and a fragment of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// Name and argument fragment of a streamed tool call.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionCallDelta {
    /// Function name, on the first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the JSON-encoded arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

open_deserialize!(ChatRequest {
    model: "model" => required!("model"),
    messages: "messages" => required!("messages"),
    stream: "stream" => None,
    stream_options: "stream_options" => None,
    tools: "tools" => None,
    tool_choice: "tool_choice" => None,
    max_tokens: "max_tokens" => None,
    max_completion_tokens: "max_completion_tokens" => None,
    temperature: "temperature" => None,
    top_p: "top_p" => None,
    stop: "stop" => None,
    n: "n" => None,
});
open_deserialize!(StreamOptions {
    include_usage: "include_usage" => None,
});
open_deserialize!(Message {
    role: "role" => required!("role"),
    content: "content" => None,
    name: "name" => None,
    tool_calls: "tool_calls" => None,
    tool_call_id: "tool_call_id" => None,
});
open_deserialize!(ContentPart {
    kind: "type" => required!("type"),
    text: "text" => None,
    image_url: "image_url" => None,
});
open_deserialize!(FunctionDef {
    name: "name" => required!("name"),
    description: "description" => None,
    parameters: "parameters" => None,
});
open_deserialize!(Usage {
    prompt_tokens: "prompt_tokens" => 0,
    completion_tokens: "completion_tokens" => 0,
    total_tokens: "total_tokens" => 0,
    prompt_tokens_details: "prompt_tokens_details" => None; objects,
    completion_tokens_details: "completion_tokens_details" => None; objects,
});

impl<'de> Deserialize<'de> for TokenDetails {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TokenDetails;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("token counts by kind")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TokenDetails, A::Error> {
                let mut details = TokenDetails::default();
                while let Some(name) = map.next_key::<crate::open::Key<'de>>()? {
                    details.set(name.as_str(), map.next_value()?);
                }
                Ok(details)
            }
        }
        d.deserialize_map(V)
    }
}
open_deserialize!(ChatResponse {
    id: "id" => String::new(),
    object: "object" => completion_object(),
    created: "created" => 0,
    model: "model" => String::new(),
    choices: "choices" => required!("choices"),
    usage: "usage" => None,
});
open_deserialize!(Choice {
    index: "index" => 0,
    message: "message" => required!("message"),
    finish_reason: "finish_reason" => None,
});
open_deserialize!(ChatChunk {
    id: "id" => String::new(),
    object: "object" => chunk_object(),
    created: "created" => 0,
    model: "model" => String::new(),
    choices: "choices" => Vec::new(),
    usage: "usage" => None,
});
open_deserialize!(ChunkChoice {
    index: "index" => 0,
    delta: "delta" => Delta::default(),
    finish_reason: "finish_reason" => None,
});
open_deserialize!(Delta {
    role: "role" => None,
    content: "content" => None,
    tool_calls: "tool_calls" => None,
});

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_view_borrows_what_text_content_copies() {
        for m in [
            json!({"role": "user", "content": "  plain  "}),
            json!({"role": "assistant", "content": null, "tool_calls": []}),
            json!({"role": "user", "content": [
                {"type": "text", "text": "a "},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                {"type": "text", "text": "b"}
            ]}),
        ] {
            let m: Message = serde_json::from_value(m).expect("message");
            assert_eq!(m.text_view(), m.text_content());
        }
        let m: Message =
            serde_json::from_value(json!({"role": "user", "content": "hi"})).expect("message");
        assert!(matches!(m.text_view(), std::borrow::Cow::Borrowed("hi")));
    }

    /// Reads `v` as `T` and writes it back: every modelled and unmodelled field must survive.
    fn round_trip<T: serde::de::DeserializeOwned + Serialize>(v: Value) {
        let text = v.to_string();
        let typed: T = serde_json::from_str(&text).expect("from text");
        assert_eq!(
            serde_json::to_value(&typed).expect("to value"),
            v,
            "from text"
        );
        let typed: T = serde_json::from_value(v.clone()).expect("from a value");
        assert_eq!(
            serde_json::to_value(&typed).expect("to value"),
            v,
            "from a value"
        );
    }

    /// A tool whose schema was prepared with it is written from the JSON made then, which is
    /// what writing it field by field gives; once anything in it changes, it is written as it is
    /// now.
    #[test]
    fn a_prepared_tool_is_written_as_made_until_it_changes() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "number"}}});
        let tool = |name: &str, description: Option<&str>, parameters: Schema| Tool {
            kind: "function".into(),
            function: FunctionDef {
                name: name.into(),
                description: description.map(Into::into),
                parameters: Some(parameters),
                extra: Extra::new(),
            },
        };
        let about = Some("Adds \"two\" numbers\n\u{e9}");
        let prepared = Schema::prepared_tool(schema.clone(), "calc__add", about);
        let plain = tool("calc__add", about, Schema::new(schema.clone()));
        let fast = tool("calc__add", about, prepared.clone());
        assert!(fast.prepared().is_some());
        assert!(plain.prepared().is_none());
        let text = serde_json::to_string(&plain).expect("plain");
        assert_eq!(serde_json::to_string(&fast).expect("fast"), text);
        assert_eq!(
            serde_json::to_value(&fast).expect("fast"),
            serde_json::to_value(&plain).expect("plain")
        );
        type Change = fn(&mut Tool);
        let changes: [(&str, Change); 5] = [
            ("renamed", |t| t.function.name = "calc__sub".into()),
            ("described", |t| {
                t.function.description = Some("Adds".into())
            }),
            ("undescribed", |t| t.function.description = None),
            ("extra", |t| {
                t.function.extra.insert("strict".into(), Value::Bool(true));
            }),
            ("kind", |t| t.kind = "custom".into()),
        ];
        for (what, change) in changes {
            let (mut fast, mut plain) = (fast.clone(), plain.clone());
            change(&mut fast);
            change(&mut plain);
            assert!(fast.prepared().is_none(), "{what}");
            assert_eq!(
                serde_json::to_string(&fast).expect("fast"),
                serde_json::to_string(&plain).expect("plain"),
                "{what}"
            );
            assert_ne!(serde_json::to_string(&fast).expect("fast"), text, "{what}");
        }
    }

    #[test]
    fn every_field_and_every_unknown_one_passes_through() {
        round_trip::<ChatRequest>(json!({
            "model": "gpt-4o", "stream": true,
            "stream_options": {"include_usage": true, "future": 1},
            "messages": [
                {"role": "system", "content": "be brief", "x-note": [1, 2]},
                {"role": "user", "name": "ann", "content": [
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}}
                ]},
                {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "tools": [{"type": "function", "function": {
                "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true
            }}],
            "tool_choice": "auto", "max_tokens": 5, "max_completion_tokens": 6,
            "temperature": 0.5, "top_p": 1.0, "stop": ["\n"], "n": 1,
            "seed": 7, "response_format": {"type": "json_object"}, "metadata": {"a": "b"}
        }));
        round_trip::<ChatResponse>(json!({
            "id": "r", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
                "message": {"role": "assistant", "content": "hi", "annotations": []}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 0}},
            "system_fingerprint": "fp", "service_tier": "default"
        }));
        round_trip::<ChatChunk>(json!({
            "id": "r", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "finish_reason": null, "logprobs": null, "delta": {
                "role": "assistant", "content": "h", "reasoning_content": "r",
                "tool_calls": [{"index": 0, "id": "c", "type": "function",
                    "function": {"name": "f", "arguments": "{"}}]
            }}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            "obfuscation": "abc"
        }));
    }

    /// Usage's detail objects are read into their named counts; anything else in them, and a
    /// detail that is not an object, is kept as it came.
    #[test]
    fn usage_details_keep_every_member() {
        round_trip::<Usage>(json!({
            "prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0, "text_tokens": 6,
                "image_tokens": null},
            "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 1.5,
                "accepted_prediction_tokens": -1, "rejected_prediction_tokens": "0",
                "cache_write_tokens": null, "by_tool": {"a": 1}},
            "cost": 0.25
        }));
        for odd in [
            json!(null),
            json!(7),
            json!("n/a"),
            json!([1, 2]),
            json!(true),
        ] {
            round_trip::<Usage>(json!({
                "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                "prompt_tokens_details": odd.clone(), "completion_tokens_details": odd
            }));
        }
        let u: Usage = serde_json::from_str(
            r#"{"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 3},
                "completion_tokens_details": {"reasoning_tokens": 2, "x": 1}}"#,
        )
        .expect("usage");
        assert_eq!(
            (
                u.cached_tokens(),
                u.reasoning_tokens(),
                u.cache_write_tokens()
            ),
            (3, 2, 0)
        );
        assert!(u.extra.is_empty());
        // The named counts are written first, in OpenAI's order.
        let text = serde_json::to_string(
            &serde_json::from_str::<Usage>(
                r#"{"completion_tokens_details": {"x": 1, "rejected_prediction_tokens": 4,
                "audio_tokens": 3, "reasoning_tokens": 2}}"#,
            )
            .expect("usage"),
        )
        .expect("text");
        assert!(
            text.ends_with(
                r#"{"reasoning_tokens":2,"audio_tokens":3,"rejected_prediction_tokens":4,"x":1}}"#
            ),
            "{text}"
        );
        // A member twice keeps the last, whichever kind of value each was.
        let d = |text: &str| serde_json::from_str::<TokenDetails>(text).expect(text);
        let twice = d(r#"{"cached_tokens": 3, "cached_tokens": null}"#);
        assert_eq!(twice.cached_tokens, None);
        assert_eq!(twice.extra.get("cached_tokens"), Some(&Value::Null));
        let twice = d(r#"{"cached_tokens": null, "cached_tokens": 3}"#);
        assert_eq!((twice.cached_tokens, twice.extra.len()), (Some(3), 0));
        let u: Usage =
            serde_json::from_str(r#"{"prompt_tokens_details": 1, "prompt_tokens_details": {}}"#)
                .expect("usage");
        assert!(u.prompt_tokens_details.is_some() && u.extra.is_empty());
        assert!(serde_json::from_str::<TokenDetails>("[1]").is_err());
        assert!(serde_json::from_str::<Usage>(r#"{"prompt_tokens_details": {"a": }}"#).is_err());
    }

    #[test]
    fn absent_fields_take_their_defaults_and_required_ones_are_named() {
        let r: ChatResponse =
            serde_json::from_value(json!({"choices": [{"message": {"role": "assistant"}}]}))
                .expect("minimal answer");
        assert_eq!(
            (r.id.as_str(), r.object.as_str(), r.created),
            ("", "chat.completion", 0)
        );
        assert_eq!(r.choices[0].index, 0);
        assert_eq!(r.choices[0].message.content, None);
        assert!(r.usage.is_none() && r.extra.is_empty());
        let c: ChatChunk = serde_json::from_str("{}").expect("empty chunk");
        assert_eq!(c.object, "chat.completion.chunk");
        assert!(c.choices.is_empty());
        let c: ChunkChoice = serde_json::from_str("{}").expect("empty choice");
        assert_eq!(c.delta, Delta::default());
        let u: Usage = serde_json::from_str(r#"{"total_tokens": 3}"#).expect("usage");
        assert_eq!((u.prompt_tokens, u.total_tokens), (0, 3));

        let err = |text: &str| {
            serde_json::from_str::<ChatRequest>(text)
                .expect_err(text)
                .to_string()
        };
        assert!(err(r#"{"model": "m"}"#).starts_with("missing field `messages`"));
        assert!(err(r#"{"messages": []}"#).starts_with("missing field `model`"));
        assert!(
            err(r#"{"model": "m", "model": "n", "messages": []}"#)
                .starts_with("duplicate field `model`")
        );
        assert!(err(r#"{"model": 5, "messages": []}"#).starts_with("invalid type: integer `5`"));
        assert!(
            err(r#"{"model": "m", "messages": [{"content": "x"}]}"#)
                .starts_with("missing field `role`")
        );
        assert!(
            err(r#"{"model": "m", "messages": [{"role": "robot"}]}"#)
                .starts_with("unknown variant `robot`")
        );
        assert!(
            err(r#"["m", []]"#).starts_with("invalid type: sequence, expected struct ChatRequest")
        );
        assert!(err(r#"{"model": "m", "messages": [], "user": }"#).starts_with("expected value"));
        // `null` for a field that is not optional is refused, as before.
        assert!(serde_json::from_str::<ChatResponse>(r#"{"id": null, "choices": []}"#).is_err());
    }

    #[test]
    fn keys_are_read_unescaped_and_an_unknown_key_twice_keeps_the_last() {
        let r: ChatRequest = serde_json::from_str(
            r#"{"mo\u0064el": "m", "messages": [], "user": "a", "user": "b"}"#,
        )
        .expect("request");
        assert_eq!(r.model, "m");
        assert_eq!(r.extra.get("user"), Some(&json!("b")));
        assert_eq!(r.extra.len(), 1);
    }

    #[test]
    fn a_shared_schema_is_written_as_its_value_every_time() {
        let value = json!({"type": "object", "properties": {"q": {"type": "string", "description": "a \"quoted\" é"}}, "required": ["q"]});
        let schema = Schema::prepared(value.clone());
        let tool = |s: Schema| Tool {
            kind: "function".into(),
            function: FunctionDef {
                name: "t".into(),
                description: None,
                parameters: Some(s),
                extra: Extra::new(),
            },
        };
        let req = ChatRequest {
            model: "m".into(),
            tools: Some(vec![tool(schema.clone()), tool(Schema::new(value.clone()))]),
            ..Default::default()
        };
        let expected = json!({"model": "m", "messages": [], "tools": [
            {"type": "function", "function": {"name": "t", "parameters": value}},
            {"type": "function", "function": {"name": "t", "parameters": value}},
        ]});
        // A prepared schema (its text copied) and a plain one (encoded), as text, twice, and as
        // a value.
        for _ in 0..2 {
            let text = serde_json::to_string(&req).expect("text");
            assert_eq!(
                serde_json::from_str::<Value>(&text).expect("json"),
                expected
            );
            assert!(text.contains(r#""description":"a \"quoted\" é""#), "{text}");
        }
        assert_eq!(serde_json::to_value(&req).expect("value"), expected);
        // Read back, it is the same request; it derefs to its value.
        let back: ChatRequest =
            serde_json::from_str(&serde_json::to_string(&req).expect("text")).expect("read");
        assert_eq!(back, req);
        assert_eq!(*schema, value);
        assert_eq!(schema.value()["required"], json!(["q"]));
    }
}
