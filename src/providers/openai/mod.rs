//! The OpenAI wire format, and every vendor that speaks it (as presets of one adapter).

pub mod responses;
pub mod responses_stream;

use std::collections::BTreeMap;

use serde_json::Value;

use axum::http::Uri;

use super::client::{RequestBuilder, parse_uri};
use super::{Call, ProviderError, Redactor, read_body, read_json, read_json_bytes, send};
use crate::chat::{
    ChatChunk, ChatRequest, ChatStream, Chunk, RawEvent, RequestView, StreamError, StreamOptions,
};
use crate::config::{ProviderConfig, ProviderKind, Secret};

/// A chat request as it goes upstream: the client's, with this attempt's upstream model and
/// stream fields, serialized from borrows (neither the conversation nor the tools are copied).
/// The same keys in the same order as `ChatRequest`'s own encoding (a test holds it to that).
fn outgoing<'a>(
    req: &'a ChatRequest,
    model: &'a str,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
) -> RequestView<'a> {
    RequestView::of(req).for_attempt(model, stream, stream_options)
}

/// An OpenAI-format upstream.
#[derive(Debug)]
pub struct OpenAiProvider {
    client: crate::providers::client::Client,
    kind: ProviderKind,
    base_url: String,
    /// Pre-parsed endpoint URLs (all kinds but Azure, whose URL depends on the model).
    chat_url: Option<Uri>,
    embeddings_url: Option<Uri>,
    api_version: Option<String>,
    headers: BTreeMap<String, Secret>,
    /// Every string from this upstream passes it.
    pub(super) redact: Redactor,
}

impl OpenAiProvider {
    /// A provider for this config entry.
    pub fn new(cfg: &ProviderConfig, client: crate::providers::client::Client) -> Self {
        let fixed = |path: &str| {
            (cfg.kind != ProviderKind::Azure)
                .then(|| parse_uri(&format!("{}/{path}", cfg.base_url)).ok())
                .flatten()
        };
        Self {
            client,
            kind: cfg.kind,
            chat_url: fixed("chat/completions"),
            embeddings_url: fixed("embeddings"),
            base_url: cfg.base_url.clone(),
            api_version: cfg.api_version.clone(),
            headers: cfg.headers.clone(),
            redact: Redactor::for_provider(cfg),
        }
    }

    /// The endpoint URL for `path` (`chat/completions`, `embeddings`).
    fn url(&self, model: &str, path: &str) -> Result<Uri, ProviderError> {
        let fixed = if path == "embeddings" {
            &self.embeddings_url
        } else {
            &self.chat_url
        };
        if let Some(u) = fixed {
            return Ok(u.clone());
        }
        let text = self.url_text(model, path);
        parse_uri(&text).map_err(|e| ProviderError::Status {
            status: 400,
            message: format!("cannot build the upstream URL for model `{model}`: {e}"),
            retry_after: None,
        })
    }

    fn url_text(&self, model: &str, path: &str) -> String {
        if self.kind != ProviderKind::Azure {
            return format!("{}/{path}", self.base_url);
        }
        let version = self.api_version.as_deref().unwrap_or("2024-10-21");
        if self.base_url.contains("/openai/deployments/") {
            format!("{}/{path}?api-version={version}", self.base_url)
        } else {
            format!(
                "{}/openai/deployments/{model}/{path}?api-version={version}",
                self.base_url
            )
        }
    }

    fn post(&self, url: Uri, key: Option<&Secret>) -> RequestBuilder<'_> {
        let mut rb = self.client.post(url);
        if let Some(k) = key {
            rb = if self.kind == ProviderKind::Azure {
                rb.secret_header("api-key", k.expose())
            } else {
                rb.bearer_auth(k.expose())
            };
        }
        for (name, value) in &self.headers {
            rb = rb.secret_header(name.as_str(), value.expose());
        }
        rb
    }

    /// Whether answers and chunks may go to an OpenAI client as they came: OpenAI's own API
    /// (`openai`, `azure`). Another OpenAI-compatible server's are written as the gateway reads
    /// them (absent fields filled in as OpenAI's shape has them).
    fn forwards_as_is(&self) -> bool {
        matches!(self.kind, ProviderKind::OpenAi | ProviderKind::Azure)
    }

    /// Vendors that accept `stream_options.include_usage`; Mistral sends usage unasked.
    fn asks_stream_usage(&self) -> bool {
        !matches!(self.kind, ProviderKind::Mistral)
    }

    /// Non-streaming chat. From OpenAI's own API (`openai`, `azure`) the answer's JSON comes
    /// back too, to be sent on as it came while no stage changes the answer; other
    /// OpenAI-compatible servers' answers are sent as the gateway reads them (absent fields
    /// filled in as OpenAI's shape has them). With `raw` (the client takes OpenAI JSON and no
    /// stage changes the answer) OpenAI's own answer is not decoded in full: it is read for what
    /// the stages need and travels as its bytes.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
        raw: bool,
    ) -> Result<super::Answer, ProviderError> {
        let body = outgoing(req, call.model, None, None);
        let resp = send(
            self.post(self.url(call.model, "chat/completions")?, call.key)
                .json(&body),
            &self.redact,
        )
        .await?;
        let forward = self.forwards_as_is();
        if forward && raw {
            let bytes = read_body(resp, &self.redact).await?;
            let answer = crate::chat::RawAnswer::read(bytes)
                .map_err(|e| ProviderError::Decode(e.to_string()))?;
            return Ok(super::Answer::Raw(Box::new(answer)));
        }
        let (answer, json) = read_json_bytes(resp, &self.redact).await?;
        Ok(super::Answer::Decoded(answer, forward.then_some(json)))
    }

    /// Streaming chat: chunks pass through as canonical chunks (the formats are the same). With
    /// `raw` (the client takes OpenAI's stream and no stage changes the chunks) each chunk is read
    /// only for what the stages read and keeps its JSON, which the client is sent
    /// ([`crate::chat::Chunk`]).
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
        raw: bool,
    ) -> Result<ChatStream, ProviderError> {
        let options = self.asks_stream_usage().then(|| {
            let mut o = req.stream_options.clone().unwrap_or_default();
            o.include_usage = Some(true);
            o
        });
        let body = outgoing(req, call.model, Some(true), options);
        let resp = send(
            self.post(self.url(call.model, "chat/completions")?, call.key)
                .json(&body),
            &self.redact,
        )
        .await?;
        Ok(Box::pin(Chunks {
            events: super::sse_events(resp, &self.redact),
            raw: raw && self.forwards_as_is(),
            heads: crate::chat::Heads::default(),
            done: false,
        }))
    }

    /// Embeddings: the body passes through with the upstream model set.
    pub async fn embed(&self, body: &Value, call: Call<'_>) -> Result<Value, ProviderError> {
        let mut body = body.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("model".into(), Value::String(call.model.to_owned()));
        }
        let resp = send(
            self.post(self.url(call.model, "embeddings")?, call.key)
                .json(&body),
            &self.redact,
        )
        .await?;
        read_json(resp, &self.redact).await
    }
}

/// The chunks of an OpenAI event stream, up to `[DONE]` (see [`decode_event`]). One stream
/// rather than `take_while` and `filter_map` over the events: each is polled for every event.
struct Chunks<S> {
    events: S,
    raw: bool,
    /// What the stream's chunks begin with, read once ([`Chunk::read_raw_in`]).
    heads: crate::chat::Heads,
    /// `[DONE]` came, or the events ended.
    done: bool,
}

impl<S> futures_util::Stream for Chunks<S>
where
    S: futures_util::Stream<Item = Result<sse_stream::Sse, StreamError>> + Unpin,
{
    type Item = crate::chat::StreamItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use futures_util::StreamExt;
        use std::task::Poll;
        let this = &mut *self;
        while !this.done {
            let Some(ev) = std::task::ready!(this.events.poll_next_unpin(cx)) else {
                break;
            };
            if matches!(&ev, Ok(sse) if sse.data.as_deref().map(str::trim) == Some("[DONE]")) {
                break;
            }
            if let Some(item) = decode_event(ev, this.raw.then_some(&mut this.heads)) {
                return Poll::Ready(Some(item));
            }
        }
        this.done = true;
        Poll::Ready(None)
    }
}

/// One SSE event -> a chunk (with `raw`, the stream's heads, kept as its JSON where it can be:
/// see [`Chunk::read_raw_in`]); comments and empty events are skipped, `error` payloads end the
/// stream.
fn decode_event(
    ev: Result<sse_stream::Sse, StreamError>,
    raw: Option<&mut crate::chat::Heads>,
) -> Option<crate::chat::StreamItem> {
    let sse = match ev {
        Ok(sse) => sse,
        Err(e) => return Some(Err(e)),
    };
    let mut data = sse.data?;
    if data.trim().is_empty() {
        return None;
    }
    // The common case in one pass: a chunk, straight into its type. An `error` payload lands in
    // the chunk's unmodelled fields; one that does not fit a chunk at all is read as a value.
    if let Some(heads) = raw.filter(|_| Chunk::one_line(&data)) {
        match Chunk::read_raw_in(data, heads) {
            Ok(RawEvent::Chunk(chunk)) => return Some(Ok(chunk)),
            Ok(RawEvent::Error(err)) => return Some(Err(upstream_error(&err))),
            // Not a chunk: read as a value below, as the full reading would be.
            Err(back) => data = back,
        }
    } else if let Ok(chunk) = serde_json::from_str::<ChatChunk>(&data) {
        return Some(match chunk.extra.get("error") {
            Some(err) => Err(upstream_error(err)),
            None => Ok(Box::new(chunk.into())),
        });
    }
    let value: Value = match serde_json::from_str(&data) {
        Ok(v) => v,
        Err(e) => {
            return Some(Err(StreamError::new(format!(
                "bad chunk from upstream: {e}"
            ))));
        }
    };
    if let Some(err) = value.get("error") {
        return Some(Err(upstream_error(err)));
    }
    Some(
        serde_json::from_value::<ChatChunk>(value)
            .map(|c| Box::new(Chunk::from(c)))
            .map_err(|e| StreamError::new(format!("bad chunk from upstream: {e}"))),
    )
}

/// An `error` payload in the stream -> the error that ends it.
fn upstream_error(err: &Value) -> StreamError {
    let msg = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("upstream error");
    StreamError::new(msg.to_owned())
}

#[cfg(test)]
mod tests;
