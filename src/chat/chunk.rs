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
//! member twice is an error); the members left out are checked to be JSON and skipped. The
//! members before `choices` (`id`, `created`, `model`, ...) are the same bytes in every chunk of
//! a stream: [`Heads`] keeps what they were read as, and a later chunk that begins with the same
//! bytes has only its rest read.

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
        Self::read_raw_in(data, &mut Heads::default())
    }

    /// [`Chunk::read_raw`] for the next event of a stream whose earlier events `heads` has seen:
    /// a chunk that begins with the same bytes as the first, up to its `choices` member, has the
    /// same `id`, `created` and `model`, and only the rest of it is read.
    pub fn read_raw_in(data: String, heads: &mut Heads) -> Result<RawEvent, String> {
        // The head's bytes were found to be `{` and whole members (`head_end`), so the same bytes
        // at the start of this chunk are the same members, and `choices` right after them begins
        // the next one: no need to look for the bounds again.
        if let Some(head) = &heads.head {
            if let Some(rest) = data.as_bytes().strip_prefix(head.bytes.as_slice())
                && rest.starts_with(b"\"choices\"")
            {
                heads.scratch.clear();
                heads.scratch.push('{');
                heads.scratch.push_str(&data[head.bytes.len()..]);
                // The rest, read as an object of its own. A member of the head that comes again
                // is left to the whole reading, which refuses it as it always did.
                if let Ok(Object(rest)) = serde_json::from_str::<Object<Skim>>(&heads.scratch)
                    && rest.id.is_none()
                    && rest.object.is_none()
                    && rest.created.is_none()
                    && rest.model.is_none()
                {
                    return Ok(Self::of(data, rest, Some(head)));
                }
            }
            // A chunk that does not follow the kept head: the stream's chunks do not share one,
            // and from here on each is read whole, once.
            heads.head = None;
        }
        let Ok(Object(skim)) = serde_json::from_str::<Object<Skim>>(&data) else {
            return Err(data);
        };
        // A head is looked for once a stream, in its first chunk read whole (an error payload
        // ends the stream): kept when it holds at least one member and nothing but simple ones
        // (see `head_end`).
        if !heads.tried {
            heads.tried = true;
            heads.head = head_end(data.as_bytes())
                .filter(|&end| end > 1 && skim.error.is_none())
                .and_then(|end| Head::read(&data[..end]));
        }
        Ok(Self::of(data, skim, None))
    }

    /// The event `skim` was read from `data`: the whole of it, or the rest after `head`.
    fn of(data: String, skim: Skim, head: Option<&Head>) -> RawEvent {
        if let Some(error) = skim.error {
            return RawEvent::Error(error);
        }
        let (id, created, model) = match head {
            Some(h) => (h.id.clone(), h.created, h.model.clone()),
            None => (
                skim.id.unwrap_or_default(),
                skim.created.unwrap_or_default(),
                skim.model.unwrap_or_default(),
            ),
        };
        let null_usage = matches!(skim.usage, Some(None));
        let chunk = ChatChunk {
            id,
            object: String::new(),
            created,
            model,
            choices: skim.choices,
            usage: skim.usage.flatten(),
            extra: Extra::new(),
        };
        RawEvent::Chunk(Box::new(Self {
            chunk,
            wire: Some(Wire {
                null_usage,
                json: Bytes::from(data.into_bytes()),
            }),
        }))
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
/// has it empty). Defaults as `ChatChunk`'s decoder has them; the head's members are `None` when
/// absent, so that reading the rest of a chunk can tell one that comes again.
#[derive(Deserialize)]
struct Skim {
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    object: Option<Str>,
    #[serde(default, deserialize_with = "present")]
    created: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    model: Option<String>,
    #[serde(default, deserialize_with = "choices")]
    choices: Vec<ChunkChoice>,
    /// Absent, `null`, or the counts.
    #[serde(default, deserialize_with = "present")]
    usage: Option<Option<Usage>>,
    /// An error payload, whatever its value (`null` included).
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
}

/// What a stream's chunks begin with. OpenAI writes `id`, `object`, `created`, `model` and
/// members no stage reads (`system_fingerprint`, `service_tier`) before `choices`, the same bytes
/// in every chunk of a stream; [`Chunk::read_raw_in`] reads them once.
#[derive(Debug, Default)]
pub struct Heads {
    /// The first chunk's head, when it is simple, while the chunks follow it.
    head: Option<Head>,
    /// The rest of a chunk as an object of its own, read from here (one buffer for the stream).
    scratch: String,
    /// A head was looked for (in the stream's first chunk read whole).
    tried: bool,
}

#[derive(Debug)]
struct Head {
    /// The chunk's bytes before its `choices` member: `{` and whole members, each followed by `,`.
    bytes: Vec<u8>,
    id: String,
    created: u64,
    model: String,
}

impl Head {
    /// The head of a chunk (`{` and whole members, each followed by `,`), with the members it
    /// holds: a member that comes after `choices` is not the head's.
    fn read(bytes: &str) -> Option<Self> {
        let mut object = String::with_capacity(bytes.len() + 1);
        object.push_str(bytes.strip_suffix(',').unwrap_or(bytes));
        object.push('}');
        let Object(skim) = serde_json::from_str::<Object<Skim>>(&object).ok()?;
        Some(Self {
            bytes: bytes.as_bytes().to_vec(),
            id: skim.id.unwrap_or_default(),
            created: skim.created.unwrap_or_default(),
            model: skim.model.unwrap_or_default(),
        })
    }
}

/// Where a chunk's `choices` member begins, when everything before it is simple: `{` and members
/// written without spaces, each a key and a string or a number, none of them `usage` or `error`
/// (which the head does not keep), and no backslash in any key or string (so the first quote
/// after an opening one closes it, and the members' bounds are certain). `None` otherwise, and
/// no head is kept. Only bounds are found here: the chunk has been read whole by serde_json.
fn head_end(data: &[u8]) -> Option<usize> {
    /// The end of the string that opens at `at` (after its closing quote), without a backslash.
    fn string_end(data: &[u8], at: usize) -> Option<usize> {
        // A plain loop: these strings are short, where `memchr`'s set-up costs more than it saves.
        let body = data.get(at + 1..)?;
        let close = body.iter().position(|&b| b == b'"' || b == b'\\')?;
        (body[close] == b'"').then_some(at + 1 + close + 1)
    }
    if data.first() != Some(&b'{') {
        return None;
    }
    let mut at = 1;
    loop {
        if data.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(data, at)?;
        match &data[at + 1..key_end - 1] {
            b"choices" => return Some(at),
            b"usage" | b"error" => return None,
            _ => {}
        }
        if data.get(key_end) != Some(&b':') {
            return None;
        }
        let value = key_end + 1;
        let value_end = match data.get(value)? {
            b'"' => string_end(data, value)?,
            b'-' | b'0'..=b'9' => {
                value
                    + data[value..]
                        .iter()
                        .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                        .count()
            }
            _ => return None,
        };
        if data.get(value_end) != Some(&b',') {
            return None;
        }
        at = value_end + 1;
    }
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
