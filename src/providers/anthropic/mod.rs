//! The Anthropic Messages API: wire types, translation, and the provider.

pub mod translate;
pub mod wire;

use std::collections::BTreeMap;

use futures_util::StreamExt;

use super::{Call, ProviderError, Redactor, read_json, send};
use crate::chat::{ChatRequest, ChatResponse, ChatStream, StreamError};
use crate::config::{ProviderConfig, Secret};

/// The API version header value sent upstream.
pub const API_VERSION: &str = "2023-06-01";

/// An Anthropic upstream.
#[derive(Debug)]
pub struct AnthropicProvider {
    client: crate::providers::client::Client,
    /// `{base}/v1/messages`, parsed once (a URL that does not parse fails each request).
    url: Result<axum::http::Uri, String>,
    headers: BTreeMap<String, Secret>,
    /// Every string from this upstream passes it.
    pub(super) redact: Redactor,
}

impl AnthropicProvider {
    /// A provider for this config entry (`base_url` as the Anthropic SDK takes it, without `/v1`).
    pub fn new(cfg: &ProviderConfig, client: crate::providers::client::Client) -> Self {
        let base = cfg.base_url.trim_end_matches("/v1");
        Self {
            client,
            url: crate::providers::client::parse_uri(&format!("{base}/v1/messages")),
            headers: cfg.headers.clone(),
            redact: Redactor::for_provider(cfg),
        }
    }

    fn post(&self, key: Option<&Secret>) -> crate::providers::client::RequestBuilder<'_> {
        let mut rb = self
            .client
            .post(self.url.clone())
            .header("anthropic-version", API_VERSION);
        if let Some(k) = key {
            rb = rb.secret_header("x-api-key", k.expose());
        }
        for (name, value) in &self.headers {
            rb = rb.secret_header(name.as_str(), value.expose());
        }
        rb
    }

    pub(crate) fn build(
        req: &ChatRequest,
        model: &str,
    ) -> Result<wire::MessagesRequest, ProviderError> {
        translate::to_messages_request(req, model).map_err(|e| ProviderError::Status {
            status: 400,
            message: e.0,
            retry_after: None,
        })
    }

    /// Non-streaming chat.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let body = Self::build(req, call.model)?;
        messages(self.post(call.key).json(&body), &self.redact).await
    }

    /// Streaming chat: Anthropic events decoded into canonical chunks.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
    ) -> Result<ChatStream, ProviderError> {
        let mut body = Self::build(req, call.model)?;
        body.stream = Some(true);
        messages_stream(self.post(call.key).json(&body), &self.redact).await
    }
}

/// Sends a Messages request (`rb` carries the body and authentication: the Anthropic API, or
/// Vertex AI's `rawPredict`) and reads the answer.
pub(crate) async fn messages(
    rb: crate::providers::client::RequestBuilder<'_>,
    redact: &Redactor,
) -> Result<ChatResponse, ProviderError> {
    let resp = send(rb, redact).await?;
    let r: wire::MessagesResponse = read_json(resp, redact).await?;
    Ok(translate::from_messages_response(r))
}

/// Sends a streaming Messages request and decodes its events into canonical chunks.
pub(crate) async fn messages_stream(
    rb: crate::providers::client::RequestBuilder<'_>,
    redact: &Redactor,
) -> Result<ChatStream, ProviderError> {
    let resp = send(rb, redact).await?;
    let mut decoder = translate::StreamDecoder::default();
    let chunks = super::sse_events(resp, redact).flat_map(move |ev| {
        let out: Vec<Result<_, StreamError>> = match ev.and_then(parse_event) {
            Ok(None) => Vec::new(),
            Ok(Some(ev)) => match decoder.push(ev) {
                Ok(chunks) => chunks.into_iter().map(|c| Ok(Box::new(c.into()))).collect(),
                Err(msg) => vec![Err(StreamError::new(msg))],
            },
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(out)
    });
    Ok(Box::pin(chunks))
}

fn parse_event(sse: sse_stream::Sse) -> Result<Option<wire::StreamEvent>, StreamError> {
    let Some(data) = sse.data.filter(|d| !d.trim().is_empty()) else {
        return Ok(None);
    };
    match serde_json::from_str(&data) {
        Ok(ev) => Ok(Some(ev)),
        // Event types added by Anthropic after this gateway was written are skipped, not fatal.
        Err(_)
            if sse
                .event
                .as_deref()
                .is_some_and(|e| !KNOWN_EVENTS.contains(&e)) =>
        {
            Ok(None)
        }
        Err(e) => Err(StreamError::new(format!("bad event from upstream: {e}"))),
    }
}

const KNOWN_EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

#[cfg(test)]
mod tests;
