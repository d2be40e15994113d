//! The one stream type: canonical chunks, and folding a stream back into a response.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};

use super::{
    ChatChunk, ChatResponse, Choice, Content, Extra, FunctionCall, Message, Role, ToolCall,
    ToolCallDelta, Usage,
};

/// An upstream failure after the stream started; sent to the client as an in-stream error event.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{message}")]
pub struct StreamError {
    /// What went wrong, without secrets.
    pub message: String,
}

impl StreamError {
    /// A stream error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// A stream of canonical chunks.
pub type ChatStream = Pin<Box<dyn Stream<Item = StreamItem> + Send>>;

/// One item of a [`ChatStream`]: a chunk, boxed (a chunk is about 300 bytes and each layer of the
/// stream moves its items; a box moves as a pointer), or the error that ended the stream.
pub type StreamItem = Result<Box<super::Chunk>, StreamError>;

/// Folds a whole stream into the response a non-streaming request would have received.
pub async fn collect_stream(mut stream: ChatStream) -> Result<ChatResponse, StreamError> {
    let mut acc = StreamCollector::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        acc.push(&chunk);
    }
    Ok(acc.finish())
}

/// The highest choice or tool-call index a folded stream keeps. Indexes come from the upstream;
/// one of 4,294,967,295 would otherwise make the fold allocate that many slots (a crash of the
/// whole gateway on one bad chunk). Parts beyond it are left out of the folded answer (the client's
/// own stream still carries them).
const MAX_STREAM_INDEX: usize = 1024;

/// Adds a streamed tool-call delta to the calls folded so far: the call at the delta's index
/// (created empty when new) gets its id, and the name and argument pieces appended. A delta whose
/// index is beyond [`MAX_STREAM_INDEX`] is left out.
pub fn merge_call_delta(calls: &mut Vec<ToolCall>, d: &ToolCallDelta) {
    let i = d.index as usize;
    if i > MAX_STREAM_INDEX {
        return;
    }
    while calls.len() <= i {
        calls.push(ToolCall {
            id: String::new(),
            kind: "function".into(),
            function: FunctionCall {
                name: String::new(),
                arguments: String::new(),
            },
        });
    }
    let Some(call) = calls.get_mut(i) else {
        return;
    };
    if let Some(id) = &d.id {
        call.id.clone_from(id);
    }
    if let Some(f) = &d.function {
        if let Some(n) = &f.name {
            call.function.name.push_str(n);
        }
        if let Some(a) = &f.arguments {
            call.function.arguments.push_str(a);
        }
    }
}

/// Folds chunks, one at a time, into the response a non-streaming request would have received.
#[derive(Default)]
pub struct StreamCollector {
    id: String,
    model: String,
    created: u64,
    usage: Option<Usage>,
    choices: Vec<ChoiceAcc>,
}

#[derive(Default)]
struct ChoiceAcc {
    text: String,
    has_text: bool,
    calls: Vec<ToolCall>,
    finish: Option<String>,
}

impl StreamCollector {
    /// Adds a chunk (read, not taken: the stream passes the chunk on).
    pub fn push(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.model.clone_from(&chunk.model);
            self.created = chunk.created;
        }
        if chunk.usage.is_some() {
            self.usage.clone_from(&chunk.usage);
        }
        for c in &chunk.choices {
            let i = c.index as usize;
            if i > MAX_STREAM_INDEX {
                continue;
            }
            if self.choices.len() <= i {
                self.choices.resize_with(i + 1, ChoiceAcc::default);
            }
            let Some(slot) = self.choices.get_mut(i) else {
                continue;
            };
            if let Some(t) = &c.delta.content {
                slot.has_text = true;
                slot.text.push_str(t);
            }
            for d in c.delta.tool_calls.iter().flatten() {
                merge_call_delta(&mut slot.calls, d);
            }
            if c.finish_reason.is_some() {
                slot.finish.clone_from(&c.finish_reason);
            }
        }
    }

    /// The response so far.
    pub fn finish(self) -> ChatResponse {
        let choices = self
            .choices
            .into_iter()
            .enumerate()
            .map(|(i, c)| Choice {
                index: i as u32,
                message: Message {
                    role: Role::Assistant,
                    content: (c.has_text || c.calls.is_empty()).then_some(Content::Text(c.text)),
                    name: None,
                    tool_calls: (!c.calls.is_empty()).then_some(c.calls),
                    tool_call_id: None,
                    extra: Extra::new(),
                },
                finish_reason: c.finish,
                extra: Extra::new(),
            })
            .collect();
        ChatResponse {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices,
            usage: self.usage,
            extra: Extra::new(),
        }
    }
}
