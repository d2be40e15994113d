//! Anthropic Messages API wire types, shared by the Anthropic provider and the Anthropic ingress.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{Extra, Schema};

/// `POST /v1/messages` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessagesRequest {
    /// Model name.
    pub model: String,
    /// Conversation (user/assistant turns).
    pub messages: Vec<Message>,
    /// System prompt: a string or text blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    /// Output bound (required by Anthropic).
    pub max_tokens: u32,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Stream as SSE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Client tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// How the model must use tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// `{"user_id": ..}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Unmodelled fields (thinking, service_tier, ...), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

/// System prompt forms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum System {
    /// A string.
    Text(String),
    /// Text blocks.
    Blocks(Vec<Block>),
}

/// One turn.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: Role,
    /// A string or blocks.
    pub content: Content,
}

/// Turn roles.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The human (and tool results).
    User,
    /// The model (and tool uses).
    Assistant,
}

/// Message content forms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    /// A string.
    Text(String),
    /// Content blocks.
    Blocks(Vec<Block>),
}

/// A content block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// cache_control, citations: passed through.
        #[serde(flatten)]
        extra: Extra,
    },
    /// An image (`source`: base64 or url).
    Image {
        /// `{"type":"base64","media_type":..,"data":..}` or `{"type":"url","url":..}`.
        source: Value,
        /// cache_control: passed through.
        #[serde(flatten)]
        extra: Extra,
    },
    /// A tool call by the model.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments object.
        input: Value,
    },
    /// A tool result from the client.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// A string or blocks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Extended thinking.
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Signature for round-tripping.
        #[serde(default)]
        signature: String,
    },
    /// Redacted thinking.
    RedactedThinking {
        /// Opaque data.
        data: String,
    },
    /// A block type this gateway does not model (server tool use, search results, ...):
    /// skipped in upstream answers, rejected with a clear error in client requests.
    #[serde(other)]
    Unsupported,
}

/// Tool result content forms.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ToolResultContent {
    /// A string.
    Text(String),
    /// Blocks (text, image).
    Blocks(Vec<Block>),
}

/// A client tool declaration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    /// Tool name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the input.
    #[serde(default = "empty_schema")]
    pub input_schema: Schema,
    /// cache_control etc., passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

fn empty_schema() -> Schema {
    Schema::new(serde_json::json!({"type": "object", "properties": {}}))
}

/// `tool_choice`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto {
        /// Allow at most one tool call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must call some tool.
    Any {
        /// Allow at most one tool call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must call this tool.
    Tool {
        /// The tool.
        name: String,
        /// Allow at most one tool call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// No tools.
    None,
}

/// Non-streaming response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MessagesResponse {
    /// `msg_...`.
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    /// Always `assistant`.
    #[serde(default = "assistant_role")]
    pub role: Role,
    /// Model that answered.
    #[serde(default)]
    pub model: String,
    /// Answer blocks.
    #[serde(default)]
    pub content: Vec<Block>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Which stop sequence matched.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Token counts.
    #[serde(default)]
    pub usage: Usage,
}

fn message_type() -> String {
    "message".into()
}

fn assistant_role() -> Role {
    Role::Assistant
}

/// Token counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// All input tokens, cached or not.
    pub fn total_input(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0))
    }
}

/// A streaming event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// First event: the message shell with input usage.
    MessageStart {
        /// The shell (empty content).
        message: MessagesResponse,
    },
    /// A block begins.
    ContentBlockStart {
        /// Block index.
        index: u32,
        /// The block (empty text, or tool_use with empty input).
        content_block: Block,
    },
    /// A piece of a block.
    ContentBlockDelta {
        /// Block index.
        index: u32,
        /// The piece.
        delta: BlockDelta,
    },
    /// A block ends.
    ContentBlockStop {
        /// Block index.
        index: u32,
    },
    /// Stop reason and output usage.
    MessageDelta {
        /// Stop reason.
        delta: MessageDeltaBody,
        /// Usage so far (output tokens at least).
        #[serde(default)]
        usage: DeltaUsage,
    },
    /// Last event.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// A failure inside the stream.
    Error {
        /// `{"type": .., "message": ..}`.
        error: ErrorBody,
    },
}

/// Delta kinds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// Text piece.
    TextDelta {
        /// The text.
        text: String,
    },
    /// A fragment of a tool_use input's JSON.
    InputJsonDelta {
        /// The fragment.
        partial_json: String,
    },
    /// Thinking piece.
    ThinkingDelta {
        /// The text.
        thinking: String,
    },
    /// Thinking signature.
    SignatureDelta {
        /// The signature.
        signature: String,
    },
    /// Citation added to a text block.
    CitationsDelta {
        /// The citation.
        citation: Value,
    },
    /// A delta type this gateway does not model: skipped.
    #[serde(other)]
    Unsupported,
}

/// `message_delta.delta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MessageDeltaBody {
    /// Stop reason.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Matched stop sequence.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// `message_delta.usage`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeltaUsage {
    /// Output tokens so far.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens (newer API versions repeat them here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Input tokens written to the prompt cache (newer API versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache (newer API versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

/// Error body (`{"type":"error","error":{..}}` and stream `error` events).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    /// `invalid_request_error`, `overloaded_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable message.
    pub message: String,
}
