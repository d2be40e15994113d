//! Server-sent events read from an upstream's streaming answer.
//!
//! This reads events exactly as the `sse-stream` crate does (which rmcp uses, and so does the
//! MCP SSE client here): the same fields, the same errors, in the same order (test
//! `reads_as_the_crate_reads`, on random input split at random places). It differs in how it
//! finds line ends: the crate compares byte by byte, about 10 instructions a byte, which was 5 %
//! of a streamed chat request (18k instructions for its 1.8 KB of events); here `memchr` finds
//! them, and counts each event's bytes as it goes, ending the stream at an event over
//! [`MAX_SSE_EVENT`] (an endless line would otherwise be held until memory runs out).

use std::collections::VecDeque;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sse_stream::Sse;

use super::MAX_SSE_EVENT;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why an event stream could not be read; written as the crate writes its errors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SseError {
    /// An event longer than [`MAX_SSE_EVENT`].
    #[error("the upstream sent an event over {} MiB", MAX_SSE_EVENT >> 20)]
    TooLarge,
    /// The body failed.
    #[error("body error: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// A line without a colon, or a field that is not one of the four.
    #[error("invalid line")]
    InvalidLine,
    /// `event` twice in one event.
    #[error("duplicated event line")]
    DuplicatedEventLine,
    /// `id` twice in one event.
    #[error("duplicated id line")]
    DuplicatedIdLine,
    /// `retry` twice in one event.
    #[error("duplicated retry line")]
    DuplicatedRetry,
    /// A value that is not UTF-8.
    #[error("utf8 parse error: {0}")]
    Utf8Parse(std::str::Utf8Error),
    /// A `retry` that is not a number.
    #[error("int parse error: {0}")]
    IntParse(std::num::ParseIntError),
}

/// The events of `body`, as they complete. The first error ends the stream; an event the body
/// ends in the middle of is dropped.
pub(crate) fn events<S, E>(body: S) -> Events<S>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    Events {
        body,
        parser: Parser::default(),
        ended: false,
    }
}

/// See [`events`]. Written out rather than as a generator: it is polled once for every event of
/// every streamed answer, and the generator's hand-off of each item costs more than the reading
/// of a short event's lines.
pub(crate) struct Events<S> {
    body: S,
    parser: Parser,
    /// The body ended, or an error was given.
    ended: bool,
}

impl<S, E> Stream for Events<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    type Item = Result<Sse, SseError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            // Events read from the last piece go first, even after the body ended.
            if let Some(sse) = this.parser.parsed.pop_front() {
                return Poll::Ready(Some(Ok(sse)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match std::task::ready!(this.body.poll_next_unpin(cx)) {
                Some(Ok(bytes)) => {
                    if let Err(e) = this.parser.feed(&bytes) {
                        // Events completed before the error in this piece are not given.
                        this.parser.parsed.clear();
                        this.ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(SseError::Body(Box::new(e)))));
                }
                None => this.ended = true,
            }
        }
    }
}

/// The reader's state between pieces of the body.
struct Parser {
    /// Complete events not yet taken.
    parsed: VecDeque<Sse>,
    /// The event being read.
    current: Option<Sse>,
    /// A line the last piece ended in the middle of.
    unfinished: Vec<u8>,
    /// The last piece ended with `\r`: a `\n` first in the next one belongs to it.
    skip_lf: bool,
    /// No line read yet (a byte order mark may lead it).
    first_line: bool,
    /// Bytes of the event being read (its lines without their ends).
    since_event: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Self {
            parsed: VecDeque::new(),
            current: None,
            unfinished: Vec::new(),
            skip_lf: false,
            first_line: true,
            since_event: 0,
        }
    }
}

impl Parser {
    /// Reads one piece of the body (lines end with `\n`, `\r\n` or `\r`); an error once the
    /// event being read is over [`MAX_SSE_EVENT`].
    fn feed(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        self.lines(bytes)?;
        if self.since_event > MAX_SSE_EVENT {
            return Err(SseError::TooLarge);
        }
        Ok(())
    }

    fn lines(&mut self, mut bytes: &[u8]) -> Result<(), SseError> {
        if std::mem::take(&mut self.skip_lf)
            && let Some(rest) = bytes.strip_prefix(b"\n")
        {
            bytes = rest;
        }
        while !bytes.is_empty() {
            let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) else {
                self.unfinished.extend_from_slice(bytes);
                self.since_event += bytes.len();
                return Ok(());
            };
            let (line, rest) = bytes.split_at(end);
            // A blank line ends the event.
            self.since_event = if line.is_empty() && self.unfinished.is_empty() {
                0
            } else {
                self.since_event + line.len()
            };
            self.complete_line(line)?;
            let cr = rest.first() == Some(&b'\r');
            bytes = rest.get(1..).unwrap_or_default();
            if cr {
                match bytes.strip_prefix(b"\n") {
                    Some(after) => bytes = after,
                    None if bytes.is_empty() => self.skip_lf = true,
                    None => {}
                }
            }
        }
        Ok(())
    }

    fn complete_line(&mut self, line: &[u8]) -> Result<(), SseError> {
        if self.unfinished.is_empty() {
            return self.line(line);
        }
        let mut whole = std::mem::take(&mut self.unfinished);
        whole.extend_from_slice(line);
        let read = self.line(&whole);
        whole.clear();
        self.unfinished = whole;
        read
    }

    /// One whole line: a field of the current event, a comment, or (empty) the event's end.
    fn line(&mut self, mut line: &[u8]) -> Result<(), SseError> {
        if std::mem::take(&mut self.first_line) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            if let Some(sse) = self.current.take() {
                self.parsed.push_back(sse);
            }
            return Ok(());
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(SseError::InvalidLine);
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default();
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match name {
            b"data" => {
                let data = text(value)?;
                let event = self.current.get_or_insert_default();
                match event.data.as_mut() {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(data);
                    }
                    None => event.data = Some(data.to_owned()),
                }
            }
            b"event" => {
                let name = text(value)?.to_owned();
                let event = self.current.get_or_insert_default();
                once(&mut event.event, name, SseError::DuplicatedEventLine)?;
            }
            b"id" => {
                // An id with a NUL in it is ignored (the spec).
                if memchr::memchr(0, value).is_some() {
                    return Ok(());
                }
                let id = text(value)?.to_owned();
                let event = self.current.get_or_insert_default();
                once(&mut event.id, id, SseError::DuplicatedIdLine)?;
            }
            b"retry" => {
                let retry = text(value)?
                    .trim_ascii()
                    .parse::<u64>()
                    .map_err(SseError::IntParse)?;
                let event = self.current.get_or_insert_default();
                once(&mut event.retry, retry, SseError::DuplicatedRetry)?;
            }
            // A comment.
            b"" => {}
            _ => return Err(SseError::InvalidLine),
        }
        Ok(())
    }
}

/// Sets a field an event may have once.
fn once<T>(slot: &mut Option<T>, value: T, twice: SseError) -> Result<(), SseError> {
    if slot.is_some() {
        return Err(twice);
    }
    *slot = Some(value);
    Ok(())
}

/// A field's value as text.
fn text(v: &[u8]) -> Result<&str, SseError> {
    std::str::from_utf8(v).map_err(SseError::Utf8Parse)
}

#[cfg(test)]
mod tests;
