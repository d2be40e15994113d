//! Canonical chunks -> the Responses API's stream events, in the order the official SDKs check:
//! `response.created`, `response.in_progress`, then per output item `output_item.added`,
//! (`content_part.added`, `output_text.delta`..., `output_text.done`, `content_part.done`) or
//! (`function_call_arguments.delta`..., `.done`), `output_item.done`, and last
//! `response.completed` (`response.incomplete` when cut by a limit, `response.failed` on error).
//! Every event carries `sequence_number`; item ids stay the same from `added` to `completed`.

use serde_json::{Value, json};

use super::responses::{Echo, Outcome, call_item_out, message_item_out, text_part_out};
use crate::chat::{
    ChatChunk, Content, Extra, FunctionCall, Message, Role, ToolCall, Usage, new_id,
};

/// One event: its `type` (also the SSE event name) and its JSON.
pub type Event = (&'static str, Value);

#[derive(Debug)]
enum Item {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        ordinal: u32,
        call: ToolCall,
    },
}

impl Item {
    fn value(&self, status: &str) -> Value {
        match self {
            Item::Text { id, text } => message_item_out(id, text, status),
            Item::Call { id, call, .. } => call_item_out(id, call, status),
        }
    }
}

/// Turns canonical chunks into Responses events for one response.
#[derive(Debug)]
pub struct StreamEncoder {
    echo: Echo,
    model: String,
    seq: u64,
    started: bool,
    items: Vec<Item>,
    /// The item receiving deltas, by position in `items`.
    open: Option<usize>,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    /// An encoder for the response `echo` describes.
    pub fn new(echo: Echo) -> Self {
        Self {
            echo,
            model: String::new(),
            seq: 0,
            started: false,
            items: Vec::new(),
            open: None,
            finish: None,
            usage: None,
        }
    }

    fn emit(&mut self, out: &mut Vec<Event>, kind: &'static str, mut body: Value) {
        if let Some(o) = body.as_object_mut() {
            o.insert("type".into(), Value::from(kind));
            o.insert("sequence_number".into(), Value::from(self.seq));
        }
        self.seq += 1;
        out.push((kind, body));
    }

    fn start(&mut self, model: &str, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        self.model = model.to_owned();
        let r = self.echo.response(&self.model, &Outcome::in_progress());
        self.emit(out, "response.created", json!({"response": r}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    /// Closes the open item: its done events.
    fn close(&mut self, out: &mut Vec<Event>) {
        let Some(index) = self.open.take() else {
            return;
        };
        let Some(item) = self.items.get(index) else {
            return;
        };
        let done = item.value("completed");
        let events: Vec<(&'static str, Value)> = match item {
            Item::Text { id, text } => vec![
                (
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                ),
                (
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part_out(text)}),
                ),
            ],
            Item::Call { id, call, .. } => vec![(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "name": call.function.name, "arguments": call.function.arguments}),
            )],
        };
        for (kind, body) in events {
            self.emit(out, kind, body);
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
    }

    /// Opens a new item (closing the one before) and announces it.
    fn open_item(&mut self, item: Item, out: &mut Vec<Event>) -> usize {
        self.close(out);
        let index = self.items.len();
        let added = item.value("in_progress");
        let text_id = match &item {
            Item::Text { id, .. } => Some(id.clone()),
            Item::Call { .. } => None,
        };
        let mut added = added;
        if text_id.is_some() {
            // The message is announced empty; its text part follows.
            added["content"] = json!([]);
        }
        self.items.push(item);
        self.open = Some(index);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        if let Some(id) = text_id {
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part_out("")}),
            );
        }
        index
    }

    /// Feeds one canonical chunk; returns the events it produces.
    pub fn push(&mut self, chunk: ChatChunk) -> Vec<Event> {
        let mut out = Vec::new();
        self.start(&chunk.model, &mut out);
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return out;
        };
        if let Some(delta) = choice.delta.content.filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some(i) if matches!(self.items.get(i), Some(Item::Text { .. })) => i,
                _ => self.open_item(
                    Item::Text {
                        id: new_id("msg"),
                        text: String::new(),
                    },
                    &mut out,
                ),
            };
            if let Some(Item::Text { id, text }) = self.items.get_mut(index) {
                text.push_str(&delta);
                let body = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []});
                self.emit(&mut out, "response.output_text.delta", body);
            }
        }
        for d in choice.delta.tool_calls.unwrap_or_default() {
            let known = self
                .items
                .iter()
                .position(|it| matches!(it, Item::Call { ordinal, .. } if *ordinal == d.index));
            let f = d.function.unwrap_or_default();
            let index = match known {
                Some(i) => i,
                None => {
                    let call = ToolCall {
                        id: d.id.unwrap_or_else(|| new_id("call")),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: f.name.clone().unwrap_or_default(),
                            arguments: String::new(),
                        },
                    };
                    let item = Item::Call {
                        id: new_id("fc"),
                        ordinal: d.index,
                        call,
                    };
                    self.open_item(item, &mut out)
                }
            };
            let Some(args) = f.arguments.filter(|a| !a.is_empty()) else {
                continue;
            };
            if let Some(Item::Call { id, call, .. }) = self.items.get_mut(index) {
                call.function.arguments.push_str(&args);
                let body = json!({"item_id": id, "output_index": index, "delta": args});
                self.emit(&mut out, "response.function_call_arguments.delta", body);
            }
        }
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
        out
    }

    /// Ends the response: the open item's done events, then `response.completed` (or
    /// `response.incomplete`) with the whole response, which is also returned (to be stored).
    pub fn finish(&mut self, model: &str) -> (Vec<Event>, Value) {
        let mut out = Vec::new();
        self.start(model, &mut out);
        self.close(&mut out);
        let output = self.items.iter().map(|i| i.value("completed")).collect();
        let outcome = Outcome::finished(self.finish.as_deref(), output, self.usage.clone());
        let kind = if outcome.status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        let r = self.echo.response(&self.model, &outcome);
        self.emit(&mut out, kind, json!({"response": r}));
        (out, r)
    }

    /// Ends the response as failed (the upstream broke mid-stream): `response.failed`.
    pub fn fail(&mut self, model: &str, message: &str) -> Vec<Event> {
        let mut out = Vec::new();
        self.start(model, &mut out);
        let output = self.items.iter().map(|i| i.value("incomplete")).collect();
        let outcome = Outcome {
            status: "failed",
            error: Some(json!({"code": "server_error", "message": message})),
            output,
            usage: self.usage.clone(),
            ..Outcome::default()
        };
        let r = self.echo.response(&self.model, &outcome);
        self.emit(&mut out, "response.failed", json!({"response": r}));
        out
    }

    /// The assistant's turn as streamed so far (text and tool calls), for the stored conversation.
    pub fn assistant_turn(&self) -> Message {
        let mut text = String::new();
        let mut calls = Vec::new();
        for item in &self.items {
            match item {
                Item::Text { text: t, .. } => text.push_str(t),
                Item::Call { call, .. } => calls.push(call.clone()),
            }
        }
        Message {
            role: Role::Assistant,
            content: (!text.is_empty()).then(|| Content::Text(text)),
            name: None,
            tool_calls: (!calls.is_empty()).then_some(calls),
            tool_call_id: None,
            extra: Extra::new(),
        }
    }
}
