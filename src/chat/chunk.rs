//! One streamed chunk as it moves through the stages, and an OpenAI chunk kept as the upstream's
//! JSON.
//!
//! When the client takes OpenAI's stream and no stage is to change the chunks
//! (`RequestContext::raw_answer`), the OpenAI provider reads each event for what the stages read
//! (ids, the deltas, finish reasons, usage) and leaves out the members no stage reads (`object`,
//! left empty, and the chunk's and each choice's unmodelled members: `system_fingerprint`,
//! `service_tier`, `logprobs`); the event's JSON goes with the chunk and is what the client is sent. A stage
//! that changes the chunk ([`Chunk::make_mut`]) or needs all of it ([`Chunk::into_chunk`]) gets
//! it decoded in full from that JSON, and the JSON is dropped: the chunk is then written again.
//!
//! Reading checks every member the full decoder reads the way it reads it (types, a modelled
//! member twice is an error); the members left out are checked to be JSON and skipped.

use std::ops::Deref;

use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use serde::de::{SeqAccess, Visitor};

use super::raw::{Object, Str};
use super::{ChatChunk, ChunkChoice, Delta, Extra, StreamError, Usage};

/// A chunk of a [`super::ChatStream`], and when it came from an OpenAI upstream unchanged, its
/// JSON. Reads go through `Deref`; a change goes through [`Chunk::make_mut`], which drops the JSON.
#[derive(Debug, Clone)]
pub struct Chunk {
    chunk: ChatChunk,
    wire: Option<Wire>,
}

/// The upstream's JSON of a chunk read by [`Chunk::read_raw`].
#[derive(Debug, Clone)]
struct Wire {
    /// The event's data: one line of JSON (after the provider's secret redaction).
    json: Bytes,
    /// The JSON has a `"usage": null` member (OpenAI sends one on every chunk when usage was
    /// asked for, which the gateway always asks for).
    null_usage: bool,
}

impl From<ChatChunk> for Chunk {
    fn from(chunk: ChatChunk) -> Self {
        Self { chunk, wire: None }
    }
}

impl Deref for Chunk {
    type Target = ChatChunk;
    fn deref(&self) -> &ChatChunk {
        &self.chunk
    }
}

/// What an event's data is, read as a chunk.
#[derive(Debug)]
pub enum RawEvent {
    /// A chunk (boxed, as a stream's items are).
    Chunk(Box<Chunk>),
    /// An `error` member: the upstream's error payload, which ends the stream.
    Error(Value),
}

impl Chunk {
    /// Whether an event's data can be kept as a chunk's JSON: it is sent as one `data:` line.
    pub fn one_line(data: &str) -> bool {
        memchr::memchr2(b'\n', b'\r', data.as_bytes()).is_none()
    }

    /// Reads an event's data (one line, see [`Chunk::one_line`]) as an OpenAI chunk, keeping the
    /// data as the chunk's JSON. Data that is not a chunk (what `ChatChunk`'s decoder refuses) is
    /// given back.
    pub fn read_raw(data: String) -> Result<RawEvent, String> {
        let Ok(Object(skim)) = serde_json::from_str::<Object<Skim>>(&data) else {
            return Err(data);
        };
        if let Some(error) = skim.error {
            return Ok(RawEvent::Error(error));
        }
        let null_usage = matches!(skim.usage, Some(None));
        let chunk = ChatChunk {
            id: skim.id,
            object: String::new(),
            created: skim.created,
            model: skim.model,
            choices: skim.choices,
            usage: skim.usage.flatten(),
            extra: Extra::new(),
        };
        Ok(RawEvent::Chunk(Box::new(Self {
            chunk,
            wire: Some(Wire {
                null_usage,
                json: Bytes::from(data.into_bytes()),
            }),
        })))
    }

    /// The chunk, to change: decoded in full from its JSON first if it was kept as its JSON, and
    /// from then on written again when sent. Fails only if the upstream's JSON holds what the
    /// full decoder refuses in a member the reading skipped (an unpaired UTF-16 escape).
    pub fn make_mut(&mut self) -> Result<&mut ChatChunk, StreamError> {
        if let Some(wire) = self.wire.take() {
            self.chunk = serde_json::from_slice(&wire.json)
                .map_err(|e| StreamError::new(format!("bad chunk from upstream: {e}")))?;
        }
        Ok(&mut self.chunk)
    }

    /// The whole chunk (see [`Chunk::make_mut`]).
    pub fn into_chunk(mut self) -> Result<ChatChunk, StreamError> {
        self.make_mut()?;
        Ok(self.chunk)
    }

    /// The upstream's JSON, to send as the chunk to an OpenAI client, without `usage` unless
    /// `with_usage`: the JSON is the two parts one after the other. `None` when the chunk has to
    /// be written again: it was changed, or it was not kept as its JSON, or its usage cannot be
    /// left out of the JSON as it is.
    pub fn json(&self, with_usage: bool) -> Option<[&[u8]; 2]> {
        let wire = self.wire.as_ref()?;
        let json = wire.json.as_ref();
        if with_usage || (!wire.null_usage && self.chunk.usage.is_none()) {
            return Some([json, b""]);
        }
        if self.chunk.usage.is_some() {
            return None;
        }
        // OpenAI puts `usage` last: `...,"usage":null}`. The text before the closing brace ends a
        // top-level member of the object (JSON has no string that ends there), and the `,` and
        // quote before `usage` can only be outside a string, so this tail is that member.
        const TAIL: &[u8] = b",\"usage\":null}";
        let head = json.trim_ascii_end().strip_suffix(TAIL)?;
        Some([head, b"}"])
    }
}

/// The members of a chunk that stages read; the chunk's and its choices' other members are
/// checked to be JSON and skipped, and so is `object`, which no stage reads (a chunk read this way
/// has it empty). Defaults as `ChatChunk`'s decoder has them.
#[derive(Deserialize)]
struct Skim {
    #[serde(default)]
    id: String,
    #[serde(default, rename = "object")]
    _object: Str,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    model: String,
    #[serde(default, deserialize_with = "choices")]
    choices: Vec<ChunkChoice>,
    /// Absent, `null`, or the counts.
    #[serde(default, deserialize_with = "present")]
    usage: Option<Option<Usage>>,
    /// An error payload, whatever its value (`null` included).
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct SkimChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// `choices`, each read as a [`SkimChoice`] into a choice without unmodelled members.
fn choices<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkChoice>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<ChunkChoice>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of choices")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(1);
            while let Some(Object(c)) = seq.next_element::<Object<SkimChoice>>()? {
                out.push(ChunkChoice {
                    index: c.index,
                    delta: c.delta,
                    finish_reason: c.finish_reason,
                    extra: Extra::new(),
                });
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

/// A member that is present, whatever its value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests;
