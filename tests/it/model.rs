//! A scripted model behind a mock provider: it speaks OpenAI's chat completions and Anthropic's
//! messages wire formats (JSON and SSE, with tool calls), and decides each turn with a `Brain`
//! that reads the conversation. Used by the MCP tool-loop tests, where the answer depends on
//! tool results the gateway feeds back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};

/// What the model sees, the same for both wire formats.
#[derive(Debug, Clone, Default)]
pub struct Conv {
    /// Names of the offered tools.
    pub tools: Vec<String>,
    /// The last user message's text.
    pub user: String,
    /// Tool results since the last user message, in order (text).
    pub results: Vec<String>,
    /// `tool_choice` as sent (OpenAI shape; Anthropic's `{"type":"none"}` becomes `"none"`).
    pub tool_choice: Option<String>,
}

/// One turn of the model.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Text (may be empty).
    pub text: String,
    /// Tool calls: name and arguments.
    pub calls: Vec<(String, Value)>,
}

impl Turn {
    /// A plain answer.
    pub fn say(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            calls: Vec::new(),
        }
    }
    /// Tool calls.
    pub fn call(calls: &[(&str, Value)]) -> Self {
        Self {
            text: String::new(),
            calls: calls
                .iter()
                .map(|(n, a)| ((*n).to_owned(), a.clone()))
                .collect(),
        }
    }
}

/// Decides a turn.
pub type Brain = Arc<dyn Fn(&Conv) -> Turn + Send + Sync>;

struct Inner {
    brain: Brain,
    seen: Mutex<Vec<Value>>,
    delay: Duration,
}

/// The running mock.
pub struct Model {
    /// Bound address.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

static IDS: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    IDS.fetch_add(1, Ordering::Relaxed)
}

impl Model {
    /// Starts the mock with a brain.
    pub async fn start(brain: impl Fn(&Conv) -> Turn + Send + Sync + 'static) -> Self {
        Self::start_with_delay(brain, Duration::ZERO).await
    }

    /// Starts the mock; every answer waits `delay` first.
    pub async fn start_with_delay(
        brain: impl Fn(&Conv) -> Turn + Send + Sync + 'static,
        delay: Duration,
    ) -> Self {
        let inner = Arc::new(Inner {
            brain: Arc::new(brain),
            seen: Mutex::new(Vec::new()),
            delay,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(inner.clone());
        let addr = crate::mock::serve(app).await;
        Self { addr, inner }
    }

    /// Base URL for an OpenAI-compatible provider.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for an Anthropic provider.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request body received, in order.
    pub fn seen(&self) -> Vec<Value> {
        self.inner.seen.lock().unwrap().clone()
    }
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn conv_openai(body: &Value) -> Conv {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let last_user = msgs.iter().rposition(|m| m["role"] == "user").unwrap_or(0);
    Conv {
        tools: body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
            .collect(),
        user: msgs
            .get(last_user)
            .map(|m| text_of(&m["content"]))
            .unwrap_or_default(),
        results: msgs
            .iter()
            .skip(last_user)
            .filter(|m| m["role"] == "tool")
            .map(|m| text_of(&m["content"]))
            .collect(),
        tool_choice: body["tool_choice"].as_str().map(str::to_owned),
    }
}

fn conv_anthropic(body: &Value) -> Conv {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    // The last user message that is not only tool results.
    let is_result = |m: &Value| {
        m["content"]
            .as_array()
            .is_some_and(|c| c.iter().all(|b| b["type"] == "tool_result"))
    };
    let last_user = msgs
        .iter()
        .rposition(|m| m["role"] == "user" && !is_result(m))
        .unwrap_or(0);
    let results = msgs
        .iter()
        .skip(last_user + 1)
        .filter(|m| m["role"] == "user")
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .map(|b| text_of(&b["content"]))
        .collect();
    Conv {
        tools: body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect(),
        user: msgs
            .get(last_user)
            .map(|m| text_of(&m["content"]))
            .unwrap_or_default(),
        results,
        tool_choice: body["tool_choice"]["type"].as_str().map(str::to_owned),
    }
}

fn sse(frames: Vec<String>) -> Response {
    let stream = futures_util::stream::iter(
        frames
            .into_iter()
            .map(|f| Ok::<_, std::convert::Infallible>(Bytes::from(f))),
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn openai(State(inner): State<Arc<Inner>>, body: axum::Json<Value>) -> Response {
    let body = body.0;
    inner.seen.lock().unwrap().push(body.clone());
    tokio::time::sleep(inner.delay).await;
    let turn = (inner.brain)(&conv_openai(&body));
    let id = format!("chatcmpl-{}", next_id());
    let model = body["model"].as_str().unwrap_or("mock").to_owned();
    let calls: Vec<Value> = turn
        .calls
        .iter()
        .map(|(n, a)| {
            json!({"id": format!("call_{}", next_id()), "type": "function",
                   "function": {"name": n, "arguments": a.to_string()}})
        })
        .collect();
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if body["stream"] != true {
        let content = if turn.text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(turn.text)
        };
        let mut message = json!({"role": "assistant", "content": content});
        if !calls.is_empty() {
            message["tool_calls"] = json!(calls);
        }
        return axum::Json(json!({
            "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut frames = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for word in turn.text.split_inclusive(' ') {
        frames.push(chunk(json!({"content": word}), Value::Null));
    }
    for (i, c) in calls.iter().enumerate() {
        frames.push(chunk(
            json!({"tool_calls": [{"index": i, "id": c["id"], "type": "function",
                    "function": {"name": c["function"]["name"], "arguments": ""}}]}),
            Value::Null,
        ));
        let args = c["function"]["arguments"].as_str().unwrap_or_default();
        let (a, b) = args.split_at(args.len() / 2);
        for piece in [a, b] {
            frames.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    frames.push(chunk(json!({}), json!(finish)));
    if body["stream_options"]["include_usage"] == true {
        frames.push(format!(
            "data: {}\n\n",
            json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000,
                   "model": model, "choices": [], "usage": usage})
        ));
    }
    frames.push("data: [DONE]\n\n".into());
    sse(frames)
}

async fn anthropic(State(inner): State<Arc<Inner>>, body: axum::Json<Value>) -> Response {
    let body = body.0;
    inner.seen.lock().unwrap().push(body.clone());
    tokio::time::sleep(inner.delay).await;
    let turn = (inner.brain)(&conv_anthropic(&body));
    let id = format!("msg_{}", next_id());
    let model = body["model"].as_str().unwrap_or("mock").to_owned();
    let mut blocks: Vec<Value> = Vec::new();
    if !turn.text.is_empty() {
        blocks.push(json!({"type": "text", "text": turn.text}));
    }
    for (n, a) in &turn.calls {
        blocks.push(
            json!({"type": "tool_use", "id": format!("toolu_{}", next_id()), "name": n, "input": a}),
        );
    }
    let stop = if turn.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    if body["stream"] != true {
        return axum::Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }))
        .into_response();
    }
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut frames = vec![ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
               "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    )];
    for (i, b) in blocks.iter().enumerate() {
        if b["type"] == "text" {
            frames.push(ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
            ));
            for word in turn.text.split_inclusive(' ') {
                frames.push(ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": word}}),
                ));
            }
        } else {
            frames.push(ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": i, "content_block":
                       {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}),
            ));
            frames.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i, "delta":
                       {"type": "input_json_delta", "partial_json": b["input"].to_string()}}),
            ));
        }
        frames.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    frames.push(ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": 5}}),
    ));
    frames.push(ev("message_stop", json!({"type": "message_stop"})));
    sse(frames)
}
