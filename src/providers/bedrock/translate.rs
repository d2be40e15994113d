//! Canonical (OpenAI-shaped) <-> Bedrock Converse, for the provider: requests, answers, and the
//! decoded ConverseStream events.
//!
//! Bedrock's rules are applied here: roles alternate and start with the user, text blocks are
//! never empty, tool results sit in user turns, and a conversation holding tool calls always
//! declares a tool config. Prompt-cache markers survive: a content part (or message) carrying
//! `cache_control` is followed by a `cachePoint` block, in system prompts too.

use serde_json::{Map, Value, json};

use crate::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, Delta, Extra, FunctionCall,
    FunctionCallDelta, Message, Role, TokenDetails, ToolCall, ToolCallDelta, Usage, unix_now,
};

pub use crate::providers::TranslateError;

use crate::providers::untranslatable as bad;

fn cache_point() -> Value {
    json!({"cachePoint": {"type": "default"}})
}

fn marked(extra: &Extra) -> bool {
    extra.get("cache_control").is_some_and(|c| !c.is_null())
}

/// Builds the Converse request body for a canonical request.
pub fn to_converse_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(bad("`n` > 1 is not supported by Bedrock"));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    let mut used_tools: Vec<String> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, mut blocks) = match m.role {
            Role::System => {
                system.extend(text_blocks(m));
                if marked(&m.extra) {
                    system.push(cache_point());
                }
                continue;
            }
            Role::User => ("user", user_blocks(m, i)?),
            Role::Assistant => ("assistant", assistant_blocks(m, i, &mut used_tools)?),
            Role::Tool => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    bad(format!("messages[{i}]: a tool message needs tool_call_id"))
                })?;
                let text = m.text_content();
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => vec![json!({"json": v})],
                    _ if text.is_empty() => vec![json!({"json": {}})],
                    _ => vec![json!({"text": text})],
                };
                let block = json!({"toolResult": {"toolUseId": id, "content": content}});
                ("user", vec![block])
            }
        };
        if marked(&m.extra) && !blocks.is_empty() {
            blocks.push(cache_point());
        }
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => messages.push((role.to_owned(), blocks)),
        }
    }
    if messages.first().is_some_and(|(r, _)| r == "assistant") {
        return Err(bad(
            "Bedrock needs the conversation to start with a user message",
        ));
    }
    if messages.is_empty() {
        return Err(bad("`messages` must hold at least one user message"));
    }
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect(),
        ),
    );
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(m) = req.output_limit() {
        inference.insert("maxTokens".into(), json!(m));
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    match &req.stop {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            inference.insert("stopSequences".into(), json!([s]));
        }
        Some(v @ Value::Array(_)) => {
            inference.insert("stopSequences".into(), v.clone());
        }
        Some(_) => return Err(bad("stop: must be a string or a list of strings")),
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tc) = tool_config(req, &used_tools)? {
        body.insert("toolConfig".into(), tc);
    }
    Ok(Value::Object(body))
}

fn text_blocks(m: &Message) -> Vec<Value> {
    match &m.content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![json!({"text": t})],
        Some(Content::Parts(parts)) => {
            let mut out = Vec::new();
            for p in parts {
                if let Some(t) = p.text.as_deref().filter(|t| !t.is_empty()) {
                    out.push(json!({"text": t}));
                    if marked(&p.extra) {
                        out.push(cache_point());
                    }
                }
            }
            out
        }
    }
}

/// `image/png` -> `png`, as Bedrock names image formats.
fn image_format(mime: &str) -> Option<&'static str> {
    match mime {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn user_blocks(m: &Message, i: usize) -> Result<Vec<Value>, TranslateError> {
    let Some(Content::Parts(parts)) = &m.content else {
        return Ok(text_blocks(m));
    };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match p.kind.as_str() {
            "text" => match p.text.as_deref().filter(|t| !t.is_empty()) {
                Some(t) => out.push(json!({"text": t})),
                None => continue,
            },
            "image_url" => {
                let url = p
                    .image_url
                    .as_ref()
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let Some((mime, data)) = url
                    .strip_prefix("data:")
                    .and_then(|r| r.split_once(";base64,"))
                else {
                    return Err(bad(format!(
                        "{at}: Bedrock takes images as data: URLs (base64), not links"
                    )));
                };
                let Some(format) = image_format(mime) else {
                    return Err(bad(format!(
                        "{at}: image type `{mime}` is not supported by Bedrock (png, jpeg, gif, webp)"
                    )));
                };
                out.push(json!({"image": {"format": format, "source": {"bytes": data}}}));
            }
            "file" => {
                let file = p.extra.get("file");
                let data = file
                    .and_then(|f| f.get("file_data"))
                    .and_then(Value::as_str)
                    .and_then(|d| d.strip_prefix("data:application/pdf;base64,"));
                let Some(data) = data else {
                    return Err(bad(format!(
                        "{at}.file: Bedrock takes documents as PDF data: URLs (`file_data`)"
                    )));
                };
                let name = file
                    .and_then(|f| f.get("filename"))
                    .and_then(Value::as_str)
                    .map_or("document", |n| n.trim_end_matches(".pdf"));
                // Bedrock allows only letters, digits, spaces, hyphens, parentheses and brackets.
                let name: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || " -()[]".contains(c) {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect();
                out.push(
                    json!({"document": {"format": "pdf", "name": name, "source": {"bytes": data}}}),
                );
            }
            other => {
                return Err(bad(format!(
                    "{at}: content part type `{other}` is not supported for Bedrock (text, image_url, file)"
                )));
            }
        }
        if marked(&p.extra) {
            out.push(cache_point());
        }
    }
    Ok(out)
}

fn assistant_blocks(
    m: &Message,
    i: usize,
    used: &mut Vec<String>,
) -> Result<Vec<Value>, TranslateError> {
    let mut out = text_blocks(m);
    for (j, c) in m.tool_calls.iter().flatten().enumerate() {
        let input = crate::providers::arguments_object(&c.function.arguments).map_err(|e| {
            bad(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: {e}"
            ))
        })?;
        if !used.contains(&c.function.name) {
            used.push(c.function.name.clone());
        }
        out.push(json!({"toolUse": {"toolUseId": c.id, "name": c.function.name, "input": input}}));
    }
    Ok(out)
}

/// `toolConfig`: the declared tools (or, when the conversation holds tool calls but declares
/// none, a minimal spec per called tool, which Bedrock requires) and the choice.
fn tool_config(req: &ChatRequest, used: &[String]) -> Result<Option<Value>, TranslateError> {
    let declared = req.tools.as_deref().unwrap_or_default();
    let choice = req.tool_choice.as_ref();
    let none = choice.and_then(Value::as_str) == Some("none");
    // `none` with no calls in the conversation: offer no tools at all (Bedrock has no `none`).
    let withheld = none && used.is_empty();
    let offer = !declared.is_empty() && !withheld;
    let specs: Vec<Value> = if offer {
        declared
            .iter()
            .map(|t| {
                let mut spec = json!({
                    "name": t.function.name,
                    "inputSchema": {"json": t.function.parameters.as_ref().map_or_else(|| json!({"type": "object"}), |p| p.value().clone())},
                });
                if let Some(d) = t.function.description.as_deref().filter(|d| !d.is_empty()) {
                    spec["description"] = json!(d);
                }
                json!({"toolSpec": spec})
            })
            .collect()
    } else if !used.is_empty() {
        used.iter()
            .map(|n| json!({"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}}))
            .collect()
    } else {
        return Ok(None);
    };
    let mut tc = json!({"tools": specs});
    let pick = match choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" | "none" => None,
            "required" => Some(json!({"any": {}})),
            other => {
                return Err(bad(format!(
                    "tool_choice: `{other}` is not auto, none or required"
                )));
            }
        },
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.function.name: a string is required"))?;
            Some(json!({"tool": {"name": name}}))
        }
    };
    if let Some(p) = pick {
        tc["toolChoice"] = p;
    }
    Ok(Some(tc))
}

// === Bedrock -> canonical ===

/// OpenAI's finish reason for a Bedrock stop reason.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// Canonical usage from Bedrock's (cache reads and writes counted as input, and reported).
pub fn usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (read, write) = (n("cacheReadInputTokens"), n("cacheWriteInputTokens"));
    let mut out = Usage::new(
        n("inputTokens").saturating_add(read).saturating_add(write),
        n("outputTokens"),
    );
    if read > 0 || write > 0 {
        out.prompt_tokens_details = Some(Box::new(TokenDetails::prompt_cache(read, write)));
    }
    out
}

/// Builds the canonical response for a Converse answer.
pub fn from_converse_response(v: &Value, model: &str) -> ChatResponse {
    let blocks = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let (mut text, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    for b in blocks {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(u) = b.get("toolUse") {
            calls.push(ToolCall {
                id: u
                    .get("toolUseId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                kind: "function".into(),
                function: FunctionCall {
                    name: u
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    arguments: u.get("input").map_or_else(|| "{}".into(), Value::to_string),
                },
            });
        } else if let Some(t) = b
            .pointer("/reasoningContent/reasoningText/text")
            .and_then(Value::as_str)
        {
            reasoning.push_str(t);
        }
    }
    let stop = v
        .get("stopReason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let mut extra = Extra::new();
    if !reasoning.is_empty() {
        extra.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if finish_reason(stop) == "content_filter" {
        extra.insert(
            "refusal".into(),
            Value::String(format!("the answer was stopped by Bedrock ({stop})")),
        );
    }
    ChatResponse {
        id: crate::chat::new_id("chatcmpl"),
        object: "chat.completion".into(),
        created: unix_now(),
        model: model.to_owned(),
        choices: vec![Choice {
            index: 0,
            message: Message {
                role: Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then(|| Content::Text(text)),
                name: None,
                tool_calls: (!calls.is_empty()).then_some(calls),
                tool_call_id: None,
                extra,
            },
            finish_reason: Some(finish_reason(stop).to_owned()),
            extra: Extra::new(),
        }],
        usage: v.get("usage").map(usage),
        extra: Extra::new(),
    }
}

/// Turns ConverseStream events (`:event-type` and its JSON payload) into canonical chunks. The
/// stream ends with `metadata`, which carries the usage, after `messageStop`.
#[derive(Debug)]
pub struct StreamDecoder {
    id: String,
    model: String,
    created: u64,
    /// Bedrock content block index -> tool call ordinal.
    tools: Vec<(u64, u32)>,
    next_tool: u32,
}

impl StreamDecoder {
    /// A decoder for an answer of `model`.
    pub fn new(model: &str) -> Self {
        Self {
            id: crate::chat::new_id("chatcmpl"),
            model: model.to_owned(),
            created: unix_now(),
            tools: Vec::new(),
            next_tool: 0,
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<String>) -> ChatChunk {
        ChatChunk::of(&self.id, self.created, &self.model, delta, finish)
    }

    fn tool_delta(ordinal: u32, id: Option<String>, name: Option<String>, args: String) -> Delta {
        Delta {
            tool_calls: Some(vec![ToolCallDelta {
                index: ordinal,
                kind: id.as_ref().map(|_| "function".to_owned()),
                id,
                function: Some(FunctionCallDelta {
                    name,
                    arguments: Some(args),
                }),
            }]),
            ..Delta::default()
        }
    }

    /// Feeds one event; unknown event types are skipped.
    pub fn push(&mut self, event: &str, p: &Value) -> Vec<ChatChunk> {
        let block = p
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match event {
            "messageStart" => vec![self.chunk(
                Delta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    ..Delta::default()
                },
                None,
            )],
            "contentBlockStart" => {
                let Some(u) = p.pointer("/start/toolUse") else {
                    return Vec::new();
                };
                let ordinal = self.next_tool;
                self.next_tool += 1;
                self.tools.push((block, ordinal));
                let id = u
                    .get("toolUseId")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let name = u.get("name").and_then(Value::as_str).map(str::to_owned);
                vec![self.chunk(Self::tool_delta(ordinal, id, name, String::new()), None)]
            }
            "contentBlockDelta" => {
                let Some(d) = p.get("delta") else {
                    return Vec::new();
                };
                if let Some(t) = d.get("text").and_then(Value::as_str) {
                    let delta = Delta {
                        content: Some(t.to_owned()),
                        ..Delta::default()
                    };
                    return vec![self.chunk(delta, None)];
                }
                if let Some(input) = d.pointer("/toolUse/input").and_then(Value::as_str) {
                    let Some(&(_, ordinal)) = self.tools.iter().find(|(b, _)| *b == block) else {
                        return Vec::new();
                    };
                    let delta = Self::tool_delta(ordinal, None, None, input.to_owned());
                    return vec![self.chunk(delta, None)];
                }
                if let Some(t) = d.pointer("/reasoningContent/text").and_then(Value::as_str) {
                    let mut delta = Delta::default();
                    delta
                        .extra
                        .insert("reasoning_content".into(), Value::String(t.to_owned()));
                    return vec![self.chunk(delta, None)];
                }
                Vec::new()
            }
            "messageStop" => {
                let stop = p
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                vec![self.chunk(Delta::default(), Some(finish_reason(stop).to_owned()))]
            }
            "metadata" => {
                let Some(u) = p.get("usage") else {
                    return Vec::new();
                };
                let mut c = self.chunk(Delta::default(), None);
                c.choices.clear();
                c.usage = Some(usage(u));
                vec![c]
            }
            _ => Vec::new(),
        }
    }
}
