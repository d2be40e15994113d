//! Serving a stored answer: as JSON, or as a stream that looks like a live one (role chunk,
//! content in small pieces, tool-call deltas, finish reason, usage when asked, then `[DONE]` from
//! the encoder), with optional pacing.

use std::time::Duration;

use crate::chat::{
    ChatChunk, ChatResponse, ChatStream, ChunkChoice, Content, Delta, Extra, FunctionCallDelta,
    ToolCallDelta, unix_now,
};

/// Words per replayed content chunk.
const WORDS_PER_CHUNK: usize = 4;

/// A stored answer with a fresh id and timestamp, as a hit is a new response.
pub fn fresh(mut resp: ChatResponse) -> ChatResponse {
    resp.id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    resp.created = unix_now();
    resp
}

/// The chunks a live stream of `resp` would have carried.
pub fn chunks(resp: &ChatResponse, include_usage: bool) -> Vec<ChatChunk> {
    let chunk = |choices: Vec<ChunkChoice>| ChatChunk {
        id: resp.id.clone(),
        object: "chat.completion.chunk".into(),
        created: resp.created,
        model: resp.model.clone(),
        choices,
        usage: None,
        extra: resp.extra.clone(),
    };
    let choice = |index: u32, delta: Delta, finish: Option<String>| ChunkChoice {
        index,
        delta,
        finish_reason: finish,
        extra: Extra::new(),
    };
    let mut out = Vec::new();
    for c in &resp.choices {
        out.push(chunk(vec![choice(
            c.index,
            Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        )]));
        if let Some(Content::Text(_) | Content::Parts(_)) = &c.message.content {
            let text = c.message.text_content();
            for piece in pieces(&text) {
                out.push(chunk(vec![choice(
                    c.index,
                    Delta {
                        content: Some(piece.to_owned()),
                        ..Delta::default()
                    },
                    None,
                )]));
            }
        }
        for (i, call) in c.message.tool_calls.iter().flatten().enumerate() {
            out.push(chunk(vec![choice(
                c.index,
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index: i as u32,
                        id: Some(call.id.clone()),
                        kind: Some(call.kind.clone()),
                        function: Some(FunctionCallDelta {
                            name: Some(call.function.name.clone()),
                            arguments: Some(String::new()),
                        }),
                    }]),
                    ..Delta::default()
                },
                None,
            )]));
            out.push(chunk(vec![choice(
                c.index,
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index: i as u32,
                        id: None,
                        kind: None,
                        function: Some(FunctionCallDelta {
                            name: None,
                            arguments: Some(call.function.arguments.clone()),
                        }),
                    }]),
                    ..Delta::default()
                },
                None,
            )]));
        }
        out.push(chunk(vec![choice(
            c.index,
            Delta::default(),
            Some(c.finish_reason.clone().unwrap_or_else(|| "stop".into())),
        )]));
    }
    if include_usage && let Some(u) = &resp.usage {
        let mut last = chunk(Vec::new());
        last.usage = Some(u.clone());
        out.push(last);
    }
    out
}

/// Splits text into pieces of a few words; concatenated they are the text, byte for byte.
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut in_word = false;
    for (i, ch) in text.char_indices() {
        let space = ch.is_whitespace();
        if in_word && space {
            words += 1;
            if words == WORDS_PER_CHUNK {
                out.push(&text[start..i]);
                start = i;
                words = 0;
            }
        }
        in_word = !space;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// The chunks as a stream, `delay` apart (none when zero).
pub fn stream(chunks: Vec<ChatChunk>, delay: Duration) -> ChatStream {
    Box::pin(async_stream::stream! {
        for (i, c) in chunks.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            yield Ok(Box::new(c.into()));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_rebuild_the_text() {
        for t in [
            "",
            "one",
            "Hello! How can I help you today?",
            "  leading and trailing  ",
            "multi\nline\n\ntext with   gaps and ünïcödé words here",
        ] {
            assert_eq!(pieces(t).concat(), t);
        }
        assert_eq!(pieces("a b c d e f g h i").len(), 3);
    }
}
