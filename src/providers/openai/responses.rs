//! The OpenAI Responses API wire format (`POST /v1/responses`), translated to and from the
//! canonical chat types at the edge: a request becomes a chat request (instructions as the system
//! message, input items as messages, function tools, `text.format` as `response_format`), and a
//! chat answer becomes a `response` object with `message` and `function_call` output items.
//! `responses_stream.rs` does the same for streams.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::chat::{
    ChatRequest, ChatResponse, Content, ContentPart, Extra, FunctionCall, FunctionDef, Message,
    Role, Schema, StreamOptions, Tool, ToolCall, Usage, new_id,
};

pub use crate::providers::TranslateError;

use crate::providers::untranslatable as bad;

/// `POST /v1/responses` request body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResponsesRequest {
    /// Model or route name.
    pub model: String,
    /// A string (one user message) or a list of input items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// System instructions for this turn (not carried over by `previous_response_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Tools the model may call (only `function` tools translate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// `auto | none | required | {"type":"function","name":..}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ..}, "verbosity": ..}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Value>,
    /// Output bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// `{"effort": .., "summary": ..}`; the effort is passed as `reasoning_effort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Value>,
    /// Stream the answer as Responses events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Keep the response for `GET` and `previous_response_id` (default true, as OpenAI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// Continue the conversation of a stored response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Whether the model may call several tools at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Up to 16 string pairs, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// End-user id, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Everything else (`background`, `include`, `truncation`, `service_tier`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `input`: a string or items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// One user message.
    Text(String),
    /// Messages, function calls and their outputs, in order.
    Items(Vec<Value>),
}

/// Request fields passed to chat completions under the same name.
const PASSED: &[&str] = &[
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "seed",
];

/// Request fields the gateway cannot honour: refused rather than silently ignored.
const REFUSED: &[(&str, &str)] = &[
    (
        "background",
        "background responses are not supported by this gateway; send the request without `background` (stream it for long answers)",
    ),
    (
        "conversation",
        "the Conversations API is not supported by this gateway; continue with `previous_response_id`",
    ),
    (
        "prompt",
        "stored prompt templates are not supported by this gateway; send `instructions` and `input`",
    ),
];

impl ResponsesRequest {
    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the response is to be kept (default true).
    pub fn wants_store(&self) -> bool {
        self.store.unwrap_or(true)
    }
}

/// The canonical request for a Responses request that continues `history` (the stored
/// conversation of `previous_response_id`, without its instructions), and this turn's input as
/// messages (what is stored with the answer; instructions are not).
pub fn to_chat(
    req: &ResponsesRequest,
    history: Vec<Message>,
) -> Result<(ChatRequest, Vec<Message>), TranslateError> {
    for (field, why) in REFUSED {
        if req
            .extra
            .get(*field)
            .is_some_and(|v| !v.is_null() && *v != Value::Bool(false))
        {
            return Err(bad(format!("`{field}`: {why}")));
        }
    }
    if req.model.trim().is_empty() {
        return Err(bad("`model` must not be empty"));
    }
    let mut turn = Vec::new();
    match &req.input {
        None => {}
        Some(Input::Text(t)) => turn.push(Message::text(Role::User, t.clone())),
        Some(Input::Items(items)) => {
            for (i, item) in items.iter().enumerate() {
                push_item(&mut turn, item, i)?;
            }
        }
    }
    if turn.is_empty() && history.is_empty() {
        return Err(bad(
            "`input` must hold at least one message (or continue one with `previous_response_id`)",
        ));
    }
    let mut messages = Vec::with_capacity(history.len() + turn.len() + 1);
    if let Some(i) = req.instructions.as_ref().filter(|i| !i.is_empty()) {
        messages.push(Message::text(Role::System, i.clone()));
    }
    messages.extend(history);
    messages.extend(turn.iter().cloned());
    let tools = match &req.tools {
        None => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, t)| function_tool(t, i))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    }
    .filter(|t: &Vec<Tool>| !t.is_empty());
    let mut extra = Extra::new();
    if let Some(format) = req.text.as_ref().and_then(|t| t.get("format"))
        && let Some(rf) = response_format(format)?
    {
        extra.insert("response_format".into(), rf);
    }
    if let Some(v) = req
        .text
        .as_ref()
        .and_then(|t| t.get("verbosity"))
        .filter(|v| !v.is_null())
    {
        extra.insert("verbosity".into(), v.clone());
    }
    if let Some(effort) = req
        .reasoning
        .as_ref()
        .and_then(|r| r.get("effort"))
        .filter(|e| !e.is_null())
    {
        extra.insert("reasoning_effort".into(), effort.clone());
    }
    if tools.is_some()
        && let Some(p) = req.parallel_tool_calls
    {
        extra.insert("parallel_tool_calls".into(), Value::Bool(p));
    }
    if let Some(u) = &req.user {
        extra.insert("user".into(), Value::String(u.clone()));
    }
    for name in PASSED {
        if let Some(v) = req.extra.get(*name).filter(|v| !v.is_null()) {
            extra.insert((*name).into(), v.clone());
        }
    }
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(tc) if tools.is_none() && tc.as_str() != Some("none") && !tc.is_null() => {
            return Err(bad(
                "`tool_choice` needs `tools` with at least one function tool",
            ));
        }
        Some(tc) => tool_choice(tc)?,
    };
    let stream = req.is_stream();
    let chat = ChatRequest {
        model: req.model.clone(),
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            ..StreamOptions::default()
        }),
        tools,
        tool_choice,
        max_tokens: None,
        max_completion_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: None,
        n: None,
        extra,
    };
    Ok((chat, turn))
}

/// Adds one input item to the conversation.
fn push_item(out: &mut Vec<Message>, item: &Value, i: usize) -> Result<(), TranslateError> {
    let at = format!("input[{i}]");
    let Some(obj) = item.as_object() else {
        return Err(bad(format!("{at}: an input item must be an object")));
    };
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(if obj.contains_key("role") {
            "message"
        } else {
            ""
        });
    match kind {
        "message" => out.push(message_item(obj, &at)?),
        "function_call" => {
            let call = ToolCall {
                id: str_field(obj, "call_id", &at)?.to_owned(),
                kind: "function".into(),
                function: FunctionCall {
                    name: str_field(obj, "name", &at)?.to_owned(),
                    arguments: obj
                        .get("arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}")
                        .to_owned(),
                },
            };
            // Calls following an assistant message (or each other) belong to that message.
            match out.last_mut() {
                Some(m) if m.role == Role::Assistant => {
                    m.tool_calls.get_or_insert_with(Vec::new).push(call)
                }
                _ => out.push(Message {
                    role: Role::Assistant,
                    content: None,
                    name: None,
                    tool_calls: Some(vec![call]),
                    tool_call_id: None,
                    extra: Extra::new(),
                }),
            }
        }
        "function_call_output" => {
            let call_id = str_field(obj, "call_id", &at)?.to_owned();
            let output = match obj.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                _ => {
                    return Err(bad(format!(
                        "{at}.output: must be a string or a list of parts"
                    )));
                }
            };
            let mut m = Message::text(Role::Tool, output);
            m.tool_call_id = Some(call_id);
            out.push(m);
        }
        // Reasoning items carry provider-encrypted state no other provider can read: skipped.
        "reasoning" => {}
        "" => {
            return Err(bad(format!(
                "{at}: an input item needs a `type` (message, function_call, function_call_output) or a `role`"
            )));
        }
        other => {
            return Err(bad(format!(
                "{at}: input item type `{other}` is not supported by this gateway (supported: message, function_call, function_call_output, reasoning)"
            )));
        }
    }
    Ok(())
}

fn str_field<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<&'a str, TranslateError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}.{name}: a string is required")))
}

/// A `message` input item (a user, system, developer or earlier assistant turn).
fn message_item(obj: &Map<String, Value>, at: &str) -> Result<Message, TranslateError> {
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("system") | Some("developer") => Role::System,
        Some(other) => {
            return Err(bad(format!(
                "{at}.role: `{other}` is not a message role (user, assistant, system, developer)"
            )));
        }
        None => return Err(bad(format!("{at}.role: a string is required"))),
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) => Content::Text(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                out.push(content_part(p, &format!("{at}.content[{j}]"))?);
            }
            // A text-only message stays a string: every upstream takes that.
            if out.iter().all(|p| p.kind == "text") {
                Content::Text(out.iter().filter_map(|p| p.text.as_deref()).collect())
            } else {
                Content::Parts(out)
            }
        }
        _ => {
            return Err(bad(format!(
                "{at}.content: must be a string or a list of parts"
            )));
        }
    };
    Ok(Message {
        role,
        content: Some(content),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Extra::new(),
    })
}

/// One content part: text of any direction, images, files.
fn content_part(p: &Value, at: &str) -> Result<ContentPart, TranslateError> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or_default();
    let text_part = |text: &str| ContentPart {
        kind: "text".into(),
        text: Some(text.to_owned()),
        image_url: None,
        extra: Extra::new(),
    };
    match kind {
        "input_text" | "output_text" | "text" => {
            let t = p
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{at}.text: a string is required")))?;
            Ok(text_part(t))
        }
        "refusal" => Ok(text_part(
            p.get("refusal").and_then(Value::as_str).unwrap_or_default(),
        )),
        "input_image" => {
            let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                return Err(bad(format!(
                    "{at}: an input_image needs `image_url` (a URL or a data: URL); uploaded `file_id`s are not supported by this gateway"
                )));
            };
            let mut image = json!({"url": url});
            if let Some(d) = p.get("detail").filter(|d| !d.is_null()) {
                image["detail"] = d.clone();
            }
            Ok(ContentPart {
                kind: "image_url".into(),
                text: None,
                image_url: Some(image),
                extra: Extra::new(),
            })
        }
        "input_file" => {
            let mut file = Map::new();
            for k in ["file_data", "file_id", "filename"] {
                if let Some(v) = p.get(k).filter(|v| !v.is_null()) {
                    file.insert(k.into(), v.clone());
                }
            }
            if file.is_empty() {
                return Err(bad(format!(
                    "{at}: an input_file needs `file_data` or `file_id`"
                )));
            }
            let mut extra = Extra::new();
            extra.insert("file".into(), Value::Object(file));
            Ok(ContentPart {
                kind: "file".into(),
                text: None,
                image_url: None,
                extra,
            })
        }
        other => Err(bad(format!(
            "{at}: content part type `{other}` is not supported (input_text, input_image, input_file, output_text)"
        ))),
    }
}

/// A Responses function tool (`{type, name, description, parameters, strict}`) as a chat tool.
fn function_tool(t: &Value, i: usize) -> Result<Tool, TranslateError> {
    let at = format!("tools[{i}]");
    let kind = t.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "function" {
        return Err(bad(format!(
            "{at}: tool type `{kind}` is not supported by this gateway (only `function`; tools of MCP servers registered with the gateway are offered to the model without being listed)"
        )));
    }
    let Some(name) = t
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Err(bad(format!("{at}.name: a function tool needs a name")));
    };
    let mut extra = Extra::new();
    if let Some(s) = t.get("strict").filter(|s| !s.is_null()) {
        extra.insert("strict".into(), s.clone());
    }
    Ok(Tool {
        kind: "function".into(),
        function: FunctionDef {
            name: name.to_owned(),
            description: t
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            parameters: t
                .get("parameters")
                .filter(|p| !p.is_null())
                .cloned()
                .map(Schema::new),
            extra,
        },
    })
}

/// `tool_choice` in the chat shape.
fn tool_choice(tc: &Value) -> Result<Option<Value>, TranslateError> {
    match tc {
        Value::Null => Ok(None),
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(Some(tc.clone()))
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.name: a string is required"))?;
            Ok(Some(
                json!({"type": "function", "function": {"name": name}}),
            ))
        }
        _ => Err(bad(
            "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}",
        )),
    }
}

/// `text.format` as a chat `response_format` (`None` for plain text).
fn response_format(format: &Value) -> Result<Option<Value>, TranslateError> {
    match format.get("type").and_then(Value::as_str) {
        None if format.is_null() => Ok(None),
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let name = format
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("text.format.name: a json_schema format needs a name"))?;
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    bad("text.format.schema: a json_schema format needs a schema object")
                })?;
            let mut js = json!({"name": name, "schema": schema});
            for k in ["strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    js[k] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": js})))
        }
        _ => Err(bad(
            "text.format.type: must be \"text\", \"json_object\" or \"json_schema\"",
        )),
    }
}

// === The response object ===

/// What a response object repeats of its request.
#[derive(Debug, Clone)]
pub struct Echo {
    id: String,
    created_at: u64,
    instructions: Value,
    max_output_tokens: Value,
    previous_response_id: Value,
    reasoning: Value,
    store: bool,
    temperature: Value,
    top_p: Value,
    text: Value,
    tool_choice: Value,
    tools: Value,
    parallel_tool_calls: bool,
    metadata: Value,
    user: Value,
}

impl Echo {
    /// The echo of `req`, for a response with a new id.
    pub fn new(req: &ResponsesRequest) -> Self {
        let format = req
            .text
            .as_ref()
            .and_then(|t| t.get("format"))
            .filter(|f| !f.is_null())
            .cloned()
            .unwrap_or_else(|| json!({"type": "text"}));
        Self {
            id: new_id("resp"),
            created_at: crate::chat::unix_now(),
            instructions: req.instructions.clone().map_or(Value::Null, Value::String),
            max_output_tokens: req.max_output_tokens.map_or(Value::Null, Value::from),
            previous_response_id: req
                .previous_response_id
                .clone()
                .map_or(Value::Null, Value::String),
            reasoning: json!({
                "effort": req.reasoning.as_ref().and_then(|r| r.get("effort")).cloned().unwrap_or(Value::Null),
                "summary": req.reasoning.as_ref().and_then(|r| r.get("summary")).cloned().unwrap_or(Value::Null),
            }),
            store: req.wants_store(),
            temperature: req.temperature.map_or(Value::Null, Value::from),
            top_p: req.top_p.map_or(Value::Null, Value::from),
            text: json!({"format": format}),
            tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
            tools: req.tools.clone().map_or_else(|| json!([]), Value::from),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            metadata: req.metadata.clone().unwrap_or_else(|| json!({})),
            user: req.user.clone().map_or(Value::Null, Value::String),
        }
    }

    /// The response id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The response object: `status` is `in_progress`, `completed`, `incomplete` or `failed`.
    pub fn response(&self, model: &str, out: &Outcome) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": out.status,
            "error": out.error.clone().unwrap_or(Value::Null),
            "incomplete_details": out.incomplete.map_or(Value::Null, |r| json!({"reason": r})),
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": model,
            "output": out.output,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": self.reasoning,
            "store": self.store,
            "temperature": self.temperature,
            "text": self.text,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_p": self.top_p,
            "truncation": "disabled",
            "usage": out.usage.as_ref().map_or(Value::Null, usage),
            "user": self.user,
            "metadata": self.metadata,
        })
    }
}

/// How a response ended, its output items and usage.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// `in_progress`, `completed`, `incomplete`, `failed`.
    pub status: &'static str,
    /// `max_output_tokens` or `content_filter` when incomplete.
    pub incomplete: Option<&'static str>,
    /// `{"code", "message"}` when failed.
    pub error: Option<Value>,
    /// Output items.
    pub output: Vec<Value>,
    /// Token counts.
    pub usage: Option<Usage>,
}

impl Outcome {
    /// A response still being produced.
    pub fn in_progress() -> Self {
        Self {
            status: "in_progress",
            ..Self::default()
        }
    }

    /// The outcome of a finished answer with this finish reason.
    pub fn finished(finish: Option<&str>, output: Vec<Value>, usage: Option<Usage>) -> Self {
        let incomplete = match finish {
            Some("length") => Some("max_output_tokens"),
            Some("content_filter") => Some("content_filter"),
            _ => None,
        };
        Self {
            status: if incomplete.is_some() {
                "incomplete"
            } else {
                "completed"
            },
            incomplete,
            error: None,
            output,
            usage,
        }
    }
}

/// A completed `message` output item holding `text`.
pub fn message_item_out(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [text_part_out(text)],
    })
}

/// An `output_text` content part.
pub fn text_part_out(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `function_call` output item.
pub fn call_item_out(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call.id,
        "name": call.function.name,
        "arguments": call.function.arguments,
        "status": status,
    })
}

/// The output items of a chat answer (its first choice) and how it ended.
pub fn outcome(resp: &ChatResponse) -> Outcome {
    let Some(choice) = resp.choices.first() else {
        return Outcome::finished(Some("stop"), Vec::new(), resp.usage.clone());
    };
    let m = &choice.message;
    let mut output = Vec::new();
    let text = m.text_content();
    let calls = m.tool_calls.as_deref().unwrap_or_default();
    if let Some(refusal) = m.extra.get("refusal").and_then(Value::as_str) {
        output.push(json!({
            "type": "message", "id": new_id("msg"), "status": "completed", "role": "assistant",
            "content": [{"type": "refusal", "refusal": refusal}],
        }));
    } else if !text.is_empty() || calls.is_empty() {
        output.push(message_item_out(&new_id("msg"), &text, "completed"));
    }
    for c in calls {
        output.push(call_item_out(&new_id("fc"), c, "completed"));
    }
    Outcome::finished(choice.finish_reason.as_deref(), output, resp.usage.clone())
}

/// The assistant's turn of a chat answer, as kept in a stored conversation.
pub fn assistant_turn(resp: &ChatResponse) -> Option<Message> {
    let m = &resp.choices.first()?.message;
    let text = m.text_content();
    Some(Message {
        role: Role::Assistant,
        content: (!text.is_empty()).then(|| Content::Text(text)),
        name: None,
        tool_calls: m.tool_calls.clone().filter(|c| !c.is_empty()),
        tool_call_id: None,
        extra: Extra::new(),
    })
}

/// A stored turn's input as Responses input items (ids derived from the response's id, stable).
pub fn input_items(response_id: &str, input: &[Message]) -> Vec<Value> {
    let tail = response_id.split_once('_').map_or(response_id, |(_, t)| t);
    let mut out = Vec::new();
    for (i, m) in input.iter().enumerate() {
        let id = |kind: &str, j: usize| format!("{kind}_{tail}_{i}_{j}");
        match m.role {
            Role::Tool => out.push(json!({
                "type": "function_call_output",
                "id": id("fco", 0),
                "call_id": m.tool_call_id,
                "output": m.text_content(),
                "status": "completed",
            })),
            role => {
                let text = m.text_content();
                let (name, part) = match role {
                    Role::Assistant => ("assistant", "output_text"),
                    Role::System => ("system", "input_text"),
                    _ => ("user", "input_text"),
                };
                let mut content: Vec<Value> = Vec::new();
                if let Some(Content::Parts(parts)) = &m.content {
                    for p in parts {
                        match (p.kind.as_str(), &p.text, &p.image_url) {
                            ("text", Some(t), _) => content.push(json!({"type": part, "text": t})),
                            ("image_url", _, Some(img)) => content.push(json!({
                                "type": "input_image",
                                "image_url": img.get("url").cloned().unwrap_or(Value::Null),
                                "detail": img.get("detail").cloned().unwrap_or_else(|| json!("auto")),
                            })),
                            _ => {}
                        }
                    }
                } else if !text.is_empty() {
                    content.push(json!({"type": part, "text": text}));
                }
                if !content.is_empty() {
                    out.push(json!({"type": "message", "id": id("msg", 0), "role": name, "content": content, "status": "completed"}));
                }
                for (j, c) in m.tool_calls.iter().flatten().enumerate() {
                    out.push(json!({
                        "type": "function_call",
                        "id": id("fc", j),
                        "call_id": c.id,
                        "name": c.function.name,
                        "arguments": c.function.arguments,
                        "status": "completed",
                    }));
                }
            }
        }
    }
    out
}

/// Responses `usage` from chat usage (cached and reasoning tokens from the details).
pub fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens(),
            "cache_write_tokens": u.cache_write_tokens(),
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens()},
        "total_tokens": u.total_tokens,
    })
}

#[cfg(test)]
#[path = "responses_tests.rs"]
mod tests;
