//! Cache keys: a canonical form of the request, hashed into an exact key and a partition, and the
//! text the semantic tier compares.
//!
//! The partition is everything that must match exactly before two requests may share an answer:
//! schema version, tenant, requested model, sampling parameters, tools, system prompt, earlier
//! turns and any non-text part of the last user turn(s). Only the text of the last user turn(s)
//! is compared by similarity. Canonical JSON (sorted keys, integral floats written as integers)
//! makes the hashes independent of key order and JSON formatting.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chat::{ChatRequest, Content, Message, Role};

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

/// Computes the fingerprint of `req` for `tenant`.
pub fn fingerprint(req: &ChatRequest, tenant: &str) -> Result<Fingerprint, NotCacheable> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(NotCacheable::SeveralChoices);
    }
    if req.messages.is_empty() {
        return Err(NotCacheable::Empty);
    }
    let split = last_user_turns_start(&req.messages);
    let (history, last) = req.messages.split_at(split);
    let text = (!last.is_empty()).then(|| {
        last.iter()
            .map(|m| m.text_content().trim().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    });

    let mut params = match serde_json::to_value(req) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    params.remove("messages");
    for k in IRRELEVANT {
        params.remove(*k);
    }
    if params.get("n").and_then(Value::as_u64) == Some(1) {
        params.remove("n");
    }
    let non_text: Vec<Value> = last.iter().map(non_text_parts).collect();
    let partition_doc = serde_json::json!({
        "schema": SCHEMA,
        "tenant": tenant,
        "params": Value::Object(params),
        "history": history.iter().map(message_value).collect::<Vec<_>>(),
        "last_non_text": non_text,
    });
    let partition = hex::encode(&sha256(&canonical_bytes(&partition_doc))[..16]);
    let exact_doc = serde_json::json!({
        "partition": partition,
        "last": last.iter().map(message_value).collect::<Vec<_>>(),
    });
    let exact = hex::encode(sha256(&canonical_bytes(&exact_doc)));
    Ok(Fingerprint {
        exact,
        partition,
        text,
        model: req.model.clone(),
    })
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

/// A message as canonical JSON, with text content normalised: a plain string and an array of
/// text parts are the same thing; surrounding whitespace is dropped.
fn message_value(m: &Message) -> Value {
    let mut v = match serde_json::to_value(m) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    match &m.content {
        Some(Content::Text(t)) => {
            v.insert("content".into(), Value::String(t.trim().to_owned()));
        }
        Some(Content::Parts(parts)) if parts.iter().all(|p| p.kind == "text") => {
            v.insert(
                "content".into(),
                Value::String(m.text_content().trim().into()),
            );
        }
        _ => {}
    }
    Value::Object(v)
}

/// The parts of a message that are not text (images, audio, files), for the partition.
fn non_text_parts(m: &Message) -> Value {
    match &m.content {
        Some(Content::Parts(parts)) => Value::Array(
            parts
                .iter()
                .filter(|p| p.kind != "text")
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect(),
        ),
        _ => Value::Array(Vec::new()),
    }
}

/// Canonical JSON: object keys sorted, no whitespace, floats with an integral value written as
/// integers (so `1` and `1.0` hash the same).
pub fn canonical(v: &Value) -> String {
    String::from_utf8(canonical_bytes(v)).unwrap_or_default()
}

/// [`canonical`] as bytes, written in one buffer (strings are escaped straight into it, nothing
/// is copied per value).
fn canonical_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    write_canonical(v, &mut out);
    out
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    use std::io::Write as _;
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            let _ = match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => {
                    write!(out, "{}", f as i64)
                }
                _ => write!(out, "{n}"),
            };
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The point id of an exact key: a UUID made of its first 16 bytes, so both stores address an
/// entry the same way.
pub fn point_id(exact: &str) -> uuid::Uuid {
    let mut b = [0u8; 16];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = exact
            .get(i * 2..i * 2 + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    uuid::Uuid::from_bytes(b)
}
