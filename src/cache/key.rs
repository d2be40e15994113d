//! Cache keys: a canonical form of the request, hashed into an exact key and a partition, and the
//! text the semantic tier compares.
//!
//! The partition is everything that must match exactly before two requests may share an answer:
//! schema version, tenant, requested model, sampling parameters, tools, system prompt, earlier
//! turns and any non-text part of the last user turn(s). Only the text of the last user turn(s)
//! is compared by similarity. With conversations judged by meaning (`[cache] conversations =
//! "meaning"`), earlier turns that are plain text (user and assistant messages without tool
//! calls, names or non-text parts) leave the partition and become the fingerprint's `context`,
//! which the learned verifier reads together with the last turn; the exact key still covers them. Canonical JSON (sorted keys, integral floats written as integers)
//! makes the hashes independent of key order and JSON formatting.

use std::borrow::Cow;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::chat::{ChatRequest, Content, Message, RequestView, Role};

mod canon;

/// Bumped whenever the key derivation or the stored entry changes; old entries then never match.
pub const SCHEMA: u32 = 1;

/// Request fields that do not change the answer (transport, accounting and tracing options).
const IRRELEVANT: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
];

/// The request's fields other than its messages and streaming options, as `ChatRequest` would
/// serialize them (borrowed: the conversation is not encoded only to be dropped).
fn params(req: &ChatRequest) -> RequestView<'_> {
    RequestView::of(req).without_messages()
}

/// What the cache knows about a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// Exact-tier key (hex SHA-256 over the partition and the last user turn(s)).
    pub exact: String,
    /// Exact filter for the semantic tier (hex, 128 bits).
    pub partition: String,
    /// Text of the last user turn(s); `None` when the conversation does not end with the user
    /// (then only the exact tier applies).
    pub text: Option<String>,
    /// The model the client asked for.
    pub model: String,
    /// The earlier turns as the verifier reads them (`u: ... // a: ...`), when conversations are
    /// judged by meaning and those turns are plain text; empty otherwise (no earlier turns, or
    /// they are part of the partition).
    pub context: String,
}

/// Why a request is not cached at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotCacheable {
    /// Several choices were asked for.
    #[error("n > 1")]
    SeveralChoices,
    /// No messages.
    #[error("no messages")]
    Empty,
}

/// Computes the fingerprint of `req` for `tenant`, with every earlier turn in the partition.
pub fn fingerprint(req: &ChatRequest, tenant: &str) -> Result<Fingerprint, NotCacheable> {
    fingerprint_with(req, tenant, false)
}

/// Computes the fingerprint of `req` for `tenant`; `by_meaning`: plain-text earlier turns are
/// the fingerprint's `context` instead of part of its partition.
pub fn fingerprint_with(
    req: &ChatRequest,
    tenant: &str,
    by_meaning: bool,
) -> Result<Fingerprint, NotCacheable> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(NotCacheable::SeveralChoices);
    }
    if req.messages.is_empty() {
        return Err(NotCacheable::Empty);
    }
    let split = last_user_turns_start(&req.messages);
    let (history, last) = req.messages.split_at(split);
    let text = (!last.is_empty()).then(|| {
        let mut text = String::new();
        for (i, m) in last.iter().enumerate() {
            if i > 0 {
                text.push('\n');
            }
            text.push_str(m.text_view().trim());
        }
        text
    });

    let context = if by_meaning && text.is_some() {
        plain_context(history)
    } else {
        None
    };
    // The partition document, written canonically in one buffer (its keys in sorted order):
    // {"history":[...],"last_non_text":[...],"params":{...},"schema":N,"tenant":"..."}.
    // With a context, only the instructions stay in the partition; the other turns go into the
    // exact key (so exact hits still need the same conversation) and the context.
    let mut doc = Vec::with_capacity(1024);
    doc.extend_from_slice(b"{\"history\":");
    write_messages(
        history
            .iter()
            .filter(|m| context.is_none() || m.role == Role::System),
        &mut doc,
    );
    doc.extend_from_slice(b",\"last_non_text\":[");
    for (i, m) in last.iter().enumerate() {
        if i > 0 {
            doc.push(b',');
        }
        write_non_text_parts(m, &mut doc);
    }
    doc.extend_from_slice(b"],\"params\":");
    let mut params = canon::members(&params(req)).unwrap_or_default();
    // Fields that do not change the answer go, and `n` when it is 1.
    params.retain(|(k, v)| !(IRRELEVANT.contains(&k.as_str()) || (k == "n" && v == b"1")));
    canon::write_object(&params, &mut doc);
    doc.extend_from_slice(b",\"schema\":");
    // Writing a number cannot fail.
    let _ = canon::write(&SCHEMA, &mut doc);
    doc.extend_from_slice(b",\"tenant\":");
    canon::write_str(tenant, &mut doc);
    doc.push(b'}');
    let partition = hex(&sha256(&doc)[..16]);
    // The exact document: {"context":[...],"last":[...],"partition":"..."} (no context member
    // when the earlier turns are in the partition).
    doc.clear();
    doc.push(b'{');
    if let Some(c) = &context
        && !c.is_empty()
    {
        doc.extend_from_slice(b"\"context\":");
        write_messages(history.iter().filter(|m| m.role != Role::System), &mut doc);
        doc.push(b',');
    }
    doc.extend_from_slice(b"\"last\":");
    write_messages(last.iter(), &mut doc);
    doc.extend_from_slice(b",\"partition\":");
    canon::write_str(&partition, &mut doc);
    doc.push(b'}');
    let exact = hex(&sha256(&doc));
    Ok(Fingerprint {
        exact,
        partition,
        text,
        model: req.model.clone(),
        context: context.unwrap_or_default(),
    })
}

/// The earlier turns as the verifier reads them, or `None` when one of them is more than plain
/// text (a tool call or result, a name, an image): then they all stay in the partition.
pub fn plain_context(history: &[Message]) -> Option<String> {
    let mut out = String::new();
    for m in history {
        let who = match m.role {
            Role::System => continue,
            Role::User => "u: ",
            Role::Assistant => "a: ",
            Role::Tool => return None,
        };
        let text_only = match &m.content {
            Some(Content::Text(_)) => true,
            Some(Content::Parts(parts)) => parts.iter().all(|p| p.kind == "text"),
            None => false,
        };
        if !text_only || m.name.is_some() || m.tool_calls.is_some() || !m.extra.is_empty() {
            return None;
        }
        if !out.is_empty() {
            out.push_str(" // ");
        }
        out.push_str(who);
        out.push_str(m.text_view().trim());
    }
    Some(out)
}

/// What the verifier reads for one side of a conversation: the earlier turns, then the last.
pub fn conversation_text(context: &str, last: &str) -> String {
    if context.is_empty() {
        format!("u: {last}")
    } else {
        format!("{context} // u: {last}")
    }
}

/// Index of the first message of the trailing run of user messages (`len` when the last
/// message is not from the user).
fn last_user_turns_start(messages: &[Message]) -> usize {
    let trailing = messages
        .iter()
        .rev()
        .take_while(|m| m.role == Role::User)
        .count();
    messages.len() - trailing
}

/// Messages as a canonical JSON array (see [`write_message`]).
fn write_messages<'m>(messages: impl Iterator<Item = &'m Message>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, m) in messages.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_message(m, out);
    }
    out.push(b']');
}

/// A message as canonical JSON, with text content normalised: a plain string and an array of
/// text parts are the same thing; surrounding whitespace is dropped.
fn write_message(m: &Message, out: &mut Vec<u8>) {
    // Most messages are a role and text, nothing else: their members are known and in order
    // (`content` < `role`), so they are written without collecting and sorting them.
    if m.name.is_none()
        && m.tool_calls.is_none()
        && m.tool_call_id.is_none()
        && m.extra.is_empty()
        && let Some(text) = text_of(m)
    {
        out.extend_from_slice(b"{\"content\":");
        canon::write_str(&text, out);
        out.extend_from_slice(b",\"role\":");
        canon::write_str(role_name(m.role), out);
        out.push(b'}');
        return;
    }
    write_message_members(m, out);
}

/// A message's text content, trimmed, when its content is text only.
fn text_of(m: &Message) -> Option<Cow<'_, str>> {
    match &m.content {
        Some(Content::Text(t)) => Some(Cow::Borrowed(t.trim())),
        Some(Content::Parts(parts)) if parts.iter().all(|p| p.kind == "text") => {
            Some(Cow::Owned(m.text_content().trim().to_owned()))
        }
        _ => None,
    }
}

/// A role as the chat types write it.
fn role_name(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// [`write_message`] for any message: its members collected, sorted and written.
fn write_message_members(m: &Message, out: &mut Vec<u8>) {
    let mut members = canon::members(m).unwrap_or_default();
    let Some(text) = text_of(m) else {
        canon::write_object(&members, out);
        return;
    };
    let mut value = Vec::with_capacity(text.len() + 2);
    canon::write_str(&text, &mut value);
    match members.binary_search_by(|(k, _)| k.as_str().cmp("content")) {
        Ok(i) => members[i].1 = value,
        Err(i) => members.insert(i, ("content".to_owned(), value)),
    }
    canon::write_object(&members, out);
}

/// The parts of a message that are not text (images, audio, files), for the partition, as a
/// canonical JSON array.
fn write_non_text_parts(m: &Message, out: &mut Vec<u8>) {
    out.push(b'[');
    if let Some(Content::Parts(parts)) = &m.content {
        let mut first = true;
        let mut one = Vec::new();
        for p in parts.iter().filter(|p| p.kind != "text") {
            one.clear();
            // A part that cannot be encoded is left out.
            if canon::write(p, &mut one).is_ok() {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&one);
            }
        }
    }
    out.push(b']');
}

/// Canonical JSON: object keys sorted, no whitespace, floats with an integral value written as
/// integers (so `1` and `1.0` hash the same).
pub fn canonical(v: &Value) -> String {
    let mut out = Vec::new();
    // A JSON value always has a canonical form (its keys are strings).
    let _ = canon::write(v, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex, encoded in one pass (`hex::encode` collects a `String` one `char` at a time,
/// which was half the cost of the two digests it wrote per request).
fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    match hex::encode_to_slice(bytes, &mut out) {
        Ok(()) => String::from_utf8(out).unwrap_or_else(|_| hex::encode(bytes)),
        Err(_) => hex::encode(bytes),
    }
}

/// The point id of an exact key: a UUID made of its first 16 bytes, so both stores address an
/// entry the same way.
pub fn point_id(exact: &str) -> uuid::Uuid {
    let mut b = [0u8; 16];
    // The keys this module makes are hex: decoded at once (parsing each pair as a number was
    // 1.3k instructions a lookup). Other input is read pair by pair, a pair that is not hex as 0.
    if exact
        .get(..32)
        .is_none_or(|head| hex::decode_to_slice(head, &mut b).is_err())
    {
        for (i, slot) in b.iter_mut().enumerate() {
            *slot = exact
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .unwrap_or(0);
        }
    }
    uuid::Uuid::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages of a role and text only are written directly: byte for byte what collecting
    /// and sorting their members writes.
    #[test]
    fn plain_messages_are_written_as_their_members_would_be() {
        let messages: Vec<Message> = serde_json::from_value(serde_json::json!([
            {"role": "system", "content": "  Be terse. \n"},
            {"role": "developer", "content": "dev"},
            {"role": "user", "content": "Say \"hi\" \u{e9}\u{1F600}\t</script>"},
            {"role": "assistant", "content": [{"type": "text", "text": " a "}, {"type": "text", "text": "b"}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
            {"role": "user", "name": "ann", "content": "hi"},
            {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "data:,"}}]}
        ]))
        .expect("messages");
        for (i, m) in messages.iter().enumerate() {
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            write_message(m, &mut fast);
            write_message_members(m, &mut general);
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&general),
                "message {i}"
            );
        }
        for r in [Role::System, Role::User, Role::Assistant, Role::Tool] {
            assert_eq!(
                serde_json::to_value(r).expect("role"),
                Value::String(role_name(r).into())
            );
        }
    }

    /// The borrowed view serializes every field but the conversation and the streaming options
    /// exactly as the request itself does.
    #[test]
    fn the_params_are_the_request_without_its_messages() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}}],
            "tool_choice": "auto", "max_tokens": 5, "max_completion_tokens": 6,
            "temperature": 0.5, "top_p": 1.0, "stop": ["\n"], "n": 1,
            "seed": 7, "response_format": {"type": "json_object"}, "user": "u"
        }))
        .expect("request");
        let Ok(Value::Object(mut whole)) = serde_json::to_value(&req) else {
            panic!("not an object");
        };
        for k in ["messages", "stream", "stream_options"] {
            assert!(whole.remove(k).is_some(), "{k}");
        }
        assert_eq!(
            serde_json::to_value(params(&req)).expect("params"),
            Value::Object(whole)
        );
    }
}
