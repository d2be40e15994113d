//! A complete OpenAI answer kept as the upstream's JSON, read only for what the gateway's own
//! stages need of it: the token counts (governance, metrics, the request log), the first
//! choice's finish reason and whether it says anything (the cache's storability), and the names
//! of the tools it calls (the MCP loop). An OpenAI client is sent these bytes as they came, so
//! the full answer is decoded only if a stage has to read or change more ([`RawAnswer::decode`]).
//!
//! Reading checks every member it looks at the way the canonical decoder does (types, required
//! members, a duplicate modelled member is an error) and that the whole body is one JSON value;
//! what it does not look at (message text, logprobs, vendor members) is passed on unread, as a
//! proxy would.

use bytes::Bytes;
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};

use super::{ChatResponse, ContentPart, Role, ToolCall};

/// An upstream's complete answer, as its bytes and what was read of them.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// The JSON, as the upstream sent it (after the provider's secret redaction).
    pub bytes: Bytes,
    /// `usage`'s prompt and completion tokens, when the answer has a `usage`.
    pub tokens: Option<(u64, u64)>,
    /// How many choices it has.
    pub choices: usize,
    /// The first choice's `finish_reason`.
    pub finish_reason: Option<String>,
    /// Whether the first choice's message has text or tool calls.
    pub said: bool,
    /// The names of the first choice's tool calls, in order.
    pub tool_names: Vec<String>,
}

impl RawAnswer {
    /// Reads `bytes` as an OpenAI chat answer.
    pub fn read(bytes: Bytes) -> Result<Self, serde_json::Error> {
        let Object(skim): Object<Skim> = serde_json::from_slice(&bytes)?;
        let first = skim.choices.first;
        let (finish_reason, said, tool_names) = match first {
            Some(Object(c)) => {
                let names: Vec<String> = c
                    .message
                    .0
                    .tool_calls
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| t.function.name)
                    .collect();
                (
                    c.finish_reason,
                    c.message.0.content.0 || !names.is_empty(),
                    names,
                )
            }
            None => (None, false, Vec::new()),
        };
        Ok(Self {
            bytes,
            tokens: skim
                .usage
                .map(|Object(u)| (u.prompt_tokens, u.completion_tokens)),
            choices: skim.choices.count,
            finish_reason,
            said,
            tool_names,
        })
    }

    /// The whole answer, decoded.
    pub fn decode(&self) -> Result<ChatResponse, serde_json::Error> {
        serde_json::from_slice(&self.bytes)
    }
}

/// The members of an answer that are read; the rest are checked to be JSON and skipped.
#[derive(Deserialize)]
struct Skim {
    #[serde(default, rename = "id")]
    _id: Str,
    #[serde(default, rename = "object")]
    _object: Str,
    #[serde(default, rename = "created")]
    _created: u64,
    #[serde(default, rename = "model")]
    _model: Str,
    choices: Choices,
    #[serde(default)]
    usage: Option<Object<Tokens>>,
}

/// `usage`, its counts (the detail objects are skipped).
#[derive(Deserialize)]
struct Tokens {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default, rename = "total_tokens")]
    _total_tokens: u64,
}

#[derive(Deserialize)]
struct SkimChoice {
    #[serde(default, rename = "index")]
    _index: u32,
    message: Object<SkimMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct SkimMessage {
    #[serde(rename = "role")]
    _role: Role,
    #[serde(default)]
    content: Said,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

/// `T` read from a JSON object only: serde's derive also reads a struct from an array (its
/// members in order), which the canonical decoders refuse.
pub(super) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string member, checked and not kept.
#[derive(Default)]
pub(super) struct Str;

impl<'de> Deserialize<'de> for Str {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Str;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Str, E> {
                Ok(Str)
            }
        }
        d.deserialize_str(V)
    }
}

/// Message content: whether it has any text (a string, or parts of which one has text).
#[derive(Default)]
struct Said(bool);

impl<'de> Deserialize<'de> for Said {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Said;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, a list of content parts or null")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Said, E> {
                Ok(Said(!v.is_empty()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Said, E> {
                Ok(Said(false))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Said, E> {
                Ok(Said(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Said, A::Error> {
                let mut said = false;
                while let Some(part) = seq.next_element::<ContentPart>()? {
                    said |= part.text.as_deref().is_some_and(|t| !t.is_empty());
                }
                Ok(Said(said))
            }
        }
        d.deserialize_any(V)
    }
}

/// `choices`: how many, and the first one read.
struct Choices {
    count: usize,
    first: Option<Object<SkimChoice>>,
}

impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Choices;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices, A::Error> {
                let first = seq.next_element::<Object<SkimChoice>>()?;
                let mut count = usize::from(first.is_some());
                while seq.next_element::<Object<SkimChoice>>()?.is_some() {
                    count += 1;
                }
                Ok(Choices { count, first })
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests;
