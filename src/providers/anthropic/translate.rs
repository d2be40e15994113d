//! Canonical (OpenAI-shaped) <-> Anthropic Messages translation, both directions, streams too.
//!
//! The provider uses `to_messages_request`, `from_messages_response` and [`StreamDecoder`]; the
//! Anthropic ingress uses `from_messages_request`, `to_messages_response` and [`StreamEncoder`].

use serde_json::{Value, json};

use super::wire::{self, Block, BlockDelta, MessagesRequest, MessagesResponse, StreamEvent};
use crate::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, Delta, Extra, FunctionCall,
    FunctionCallDelta, FunctionDef, Message, Role, Schema, TokenDetails, Tool, ToolCall,
    ToolCallDelta, Usage, unix_now,
};

pub use crate::providers::TranslateError;

/// Output bound used when an OpenAI-shaped request gives none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

// === canonical -> Anthropic (provider side) ===

/// Builds the Anthropic request for a canonical one.
pub fn to_messages_request(
    req: &ChatRequest,
    model: &str,
) -> Result<MessagesRequest, TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(TranslateError(
            "`n` > 1 is not supported by Anthropic models".into(),
        ));
    }
    let mut system = Vec::new();
    let mut turns: Vec<wire::Message> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m.role {
            Role::System => {
                system.push(m.text_content());
                continue;
            }
            Role::User => (wire::Role::User, user_blocks(m, i)?),
            Role::Assistant => (wire::Role::Assistant, assistant_blocks(m, i)?),
            Role::Tool => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    TranslateError(format!("messages[{i}]: a tool message needs tool_call_id"))
                })?;
                let block = Block::ToolResult {
                    tool_use_id: id,
                    content: Some(wire::ToolResultContent::Text(m.text_content())),
                    is_error: None,
                };
                (wire::Role::User, vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => {
                if let wire::Content::Blocks(b) = &mut last.content {
                    b.extend(blocks);
                }
            }
            _ => turns.push(wire::Message {
                role,
                content: wire::Content::Blocks(blocks),
            }),
        }
    }
    let tools =
        req.tools.as_ref().map(|ts| {
            ts.iter()
                .map(|t| wire::Tool {
                    name: t.function.name.clone(),
                    description: t.function.description.clone(),
                    input_schema: t.function.parameters.clone().unwrap_or_else(|| {
                        Schema::new(json!({"type": "object", "properties": {}}))
                    }),
                    extra: Extra::new(),
                })
                .collect()
        });
    let no_parallel = req
        .extra
        .get("parallel_tool_calls")
        .and_then(Value::as_bool)
        == Some(false);
    let disable = no_parallel.then_some(true);
    let tool_choice = match &req.tool_choice {
        None => no_parallel.then_some(wire::ToolChoice::Auto {
            disable_parallel_tool_use: disable,
        }),
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => wire::ToolChoice::None,
            "required" => wire::ToolChoice::Any {
                disable_parallel_tool_use: disable,
            },
            _ => wire::ToolChoice::Auto {
                disable_parallel_tool_use: disable,
            },
        }),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(wire::ToolChoice::Tool {
                name: name.to_owned(),
                disable_parallel_tool_use: disable,
            }),
            None => return Err(TranslateError(format!("unsupported tool_choice: {v}"))),
        },
    };
    let stop_sequences = match &req.stop {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(v) => {
            return Err(TranslateError(format!(
                "stop must be a string or a list of strings, got {v}"
            )));
        }
    };
    let metadata = req
        .extra
        .get("user")
        .and_then(Value::as_str)
        .map(|u| json!({"user_id": u}));
    Ok(MessagesRequest {
        model: model.to_owned(),
        messages: turns,
        system: (!system.is_empty()).then(|| wire::System::Text(system.join("\n\n"))),
        max_tokens: req.output_limit().unwrap_or(DEFAULT_MAX_TOKENS),
        stop_sequences,
        stream: None,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: None,
        tools,
        tool_choice,
        metadata,
        extra: Extra::new(),
    })
}

fn user_blocks(m: &Message, i: usize) -> Result<Vec<Block>, TranslateError> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![text_block(t.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                part_to_block(p)
                    .map_err(|e| TranslateError(format!("messages[{i}].content[{j}]: {e}")))
            })
            .collect(),
    }
}

fn text_block(text: String) -> Block {
    Block::Text {
        text,
        extra: Extra::new(),
    }
}

fn part_to_block(p: &ContentPart) -> Result<Block, String> {
    match p.kind.as_str() {
        "text" => Ok(text_block(p.text.clone().unwrap_or_default())),
        "image_url" => {
            let url = p
                .image_url
                .as_ref()
                .and_then(|u| u.get("url").or(Some(u)))
                .and_then(Value::as_str)
                .ok_or("image_url part without a url")?;
            let source = match url
                .strip_prefix("data:")
                .and_then(|rest| rest.split_once(";base64,"))
            {
                Some((media_type, data)) => {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
                None => json!({"type": "url", "url": url}),
            };
            Ok(Block::Image {
                source,
                extra: Extra::new(),
            })
        }
        other => Err(format!(
            "content part type `{other}` cannot be sent to an Anthropic model"
        )),
    }
}

fn assistant_blocks(m: &Message, i: usize) -> Result<Vec<Block>, TranslateError> {
    let mut blocks = Vec::new();
    let text = m.text_content();
    if !text.is_empty() {
        blocks.push(text_block(text));
    }
    for (j, c) in m.tool_calls.iter().flatten().enumerate() {
        let input = crate::providers::arguments_object(&c.function.arguments).map_err(|e| {
            TranslateError(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: {e}"
            ))
        })?;
        blocks.push(Block::ToolUse {
            id: c.id.clone(),
            name: c.function.name.clone(),
            input,
        });
    }
    Ok(blocks)
}

/// Maps an Anthropic stop reason to OpenAI's finish reason.
pub fn finish_reason(stop: Option<&str>) -> Option<String> {
    stop.map(|s| {
        match s {
            "max_tokens" | "model_context_window_exceeded" => "length",
            "tool_use" => "tool_calls",
            "refusal" => "content_filter",
            _ => "stop",
        }
        .to_owned()
    })
}

/// Builds the canonical response for an Anthropic one.
pub fn from_messages_response(r: MessagesResponse) -> ChatResponse {
    let message = assistant_turn(r.content);
    ChatResponse {
        id: r.id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: r.model,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: finish_reason(r.stop_reason.as_deref()),
            extra: Extra::new(),
        }],
        usage: Some(usage(&r.usage)),
        extra: Extra::new(),
    }
}

/// Canonical usage from Anthropic's (cache reads and writes counted as input, and reported).
fn usage(u: &wire::Usage) -> Usage {
    let mut out = Usage::new(u.total_input(), u.output_tokens);
    out.prompt_tokens_details = cache_details(u);
    out
}

fn cache_details(u: &wire::Usage) -> Option<Box<TokenDetails>> {
    let (read, write) = (u.cache_read_input_tokens, u.cache_creation_input_tokens);
    (read.is_some() || write.is_some()).then(|| {
        Box::new(TokenDetails::prompt_cache(
            read.unwrap_or(0),
            write.unwrap_or(0),
        ))
    })
}

/// Turns Anthropic stream events into canonical chunks.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    id: String,
    model: String,
    created: u64,
    input_tokens: u64,
    output_tokens: u64,
    /// Cache reads and writes, from `message_start`.
    cache: Option<Box<TokenDetails>>,
    /// Anthropic block index -> tool call ordinal.
    tool_blocks: Vec<(u32, u32)>,
    next_tool: u32,
}

impl StreamDecoder {
    fn chunk(&self, delta: Delta, finish: Option<String>) -> ChatChunk {
        ChatChunk::of(&self.id, self.created, &self.model, delta, finish)
    }

    fn tool_ordinal(&self, index: u32) -> Option<u32> {
        self.tool_blocks
            .iter()
            .find(|(b, _)| *b == index)
            .map(|(_, o)| *o)
    }

    /// Feeds one event; returns the chunks it produces (`Err` for an in-stream error event).
    pub fn push(&mut self, ev: StreamEvent) -> Result<Vec<ChatChunk>, String> {
        let out = match ev {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.created = unix_now();
                self.input_tokens = message.usage.total_input();
                self.output_tokens = message.usage.output_tokens;
                self.cache = cache_details(&message.usage);
                let delta = Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    ..Delta::default()
                };
                vec![self.chunk(delta, None)]
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::Text { text, .. } if !text.is_empty() => {
                    vec![self.chunk(text_delta(text), None)]
                }
                Block::ToolUse { id, name, .. } => {
                    let ordinal = self.next_tool;
                    self.next_tool += 1;
                    self.tool_blocks.push((index, ordinal));
                    let d = ToolCallDelta {
                        index: ordinal,
                        id: Some(id),
                        kind: Some("function".into()),
                        function: Some(FunctionCallDelta {
                            name: Some(name),
                            arguments: Some(String::new()),
                        }),
                    };
                    vec![self.chunk(tool_delta(d), None)]
                }
                _ => Vec::new(),
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => vec![self.chunk(text_delta(text), None)],
                BlockDelta::InputJsonDelta { partial_json } => match self.tool_ordinal(index) {
                    Some(ordinal) if !partial_json.is_empty() => {
                        let d = ToolCallDelta {
                            index: ordinal,
                            function: Some(FunctionCallDelta {
                                name: None,
                                arguments: Some(partial_json),
                            }),
                            ..ToolCallDelta::default()
                        };
                        vec![self.chunk(tool_delta(d), None)]
                    }
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            },
            StreamEvent::MessageDelta { delta, usage } => {
                self.output_tokens = usage.output_tokens;
                if let Some(input) = usage.input_tokens.filter(|n| *n > 0) {
                    // Newer API versions repeat the counts here, input uncached as at the start.
                    let repeated = wire::Usage {
                        input_tokens: input,
                        output_tokens: usage.output_tokens,
                        cache_creation_input_tokens: usage
                            .cache_creation_input_tokens
                            .or(self.cache.as_ref().and_then(|c| c.cache_write_tokens)),
                        cache_read_input_tokens: usage
                            .cache_read_input_tokens
                            .or(self.cache.as_ref().and_then(|c| c.cached_tokens)),
                    };
                    self.input_tokens = repeated.total_input();
                    self.cache = cache_details(&repeated);
                }
                vec![self.chunk(
                    Delta::default(),
                    finish_reason(delta.stop_reason.as_deref()),
                )]
            }
            StreamEvent::MessageStop => {
                let mut c = self.chunk(Delta::default(), None);
                c.choices.clear();
                let mut usage = Usage::new(self.input_tokens, self.output_tokens);
                usage.prompt_tokens_details = self.cache.take();
                c.usage = Some(usage);
                vec![c]
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping => Vec::new(),
            StreamEvent::Error { error } => {
                return Err(format!("{}: {}", error.kind, error.message));
            }
        };
        Ok(out)
    }
}

fn text_delta(text: String) -> Delta {
    Delta {
        content: Some(text),
        ..Delta::default()
    }
}

fn tool_delta(d: ToolCallDelta) -> Delta {
    Delta {
        tool_calls: Some(vec![d]),
        ..Delta::default()
    }
}

// === Anthropic -> canonical (ingress side) ===

/// Builds the canonical request for an Anthropic one received by the Anthropic ingress.
pub fn from_messages_request(r: MessagesRequest) -> Result<ChatRequest, TranslateError> {
    let mut messages = Vec::new();
    match r.system {
        None => {}
        Some(wire::System::Text(t)) => messages.push(Message::text(Role::System, t)),
        Some(wire::System::Blocks(bs)) => {
            messages.push(Message::text(Role::System, blocks_text(&bs)))
        }
    }
    for (i, m) in r.messages.into_iter().enumerate() {
        let blocks = match m.content {
            wire::Content::Text(t) => vec![text_block(t)],
            wire::Content::Blocks(b) => b,
        };
        match m.role {
            wire::Role::User => user_turn(blocks, i, &mut messages)?,
            wire::Role::Assistant => {
                if let Some(j) = blocks.iter().position(|b| matches!(b, Block::Unsupported)) {
                    return Err(unsupported_block(i, j));
                }
                messages.push(assistant_turn(blocks));
            }
        }
    }
    let tools = r.tools.map(|ts| {
        ts.into_iter()
            .map(|t| Tool {
                kind: "function".into(),
                function: FunctionDef {
                    name: t.name,
                    description: t.description,
                    parameters: Some(t.input_schema),
                    extra: Extra::new(),
                },
            })
            .collect()
    });
    let mut extra = Extra::new();
    let tool_choice = r.tool_choice.map(|c| match c {
        wire::ToolChoice::Auto {
            disable_parallel_tool_use,
        } => {
            no_parallel(disable_parallel_tool_use, &mut extra);
            json!("auto")
        }
        wire::ToolChoice::Any {
            disable_parallel_tool_use,
        } => {
            no_parallel(disable_parallel_tool_use, &mut extra);
            json!("required")
        }
        wire::ToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        } => {
            no_parallel(disable_parallel_tool_use, &mut extra);
            json!({"type": "function", "function": {"name": name}})
        }
        wire::ToolChoice::None => json!("none"),
    });
    if let Some(user) = r
        .metadata
        .as_ref()
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        extra.insert("user".into(), json!(user));
    }
    Ok(ChatRequest {
        model: r.model,
        messages,
        stream: r.stream,
        stream_options: None,
        tools,
        tool_choice,
        max_tokens: Some(r.max_tokens),
        max_completion_tokens: None,
        temperature: r.temperature,
        top_p: r.top_p,
        stop: r.stop_sequences.map(|s| json!(s)),
        n: None,
        extra,
    })
}

fn no_parallel(disable: Option<bool>, extra: &mut Extra) {
    if disable == Some(true) {
        extra.insert("parallel_tool_calls".into(), json!(false));
    }
}

fn blocks_text(bs: &[Block]) -> String {
    bs.iter()
        .filter_map(|b| match b {
            Block::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn user_turn(blocks: Vec<Block>, i: usize, out: &mut Vec<Message>) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    for (j, b) in blocks.into_iter().enumerate() {
        match b {
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
            } => {
                let text = match content {
                    None => String::new(),
                    Some(wire::ToolResultContent::Text(t)) => t,
                    Some(wire::ToolResultContent::Blocks(bs)) => blocks_text(&bs),
                };
                let text = if is_error == Some(true) {
                    format!("Error: {text}")
                } else {
                    text
                };
                let mut m = Message::text(Role::Tool, text);
                m.tool_call_id = Some(tool_use_id);
                out.push(m);
            }
            Block::Text { text, .. } => parts.push(ContentPart {
                kind: "text".into(),
                text: Some(text),
                image_url: None,
                extra: Extra::new(),
            }),
            Block::Image { source, .. } => {
                let url = match source.get("type").and_then(Value::as_str) {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        source
                            .get("media_type")
                            .and_then(Value::as_str)
                            .unwrap_or("image/png"),
                        source
                            .get("data")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    ),
                    _ => source
                        .get("url")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                };
                parts.push(ContentPart {
                    kind: "image_url".into(),
                    text: None,
                    image_url: Some(json!({"url": url})),
                    extra: Extra::new(),
                });
            }
            Block::ToolUse { .. } => {
                return Err(TranslateError(format!(
                    "messages[{i}].content[{j}]: tool_use belongs in an assistant turn"
                )));
            }
            Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
            Block::Unsupported => return Err(unsupported_block(i, j)),
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let all_text = parts.iter().all(|p| p.kind == "text");
    let content = if all_text {
        Content::Text(
            parts
                .into_iter()
                .filter_map(|p| p.text)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    } else {
        Content::Parts(parts)
    };
    out.push(Message {
        role: Role::User,
        content: Some(content),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Extra::new(),
    });
    Ok(())
}

/// An assistant turn's blocks as one canonical message: text joined, tool uses as tool calls.
fn unsupported_block(i: usize, j: usize) -> TranslateError {
    TranslateError(format!(
        "messages[{i}].content[{j}]: unsupported content block type (supported: text, image, tool_use, tool_result, thinking)"
    ))
}

fn assistant_turn(blocks: Vec<Block>) -> Message {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b {
            Block::Text { text: t, .. } => text.push_str(&t),
            Block::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: input.to_string(),
                },
            }),
            _ => {}
        }
    }
    Message {
        role: Role::Assistant,
        content: (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
        name: None,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
        extra: Extra::new(),
    }
}

/// Maps OpenAI's finish reason to an Anthropic stop reason.
pub fn stop_reason(finish: Option<&str>) -> String {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
    .to_owned()
}

/// Builds the Anthropic response for a canonical one.
pub fn to_messages_response(r: ChatResponse) -> MessagesResponse {
    let choice = r.choices.into_iter().next();
    let mut content = Vec::new();
    let mut finish = None;
    if let Some(c) = choice {
        finish = c.finish_reason;
        let text = c.message.text_content();
        if !text.is_empty() {
            content.push(text_block(text));
        }
        for call in c.message.tool_calls.unwrap_or_default() {
            content.push(Block::ToolUse {
                id: call.id,
                name: call.function.name,
                input: crate::providers::arguments_object(&call.function.arguments)
                    .unwrap_or_else(|_| json!({})),
            });
        }
    }
    let usage = r.usage.unwrap_or_default();
    MessagesResponse {
        id: anthropic_id(&r.id),
        kind: "message".into(),
        role: wire::Role::Assistant,
        model: r.model,
        content,
        stop_reason: Some(stop_reason(finish.as_deref())),
        stop_sequence: None,
        usage: anthropic_usage(&usage),
    }
}

/// Anthropic's usage from canonical usage: its `input_tokens` are the uncached ones, with cache
/// reads and writes reported beside them when the answer said how many there were.
fn anthropic_usage(u: &Usage) -> wire::Usage {
    let details = u.prompt_tokens_details.as_ref();
    let read = details.and_then(|d| d.cached_tokens);
    let write = details.and_then(|d| d.cache_write_tokens);
    wire::Usage {
        input_tokens: u
            .prompt_tokens
            .saturating_sub(read.unwrap_or(0))
            .saturating_sub(write.unwrap_or(0)),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: write,
        cache_read_input_tokens: read,
    }
}

fn anthropic_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

/// The block currently open in an Anthropic stream being encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text(u32),
    Tool { block: u32, ordinal: u32 },
}

/// Turns canonical chunks into Anthropic stream events.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    started: bool,
    open: Option<Open>,
    next_block: u32,
    /// Tool call ordinal -> Anthropic block index.
    tools: Vec<(u32, u32)>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(StreamEvent::MessageStart {
            message: MessagesResponse {
                id: anthropic_id(id),
                kind: "message".into(),
                role: wire::Role::Assistant,
                model: model.to_owned(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: wire::Usage::default(),
            },
        });
    }

    fn close(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(open) = self.open.take() {
            let index = match open {
                Open::Text(i) => i,
                Open::Tool { block, .. } => block,
            };
            out.push(StreamEvent::ContentBlockStop { index });
        }
    }

    fn open_block(&mut self, block: Block, out: &mut Vec<StreamEvent>) -> u32 {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(StreamEvent::ContentBlockStart {
            index,
            content_block: block,
        });
        index
    }

    /// Feeds one canonical chunk; returns the events it produces.
    pub fn push(&mut self, chunk: ChatChunk) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        self.start(&chunk.id, &chunk.model, &mut out);
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return out;
        };
        if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some(Open::Text(i)) => i,
                _ => {
                    let i = self.open_block(text_block(String::new()), &mut out);
                    self.open = Some(Open::Text(i));
                    i
                }
            };
            out.push(StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::TextDelta { text },
            });
        }
        for d in choice.delta.tool_calls.unwrap_or_default() {
            let known = self
                .tools
                .iter()
                .find(|(o, _)| *o == d.index)
                .map(|(_, b)| *b);
            let f = d.function.unwrap_or_default();
            let block = match known {
                Some(b) => b,
                None => {
                    let start = Block::ToolUse {
                        id: d.id.unwrap_or_else(|| format!("toolu_{}", d.index)),
                        name: f.name.clone().unwrap_or_default(),
                        input: json!({}),
                    };
                    let b = self.open_block(start, &mut out);
                    self.open = Some(Open::Tool {
                        block: b,
                        ordinal: d.index,
                    });
                    self.tools.push((d.index, b));
                    b
                }
            };
            if let Some(args) = f.arguments.filter(|a| !a.is_empty()) {
                out.push(StreamEvent::ContentBlockDelta {
                    index: block,
                    delta: BlockDelta::InputJsonDelta { partial_json: args },
                });
            }
        }
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
        out
    }

    /// Closes the message: the last block, `message_delta` with stop reason and usage, `message_stop`.
    pub fn finish(&mut self, id: &str, model: &str) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        self.start(id, model, &mut out);
        self.close(&mut out);
        let usage = self.usage.take().unwrap_or_default();
        out.push(StreamEvent::MessageDelta {
            delta: wire::MessageDeltaBody {
                stop_reason: Some(stop_reason(self.finish.as_deref())),
                stop_sequence: None,
            },
            usage: {
                let u = anthropic_usage(&usage);
                wire::DeltaUsage {
                    output_tokens: u.output_tokens,
                    input_tokens: Some(u.input_tokens),
                    // As the newer API versions send them, when there were any.
                    cache_creation_input_tokens: u.cache_creation_input_tokens.filter(|n| *n > 0),
                    cache_read_input_tokens: u.cache_read_input_tokens.filter(|n| *n > 0),
                }
            },
        });
        out.push(StreamEvent::MessageStop);
        out
    }
}
