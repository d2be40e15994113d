//! Gemini `generateContent` -> canonical and back, for the `/genai` ingress (the Google GenAI SDK
//! pointed at the gateway): requests, answers, and the answer stream as Gemini SSE events.

use serde_json::{Value, json};

use super::translate::{TranslateError, id_with_signature, signature_of};
use super::wire::{
    Candidate, Content as GContent, GenerateRequest, GenerateResponse, Part, UsageMetadata,
};
use crate::chat::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Extra, FunctionCall, FunctionDef,
    Message, Role, Schema, StreamOptions, Tool, ToolCall, Usage, merge_call_delta,
};

use crate::providers::untranslatable as bad;

/// Gemini's OpenAPI-subset schema as JSON Schema: its upper-case type names in lower case.
pub fn json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("type", Value::String(t)) => Value::String(t.to_ascii_lowercase()),
                        _ => json_schema(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(json_schema).collect()),
        other => other.clone(),
    }
}

/// The canonical request for a Gemini one addressed to `model`.
pub fn from_generate_request(
    req: GenerateRequest,
    model: &str,
    stream: bool,
) -> Result<ChatRequest, TranslateError> {
    let mut messages = Vec::new();
    if let Some(sys) = &req.system_instruction {
        let text: String = sys.parts.iter().filter_map(|p| p.text.as_deref()).collect();
        if !text.is_empty() {
            messages.push(Message::text(Role::System, text));
        }
    }
    // Calls of the latest model turn: (id, name, answered?), to give results their call ids.
    let mut open_calls: Vec<(String, String, bool)> = Vec::new();
    for (i, c) in req.contents.iter().enumerate() {
        let at = format!("contents[{i}]");
        match c.role.as_deref().unwrap_or("user") {
            "model" => {
                let m = model_turn(c, i)?;
                open_calls = m
                    .tool_calls
                    .iter()
                    .flatten()
                    .map(|t| (t.id.clone(), t.function.name.clone(), false))
                    .collect();
                messages.push(m);
            }
            "user" | "function" => user_turn(c, &at, &mut open_calls, &mut messages)?,
            other => {
                return Err(bad(format!(
                    "{at}.role: `{other}` is not `user` or `model`"
                )));
            }
        }
    }
    if messages.iter().all(|m| m.role == Role::System) {
        return Err(bad("`contents` must hold at least one turn"));
    }
    let tools = match &req.tools {
        None => None,
        Some(tools) => {
            let mut out = Vec::new();
            for (i, t) in tools.iter().enumerate() {
                if let Some(k) = t.extra.keys().next() {
                    return Err(bad(format!(
                        "tools[{i}]: the Gemini tool `{k}` is not supported by this gateway (only functionDeclarations)"
                    )));
                }
                for f in t.function_declarations.iter().flatten() {
                    let parameters = f
                        .parameters_json_schema
                        .clone()
                        .or_else(|| f.parameters.as_ref().map(|p| Schema::new(json_schema(p))));
                    out.push(Tool {
                        kind: "function".into(),
                        function: FunctionDef {
                            name: f.name.clone(),
                            description: f.description.clone(),
                            parameters,
                            extra: Extra::new(),
                        },
                    });
                }
            }
            (!out.is_empty()).then_some(out)
        }
    };
    let tool_choice = req
        .tool_config
        .as_ref()
        .and_then(|c| c.get("functionCallingConfig"))
        .and_then(|f| {
            let names = f.get("allowedFunctionNames").and_then(Value::as_array);
            match f.get("mode").and_then(Value::as_str)? {
                "NONE" => Some(json!("none")),
                "ANY" => match names.map(Vec::as_slice) {
                    Some([one]) => Some(json!({"type": "function", "function": {"name": one}})),
                    _ => Some(json!("required")),
                },
                "AUTO" | "VALIDATED" => Some(json!("auto")),
                _ => None,
            }
        });
    let g = req.generation_config.unwrap_or_default();
    let mut extra = Extra::new();
    let schema = g
        .response_json_schema
        .clone()
        .or_else(|| g.response_schema.as_ref().map(json_schema));
    match (g.response_mime_type.as_deref(), schema) {
        (_, Some(schema)) => {
            extra.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
            );
        }
        (Some("application/json"), None) => {
            extra.insert("response_format".into(), json!({"type": "json_object"}));
        }
        _ => {}
    }
    if let Some(s) = g.seed {
        extra.insert("seed".into(), json!(s));
    }
    if let Some(p) = g.presence_penalty {
        extra.insert("presence_penalty".into(), json!(p));
    }
    if let Some(p) = g.frequency_penalty {
        extra.insert("frequency_penalty".into(), json!(p));
    }
    if let Some(budget) = g
        .thinking_config
        .as_ref()
        .and_then(|t| t.get("thinkingBudget"))
        .and_then(Value::as_i64)
        .filter(|b| *b > 0)
    {
        let effort = if budget <= 1024 {
            "low"
        } else if budget <= 8192 {
            "medium"
        } else {
            "high"
        };
        extra.insert("reasoning_effort".into(), json!(effort));
    }
    Ok(ChatRequest {
        model: model.to_owned(),
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            ..StreamOptions::default()
        }),
        tools,
        tool_choice,
        max_tokens: None,
        max_completion_tokens: g.max_output_tokens,
        temperature: g.temperature,
        top_p: g.top_p,
        stop: g.stop_sequences.map(|s| json!(s)),
        n: g.candidate_count.filter(|n| *n > 1),
        extra,
    })
}

/// A model turn: its text and its function calls (ids carry their thought signatures).
fn model_turn(c: &GContent, i: usize) -> Result<Message, TranslateError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, p) in c.parts.iter().enumerate() {
        if let Some(f) = &p.function_call {
            let id =
                f.id.clone()
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{i}_{j}"));
            // An id this gateway gave already carries the signature.
            let id = if signature_of(&id).is_some() {
                id
            } else {
                id_with_signature(&id, p.thought_signature.as_deref())
            };
            calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name: f.name.clone(),
                    arguments: if f.args.is_null() {
                        "{}".into()
                    } else {
                        f.args.to_string()
                    },
                },
            });
        } else if let Some(t) = &p.text
            && p.thought != Some(true)
        {
            text.push_str(t);
        }
    }
    Ok(Message {
        role: Role::Assistant,
        content: (!text.is_empty() || calls.is_empty()).then(|| Content::Text(text)),
        name: None,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
        extra: Extra::new(),
    })
}

/// A user turn: function responses become tool messages (answering the open calls by id, else by
/// name in order), the rest one user message.
fn user_turn(
    c: &GContent,
    at: &str,
    open_calls: &mut [(String, String, bool)],
    out: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    for (j, p) in c.parts.iter().enumerate() {
        let pat = format!("{at}.parts[{j}]");
        if let Some(r) = &p.function_response {
            let by_id = r.id.as_deref().and_then(|rid| {
                let signed = format!("{rid}__sig__");
                open_calls
                    .iter()
                    .position(|(id, _, done)| !*done && (id == rid || id.starts_with(&signed)))
            });
            let pos = by_id.or_else(|| {
                open_calls
                    .iter()
                    .position(|(_, name, done)| !*done && *name == r.name)
            });
            let Some(slot) = pos.and_then(|p| open_calls.get_mut(p)) else {
                return Err(bad(format!(
                    "{pat}.functionResponse: `{}` answers no call of the model turn before it",
                    r.name
                )));
            };
            slot.2 = true;
            let text = match &r.response {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            let mut m = Message::text(Role::Tool, text);
            m.tool_call_id = Some(slot.0.clone());
            out.push(m);
        } else if let Some(t) = &p.text {
            parts.push(ContentPart {
                kind: "text".into(),
                text: Some(t.clone()),
                image_url: None,
                extra: Extra::new(),
            });
        } else if let Some(b) = &p.inline_data {
            parts.push(media(
                &b.mime_type,
                &format!("data:{};base64,{}", b.mime_type, b.data),
                Some(&b.data),
            ));
        } else if let Some(f) = &p.file_data {
            let mime = f.mime_type.as_deref().unwrap_or("image/jpeg");
            if !mime.starts_with("image/") {
                return Err(bad(format!(
                    "{pat}.fileData: only images can be passed by URI through this gateway (send other files as inlineData)"
                )));
            }
            parts.push(media(mime, &f.file_uri, None));
        } else if !p.extra.is_empty() || p.function_call.is_some() {
            return Err(bad(format!(
                "{pat}: this part is not supported in a user turn (text, inlineData, fileData, functionResponse)"
            )));
        }
    }
    if parts.is_empty() {
        return Ok(());
    }
    let content = if parts.iter().all(|p| p.kind == "text") {
        Content::Text(parts.iter().filter_map(|p| p.text.as_deref()).collect())
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

/// An image, audio or file part from a MIME type and a URL (`data:` or remote).
fn media(mime: &str, url: &str, base64: Option<&str>) -> ContentPart {
    let mut extra = Extra::new();
    let (kind, image_url) = if mime.starts_with("image/") {
        ("image_url", Some(json!({"url": url})))
    } else if let (Some(data), Some(format)) = (base64, mime.strip_prefix("audio/")) {
        extra.insert(
            "input_audio".into(),
            json!({"data": data, "format": format}),
        );
        ("input_audio", None)
    } else {
        extra.insert("file".into(), json!({"file_data": url}));
        ("file", None)
    };
    ContentPart {
        kind: kind.into(),
        text: None,
        image_url,
        extra,
    }
}

// === canonical -> Gemini answer ===

/// Gemini's finish reason for OpenAI's.
pub fn gemini_finish(finish: Option<&str>) -> Option<String> {
    finish.map(|f| {
        match f {
            "length" => "MAX_TOKENS",
            "content_filter" => "SAFETY",
            _ => "STOP",
        }
        .to_owned()
    })
}

/// Gemini usage from canonical usage (reasoning tokens reported as thoughts).
pub fn usage_metadata(u: &Usage) -> UsageMetadata {
    let thoughts = Some(u.reasoning_tokens()).filter(|t| *t > 0);
    UsageMetadata {
        prompt_token_count: u.prompt_tokens,
        candidates_token_count: u.completion_tokens.saturating_sub(thoughts.unwrap_or(0)),
        total_token_count: u.total_tokens,
        cached_content_token_count: Some(u.cached_tokens()).filter(|c| *c > 0),
        thoughts_token_count: thoughts,
    }
}

fn call_part(c: &ToolCall) -> Part {
    let args = serde_json::from_str::<Value>(&c.function.arguments).unwrap_or_else(|_| json!({}));
    Part {
        function_call: Some(super::wire::FunctionCall {
            id: Some(c.id.clone()),
            name: c.function.name.clone(),
            args,
        }),
        thought_signature: signature_of(&c.id),
        ..Part::default()
    }
}

/// The Gemini answer for a canonical one.
pub fn to_generate_response(r: ChatResponse) -> GenerateResponse {
    let candidates = r
        .choices
        .iter()
        .map(|c| {
            let mut parts = Vec::new();
            if let Some(t) = c
                .message
                .extra
                .get("reasoning_content")
                .and_then(Value::as_str)
            {
                parts.push(Part {
                    text: Some(t.to_owned()),
                    thought: Some(true),
                    ..Part::default()
                });
            }
            let text = c.message.text_content();
            if !text.is_empty() {
                parts.push(Part {
                    text: Some(text),
                    ..Part::default()
                });
            }
            parts.extend(c.message.tool_calls.iter().flatten().map(call_part));
            Candidate {
                content: Some(GContent {
                    role: Some("model".into()),
                    parts,
                }),
                finish_reason: gemini_finish(c.finish_reason.as_deref()),
                finish_message: c
                    .message
                    .extra
                    .get("refusal")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                index: Some(c.index),
                safety_ratings: None,
            }
        })
        .collect();
    GenerateResponse {
        candidates,
        prompt_feedback: None,
        usage_metadata: r.usage.as_ref().map(usage_metadata),
        model_version: Some(r.model),
        response_id: Some(r.id),
    }
}

/// Canonical chunks -> Gemini stream events: text as it comes; function calls whole (as Gemini
/// sends them) with the finish reason and usage in the last event.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    model: String,
    id: String,
    calls: Vec<ToolCall>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    fn event(
        &self,
        parts: Vec<Part>,
        finish: Option<String>,
        usage: Option<&Usage>,
    ) -> GenerateResponse {
        GenerateResponse {
            candidates: vec![Candidate {
                content: Some(GContent {
                    role: Some("model".into()),
                    parts,
                }),
                finish_reason: finish,
                finish_message: None,
                index: Some(0),
                safety_ratings: None,
            }],
            prompt_feedback: None,
            usage_metadata: usage.map(usage_metadata),
            model_version: Some(self.model.clone()),
            response_id: Some(self.id.clone()),
        }
    }

    /// Feeds one chunk; returns the events to send now.
    pub fn push(&mut self, chunk: ChatChunk) -> Vec<GenerateResponse> {
        if self.model.is_empty() {
            self.model.clone_from(&chunk.model);
            self.id.clone_from(&chunk.id);
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return Vec::new();
        };
        let mut parts = Vec::new();
        if let Some(t) = choice
            .delta
            .extra
            .get("reasoning_content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            parts.push(Part {
                text: Some(t.to_owned()),
                thought: Some(true),
                ..Part::default()
            });
        }
        if let Some(t) = choice.delta.content.filter(|t| !t.is_empty()) {
            parts.push(Part {
                text: Some(t),
                ..Part::default()
            });
        }
        for d in choice.delta.tool_calls.iter().flatten() {
            merge_call_delta(&mut self.calls, d);
        }
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
        if parts.is_empty() {
            return Vec::new();
        }
        vec![self.event(parts, None, None)]
    }

    /// The last event: the function calls, the finish reason and usage.
    pub fn finish(&mut self) -> GenerateResponse {
        let parts = self.calls.iter().map(call_part).collect();
        let finish = gemini_finish(Some(self.finish.as_deref().unwrap_or("stop")));
        self.event(parts, finish, self.usage.as_ref())
    }
}
