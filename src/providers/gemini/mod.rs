//! Gemini's native API (`generateContent`, `streamGenerateContent?alt=sse`,
//! `batchEmbedContents`): wire types, translation both ways, and the provider.

pub mod ingress;
pub mod translate;
pub mod wire;

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{Call, ProviderError, Redactor, read_json, send};
use crate::chat::{ChatRequest, ChatResponse, ChatStream, StreamError};
use crate::config::{ProviderConfig, Secret};

/// A Gemini upstream (Google AI Studio).
#[derive(Debug)]
pub struct GeminiProvider {
    client: crate::providers::client::Client,
    /// `https://generativelanguage.googleapis.com/v1beta` (the API version included).
    prefix: String,
    headers: BTreeMap<String, Secret>,
    /// Every string from this upstream passes it.
    pub(super) redact: Redactor,
}

/// The URL prefix for a Gemini `base_url`: as the Google GenAI SDK takes it (the host), or with
/// the API version already on it (`.../v1beta`, `.../v1`).
pub fn api_prefix(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let versioned = base
        .rsplit('/')
        .next()
        .is_some_and(|last| last.starts_with("v1"));
    if versioned {
        base.to_owned()
    } else {
        format!("{base}/v1beta")
    }
}

impl GeminiProvider {
    /// A provider for this config entry.
    pub fn new(cfg: &ProviderConfig, client: crate::providers::client::Client) -> Self {
        Self {
            client,
            prefix: api_prefix(&cfg.base_url),
            headers: cfg.headers.clone(),
            redact: Redactor::for_provider(cfg),
        }
    }

    fn post(
        &self,
        model: &str,
        action: &str,
        key: Option<&Secret>,
    ) -> crate::providers::client::RequestBuilder<'_> {
        // Model names are path segments; `models/` given by the user is not doubled.
        let model = model.trim_start_matches("models/");
        let mut rb = self
            .client
            .post(format!("{}/models/{model}:{action}", self.prefix));
        if let Some(k) = key {
            rb = rb.secret_header("x-goog-api-key", k.expose());
        }
        for (name, value) in &self.headers {
            rb = rb.secret_header(name.as_str(), value.expose());
        }
        rb
    }

    /// Non-streaming chat.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let rb = self.post(call.model, "generateContent", call.key);
        generate(rb, req, call.model, &self.redact).await
    }

    /// Streaming chat: each SSE event is a partial `GenerateContentResponse`.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
    ) -> Result<ChatStream, ProviderError> {
        let rb = self.post(call.model, "streamGenerateContent?alt=sse", call.key);
        generate_stream(rb, req, call.model, &self.redact).await
    }

    /// OpenAI-shaped embeddings through `batchEmbedContents` (one request per input string).
    pub async fn embed(&self, body: &Value, call: Call<'_>) -> Result<Value, ProviderError> {
        let bad = |m: &str| ProviderError::Status {
            status: 400,
            message: m.to_owned(),
            retry_after: None,
        };
        let inputs: Vec<&str> = match body.get("input") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| {
                        bad("`input` must be a string or a list of strings for Gemini embeddings")
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad("`input` must be a string or a list of strings")),
        };
        let model = call.model.trim_start_matches("models/");
        let dims = body.get("dimensions").and_then(Value::as_u64);
        let requests: Vec<Value> = inputs
            .iter()
            .map(|t| {
                let mut r = json!({"model": format!("models/{model}"), "content": {"parts": [{"text": t}]}});
                if let Some(d) = dims {
                    r["outputDimensionality"] = json!(d);
                }
                r
            })
            .collect();
        let rb = self
            .post(call.model, "batchEmbedContents", call.key)
            .json(&json!({"requests": requests}));
        let resp = send(rb, &self.redact).await?;
        let v: Value = read_json(resp, &self.redact).await?;
        let Some(list) = v.get("embeddings").and_then(Value::as_array) else {
            return Err(ProviderError::Decode(
                "no `embeddings` in the answer".into(),
            ));
        };
        let data: Vec<Value> = list
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.get("values").cloned().unwrap_or(json!([]))}))
            .collect();
        Ok(json!({
            "object": "list",
            "data": data,
            "model": model,
            // Gemini does not count embedding tokens in this answer.
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }))
    }
}

fn build(req: &ChatRequest) -> Result<wire::GenerateRequest, ProviderError> {
    translate::to_generate_request(req).map_err(|e| ProviderError::Status {
        status: 400,
        message: e.0,
        retry_after: None,
    })
}

/// `generateContent` of `req` through `rb` (a POST to the method's URL, authenticated): Google AI
/// Studio and Vertex AI alike.
pub(crate) async fn generate(
    rb: crate::providers::client::RequestBuilder<'_>,
    req: &ChatRequest,
    model: &str,
    redact: &Redactor,
) -> Result<ChatResponse, ProviderError> {
    let body = build(req)?;
    let resp = send(rb.json(&body), redact).await?;
    let r: wire::GenerateResponse = read_json(resp, redact).await?;
    Ok(translate::from_generate_response(r, model))
}

/// `streamGenerateContent?alt=sse` of `req` through `rb`, decoded into canonical chunks.
pub(crate) async fn generate_stream(
    rb: crate::providers::client::RequestBuilder<'_>,
    req: &ChatRequest,
    model: &str,
    redact: &Redactor,
) -> Result<ChatStream, ProviderError> {
    let body = build(req)?;
    let resp = send(rb.json(&body), redact).await?;
    let mut decoder = translate::StreamDecoder::new(model);
    let chunks = super::sse_events(resp, redact).flat_map(move |ev| {
        let out: Vec<Result<_, StreamError>> = match ev.and_then(parse_event) {
            Ok(None) => Vec::new(),
            Ok(Some(r)) => decoder
                .push(r)
                .into_iter()
                .map(|c| Ok(Box::new(c.into())))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(out)
    });
    Ok(Box::pin(chunks))
}

fn parse_event(sse: sse_stream::Sse) -> Result<Option<wire::GenerateResponse>, StreamError> {
    let Some(data) = sse.data.filter(|d| !d.trim().is_empty()) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(&data)
        .map_err(|e| StreamError::new(format!("bad event from upstream: {e}")))?;
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("upstream error");
        return Err(StreamError::new(msg.to_owned()));
    }
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| StreamError::new(format!("bad event from upstream: {e}")))
}

#[cfg(test)]
mod tests;
