//! Canonical (OpenAI-shaped) -> Gemini `generateContent` and back, for the provider: requests,
//! answers and streams. The `/genai` ingress's direction is in `ingress.rs`.
//!
//! Gemini's `thoughtSignature` on a function call must come back with that call on the next turn
//! (Gemini 3 refuses the turn otherwise). Clients echo tool call ids verbatim, so the signature
//! travels inside the canonical call id (`<id>__sig__<signature, base64url>`), through every
//! ingress and client, and is taken out again when the call is sent back to Gemini.

use serde_json::{Value, json};

use super::wire::{
    self, Blob, Content as GContent, FileData, FunctionDeclaration, GenerateRequest,
    GenerateResponse, GenerationConfig, Part, UsageMetadata,
};
use crate::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, Delta, Extra, FunctionCall,
    FunctionCallDelta, Message, Role, TokenDetails, ToolCall, ToolCallDelta, Usage, unix_now,
};

pub use crate::providers::TranslateError;

use crate::providers::untranslatable as bad;

/// Marks where a thought signature starts inside a call id.
const SIG: &str = "__sig__";

/// A call id carrying Gemini's thought signature (base64 made URL-safe, padding dropped), so the
/// id stays within `[A-Za-z0-9_-]`.
pub fn id_with_signature(id: &str, signature: Option<&str>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        None => id.to_owned(),
        Some(s) => {
            let safe: String = s
                .chars()
                .filter(|c| *c != '=')
                .map(|c| match c {
                    '+' => '-',
                    '/' => '_',
                    c => c,
                })
                .collect();
            format!("{id}{SIG}{safe}")
        }
    }
}

/// The signature a call id carries (standard base64, padded), if any.
pub fn signature_of(id: &str) -> Option<String> {
    let (_, safe) = id.split_once(SIG)?;
    let mut s: String = safe
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    Some(s)
}

/// Output tokens Gemini may think with for each `reasoning_effort` (Google's own mapping for its
/// OpenAI-compatible endpoint).
fn thinking_budget(effort: &str) -> Option<i64> {
    match effort {
        "none" => Some(0),
        "minimal" | "low" => Some(1024),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => None,
    }
}

// === canonical -> Gemini ===

/// Builds the Gemini request for a canonical one.
pub fn to_generate_request(req: &ChatRequest) -> Result<GenerateRequest, TranslateError> {
    let mut system: Vec<Part> = Vec::new();
    let mut contents: Vec<GContent> = Vec::new();
    // Call id -> function name, for tool results (Gemini names the function it answers).
    let mut names: Vec<(String, String)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, parts) = match m.role {
            Role::System => {
                system.push(text_part(m.text_content()));
                continue;
            }
            Role::User => ("user", user_parts(m, i)?),
            Role::Assistant => ("model", model_parts(m, i, &mut names)?),
            Role::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    bad(format!("messages[{i}]: a tool message needs tool_call_id"))
                })?;
                let name = names
                    .iter()
                    .find(|(c, _)| c == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| {
                        bad(format!(
                            "messages[{i}]: tool_call_id `{id}` answers no earlier assistant tool call"
                        ))
                    })?;
                let part = Part {
                    function_response: Some(wire::FunctionResponse {
                        id: None,
                        name,
                        response: result_object(&m.text_content()),
                    }),
                    ..Part::default()
                };
                ("user", vec![part])
            }
        };
        if parts.is_empty() {
            continue;
        }
        // Gemini wants turns to alternate; tool results of one round form one user turn.
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(GContent {
                role: Some(role.into()),
                parts,
            }),
        }
    }
    if contents.is_empty() {
        return Err(bad(
            "`messages` must hold at least one user or assistant message",
        ));
    }
    let tools = req.tools.as_ref().filter(|t| !t.is_empty()).map(|tools| {
        vec![wire::Tool {
            function_declarations: Some(
                tools
                    .iter()
                    .map(|t| FunctionDeclaration {
                        name: t.function.name.clone(),
                        description: t.function.description.clone(),
                        parameters: None,
                        parameters_json_schema: t.function.parameters.clone(),
                    })
                    .collect(),
            ),
            extra: Extra::new(),
        }]
    });
    let tool_config = match &req.tool_choice {
        None => None,
        Some(tc) => Some(tool_config(tc)?),
    };
    Ok(GenerateRequest {
        contents,
        system_instruction: (!system.is_empty()).then(|| GContent {
            role: None,
            parts: system,
        }),
        tools,
        tool_config,
        generation_config: generation_config(req)?,
        safety_settings: None,
        extra: wire::Extra::new(),
    })
}

fn text_part(text: String) -> Part {
    Part {
        text: Some(text),
        ..Part::default()
    }
}

/// A tool result as the JSON object Gemini wants: the result itself when it is one, else
/// `{"result": text}`.
fn result_object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"result": text}),
    }
}

fn user_parts(m: &Message, i: usize) -> Result<Vec<Part>, TranslateError> {
    let Some(content) = &m.content else {
        return Ok(Vec::new());
    };
    let parts = match content {
        Content::Text(t) => vec![text_part(t.clone())],
        Content::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let at = format!("messages[{i}].content[{j}]");
                out.push(match p.kind.as_str() {
                    "text" => text_part(p.text.clone().unwrap_or_default()),
                    "image_url" => {
                        let url = p
                            .image_url
                            .as_ref()
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(format!("{at}.image_url.url: a string is required")))?;
                        media_part(url)
                    }
                    "input_audio" => {
                        let audio = p.extra.get("input_audio");
                        let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
                        let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
                        let (Some(data), Some(format)) = (data, format) else {
                            return Err(bad(format!("{at}.input_audio: `data` and `format` are required")));
                        };
                        inline(format!("audio/{format}"), data.to_owned())
                    }
                    "file" => {
                        let file = p.extra.get("file");
                        let Some(data) = file.and_then(|f| f.get("file_data")).and_then(Value::as_str) else {
                            return Err(bad(format!(
                                "{at}.file: only inline `file_data` (a data: URL) reaches Gemini; uploaded file ids do not"
                            )));
                        };
                        media_part(data)
                    }
                    other => {
                        return Err(bad(format!(
                            "{at}: content part type `{other}` is not supported for Gemini (text, image_url, input_audio, file)"
                        )));
                    }
                });
            }
            out
        }
    };
    Ok(parts)
}

fn inline(mime_type: String, data: String) -> Part {
    Part {
        inline_data: Some(Blob { mime_type, data }),
        ..Part::default()
    }
}

/// A `data:` URL as inline bytes, any other URL as a file reference (MIME type from its extension).
fn media_part(url: &str) -> Part {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
    {
        let mime = meta.trim_end_matches(";base64");
        return inline(mime.to_owned(), data.to_owned());
    }
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let mime = [
        (".png", "image/png"),
        (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"),
        (".webp", "image/webp"),
        (".gif", "image/gif"),
        (".heic", "image/heic"),
        (".pdf", "application/pdf"),
        (".mp3", "audio/mpeg"),
        (".wav", "audio/wav"),
        (".mp4", "video/mp4"),
    ]
    .iter()
    .find(|(ext, _)| path.ends_with(ext))
    .map_or("image/jpeg", |(_, m)| m);
    Part {
        file_data: Some(FileData {
            mime_type: Some(mime.to_owned()),
            file_uri: url.to_owned(),
        }),
        ..Part::default()
    }
}

fn model_parts(
    m: &Message,
    i: usize,
    names: &mut Vec<(String, String)>,
) -> Result<Vec<Part>, TranslateError> {
    let mut parts = Vec::new();
    let text = m.text_content();
    if !text.is_empty() {
        parts.push(text_part(text));
    }
    for (j, c) in m.tool_calls.iter().flatten().enumerate() {
        let args = crate::providers::arguments_object(&c.function.arguments).map_err(|e| {
            bad(format!(
                "messages[{i}].tool_calls[{j}].function.arguments: {e}"
            ))
        })?;
        names.push((c.id.clone(), c.function.name.clone()));
        parts.push(Part {
            function_call: Some(wire::FunctionCall {
                id: None,
                name: c.function.name.clone(),
                args,
            }),
            thought_signature: signature_of(&c.id),
            ..Part::default()
        });
    }
    Ok(parts)
}

fn tool_config(tc: &Value) -> Result<Value, TranslateError> {
    let mode = |m: &str| json!({"functionCallingConfig": {"mode": m}});
    match tc {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(mode("AUTO")),
            "none" => Ok(mode("NONE")),
            "required" => Ok(mode("ANY")),
            other => Err(bad(format!(
                "tool_choice: `{other}` is not auto, none or required"
            ))),
        },
        Value::Object(_) => {
            let name = tc
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice.function.name: a string is required"))?;
            Ok(json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}))
        }
        _ => Err(bad("tool_choice: must be a string or a function choice")),
    }
}

fn generation_config(req: &ChatRequest) -> Result<Option<GenerationConfig>, TranslateError> {
    let x = &req.extra;
    let stop = match &req.stop {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad("stop: must be strings"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(bad("stop: must be a string or a list of strings")),
    };
    let (mime, schema) = match x
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        Some("json_object") => (Some("application/json".to_owned()), None),
        Some("json_schema") => (
            Some("application/json".to_owned()),
            x.get("response_format")
                .and_then(|f| f.pointer("/json_schema/schema"))
                .cloned(),
        ),
        _ => (None, None),
    };
    let thinking = x
        .get("reasoning_effort")
        .and_then(Value::as_str)
        .and_then(thinking_budget)
        .map(|b| json!({"thinkingBudget": b}));
    let cfg = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.output_limit(),
        stop_sequences: stop,
        candidate_count: req.n,
        response_mime_type: mime,
        response_json_schema: schema,
        response_schema: None,
        seed: x.get("seed").and_then(Value::as_i64),
        presence_penalty: x.get("presence_penalty").and_then(Value::as_f64),
        frequency_penalty: x.get("frequency_penalty").and_then(Value::as_f64),
        thinking_config: thinking,
        extra: wire::Extra::new(),
    };
    Ok((cfg != GenerationConfig::default()).then_some(cfg))
}

// === Gemini -> canonical ===

/// OpenAI's finish reason for Gemini's (`tool_calls` when the answer calls functions).
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// Canonical usage from Gemini's (thinking counted as output, as OpenAI counts reasoning).
pub fn usage(u: &UsageMetadata) -> Usage {
    let thoughts = u.thoughts_token_count.unwrap_or(0);
    let mut out = Usage::new(
        u.prompt_token_count,
        u.candidates_token_count.saturating_add(thoughts),
    );
    if u.total_token_count > 0 {
        out.total_tokens = u.total_token_count;
    }
    if let Some(c) = u.cached_content_token_count {
        out.prompt_tokens_details = Some(Box::new(TokenDetails {
            cached_tokens: Some(c),
            ..TokenDetails::default()
        }));
    }
    if thoughts > 0 {
        out.completion_tokens_details = Some(Box::new(TokenDetails {
            reasoning_tokens: Some(thoughts),
            ..TokenDetails::default()
        }));
    }
    out
}

/// The text, thoughts and calls of a candidate's parts; calls get ids (Gemini's, or made here)
/// carrying their signatures.
fn read_parts(parts: &[Part]) -> (String, String, Vec<ToolCall>) {
    let (mut text, mut thoughts, mut calls) = (String::new(), String::new(), Vec::new());
    for p in parts {
        if let Some(f) = &p.function_call {
            let id =
                f.id.clone()
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| format!("call_{:032x}", fastrand::u128(..)));
            calls.push(ToolCall {
                id: id_with_signature(&id, p.thought_signature.as_deref()),
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
        } else if let Some(t) = &p.text {
            if p.thought == Some(true) {
                thoughts.push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    (text, thoughts, calls)
}

/// Why a prompt or answer was blocked, in words, for `refusal`.
fn blocked(r: &GenerateResponse, finish: Option<&str>) -> Option<String> {
    if let Some(fb) = &r.prompt_feedback
        && let Some(reason) = &fb.block_reason
    {
        return Some(format!(
            "the prompt was blocked by Gemini ({reason}){}",
            fb.block_reason_message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    let f = finish?;
    (finish_reason(f, false) == "content_filter")
        .then(|| format!("the answer was stopped by Gemini ({f})"))
}

/// Builds the canonical response for a Gemini one.
pub fn from_generate_response(r: GenerateResponse, model: &str) -> ChatResponse {
    let mut choices = Vec::new();
    for (i, c) in r.candidates.iter().enumerate() {
        let parts = c.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
        let (text, thoughts, calls) = read_parts(parts);
        let mut extra = Extra::new();
        if !thoughts.is_empty() {
            extra.insert("reasoning_content".into(), Value::String(thoughts));
        }
        if let Some(why) = blocked(&r, c.finish_reason.as_deref()) {
            extra.insert("refusal".into(), Value::String(why));
        }
        let finish = c.finish_reason.as_deref().map_or(
            if calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            },
            |f| finish_reason(f, !calls.is_empty()),
        );
        choices.push(Choice {
            index: c.index.unwrap_or(i as u32),
            message: Message {
                role: Role::Assistant,
                content: (!text.is_empty() || calls.is_empty()).then(|| Content::Text(text)),
                name: None,
                tool_calls: (!calls.is_empty()).then_some(calls),
                tool_call_id: None,
                extra,
            },
            finish_reason: Some(finish.to_owned()),
            extra: Extra::new(),
        });
    }
    if choices.is_empty() {
        // The prompt itself was blocked: an empty answer that says why.
        let mut extra = Extra::new();
        extra.insert(
            "refusal".into(),
            Value::String(blocked(&r, None).unwrap_or_else(|| "Gemini returned no answer".into())),
        );
        choices.push(Choice {
            index: 0,
            message: Message {
                role: Role::Assistant,
                content: Some(Content::Text(String::new())),
                name: None,
                tool_calls: None,
                tool_call_id: None,
                extra,
            },
            finish_reason: Some("content_filter".into()),
            extra: Extra::new(),
        });
    }
    ChatResponse {
        id: r
            .response_id
            .clone()
            .unwrap_or_else(|| crate::chat::new_id("chatcmpl")),
        object: "chat.completion".into(),
        created: unix_now(),
        model: r.model_version.clone().unwrap_or_else(|| model.to_owned()),
        choices,
        usage: r.usage_metadata.as_ref().map(usage),
        extra: Extra::new(),
    }
}

/// Turns the events of `streamGenerateContent?alt=sse` into canonical chunks: text and thought
/// deltas as they come, each function call whole (Gemini sends calls complete), the finish reason,
/// then one usage chunk.
#[derive(Debug)]
pub struct StreamDecoder {
    id: String,
    model: String,
    created: u64,
    started: bool,
    calls: u32,
    usage: Option<UsageMetadata>,
}

impl StreamDecoder {
    /// A decoder for an answer of `model` (used until the upstream names its version).
    pub fn new(model: &str) -> Self {
        Self {
            id: crate::chat::new_id("chatcmpl"),
            model: model.to_owned(),
            created: unix_now(),
            started: false,
            calls: 0,
            usage: None,
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<String>) -> ChatChunk {
        ChatChunk::of(&self.id, self.created, &self.model, delta, finish)
    }

    /// Feeds one event.
    pub fn push(&mut self, r: GenerateResponse) -> Vec<ChatChunk> {
        let mut out = Vec::new();
        if let Some(v) = &r.model_version {
            self.model.clone_from(v);
        }
        if r.usage_metadata.is_some() {
            self.usage.clone_from(&r.usage_metadata);
        }
        if !self.started {
            self.started = true;
            let delta = Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Delta::default()
            };
            out.push(self.chunk(delta, None));
        }
        let Some(c) = r.candidates.first() else {
            if let Some(why) = blocked(&r, None) {
                let mut delta = Delta::default();
                delta.extra.insert("refusal".into(), Value::String(why));
                out.push(self.chunk(delta, Some("content_filter".into())));
                out.extend(self.usage_chunk());
            }
            return out;
        };
        let parts = c.content.as_ref().map_or(&[][..], |c| &c.parts[..]);
        let (text, thoughts, calls) = read_parts(parts);
        if !thoughts.is_empty() {
            let mut delta = Delta::default();
            delta
                .extra
                .insert("reasoning_content".into(), Value::String(thoughts));
            out.push(self.chunk(delta, None));
        }
        if !text.is_empty() {
            let delta = Delta {
                content: Some(text),
                ..Delta::default()
            };
            out.push(self.chunk(delta, None));
        }
        if !calls.is_empty() {
            let deltas = calls
                .into_iter()
                .map(|call| {
                    let d = ToolCallDelta {
                        index: self.calls,
                        id: Some(call.id),
                        kind: Some("function".into()),
                        function: Some(FunctionCallDelta {
                            name: Some(call.function.name),
                            arguments: Some(call.function.arguments),
                        }),
                    };
                    self.calls += 1;
                    d
                })
                .collect();
            let delta = Delta {
                tool_calls: Some(deltas),
                ..Delta::default()
            };
            out.push(self.chunk(delta, None));
        }
        if let Some(f) = &c.finish_reason {
            let mut delta = Delta::default();
            if let Some(why) = blocked(&r, Some(f)) {
                delta.extra.insert("refusal".into(), Value::String(why));
            }
            let reason = finish_reason(f, self.calls > 0).to_owned();
            out.push(self.chunk(delta, Some(reason)));
            out.extend(self.usage_chunk());
        }
        out
    }

    fn usage_chunk(&mut self) -> Option<ChatChunk> {
        let u = self.usage.take()?;
        let mut c = self.chunk(Delta::default(), None);
        c.choices.clear();
        c.usage = Some(usage(&u));
        Some(c)
    }
}
