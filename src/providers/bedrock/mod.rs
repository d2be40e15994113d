//! Amazon Bedrock's Converse and ConverseStream APIs: SigV4 signing (`aws-sigv4`), the binary
//! event stream (`aws-smithy-eventstream`), translation to and from the canonical types.

pub mod translate;

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use bytes::{Buf, BytesMut};
use futures_util::StreamExt;
use serde_json::Value;

use super::{Call, ProviderError, Redactor, read_json, send};
use crate::chat::{ChatRequest, ChatResponse, ChatStream, StreamError};
use crate::config::{AwsConfig, ProviderConfig, Secret};

/// The SigV4 service name of the Bedrock runtime.
const SERVICE: &str = "bedrock";

/// A Bedrock upstream.
#[derive(Debug)]
pub struct BedrockProvider {
    client: crate::providers::client::Client,
    base_url: String,
    aws: Option<AwsConfig>,
    headers: BTreeMap<String, Secret>,
    /// Every string from this upstream passes it.
    pub(super) redact: Redactor,
}

/// Characters a model id keeps in a URL path; everything else (`:` in versioned ids, `/` in ARNs)
/// is percent-encoded, as the AWS SDKs do.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl BedrockProvider {
    /// A provider for this config entry.
    pub fn new(cfg: &ProviderConfig, client: crate::providers::client::Client) -> Self {
        Self {
            client,
            base_url: cfg.base_url.clone(),
            aws: cfg.aws.clone(),
            headers: cfg.headers.clone(),
            redact: Redactor::for_provider(cfg),
        }
    }

    fn url(&self, model: &str, action: &str) -> String {
        let id = percent_encoding::utf8_percent_encode(model, PATH_SEGMENT);
        format!("{}/model/{id}/{action}", self.base_url)
    }

    /// A POST of `body` to `url`: with a Bedrock API key as a bearer token when the attempt has
    /// one, else signed with SigV4 by the configured credentials.
    fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        key: Option<&Secret>,
    ) -> Result<crate::providers::client::RequestBuilder<'_>, ProviderError> {
        let mut rb = self
            .client
            .post(url)
            .header(axum::http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            rb = rb.secret_header(name.as_str(), value.expose());
        }
        if let Some(k) = key {
            return Ok(rb.bearer_auth(k.expose()).body(body));
        }
        let aws = self.aws.as_ref();
        let Some((id, secret)) = aws.and_then(|a| a.credentials.as_ref()) else {
            return Err(ProviderError::Status {
                status: 401,
                message: "no AWS credentials or Bedrock API key configured".into(),
                retry_after: None,
            });
        };
        let identity = aws_credential_types::Credentials::new(
            id.expose(),
            secret.expose(),
            aws.and_then(|a| a.session_token.as_ref())
                .map(|t| t.expose().to_owned()),
            None,
            "switchyard-config",
        )
        .into();
        let region = aws.map_or("us-east-1", |a| a.region.as_str());
        let signing_error = |e: &dyn std::fmt::Display| ProviderError::Status {
            status: 400,
            message: format!("cannot sign the Bedrock request: {e}"),
            retry_after: None,
        };
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing_error(&e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            [("content-type", "application/json")].into_iter(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| signing_error(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing_error(&e))?
            .into_parts();
        // The signature and the session token are credentials.
        for (name, value) in instructions.headers() {
            rb = rb.secret_header(name, value);
        }
        Ok(rb.body(body))
    }

    fn body(req: &ChatRequest) -> Result<Vec<u8>, ProviderError> {
        let v = translate::to_converse_request(req).map_err(|e| ProviderError::Status {
            status: 400,
            message: e.0,
            retry_after: None,
        })?;
        serde_json::to_vec(&v).map_err(|e| ProviderError::Decode(e.to_string()))
    }

    /// Non-streaming chat (`Converse`).
    pub async fn chat(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        let rb = self.post(
            &self.url(call.model, "converse"),
            Self::body(req)?,
            call.key,
        )?;
        let resp = send(rb, &self.redact).await?;
        let v: Value = read_json(resp, &self.redact).await?;
        Ok(translate::from_converse_response(&v, call.model))
    }

    /// Streaming chat (`ConverseStream`): AWS event-stream frames decoded into canonical chunks.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
    ) -> Result<ChatStream, ProviderError> {
        let url = self.url(call.model, "converse-stream");
        let rb = self.post(&url, Self::body(req)?, call.key)?;
        let resp = send(rb, &self.redact).await?;
        let redact = self.redact.clone();
        let mut decoder = translate::StreamDecoder::new(call.model);
        let mut bytes = resp.bytes_stream();
        let stream = async_stream::stream! {
            let mut buf = BytesMut::new();
            let mut frames = MessageFrameDecoder::new();
            while let Some(piece) = bytes.next().await {
                let piece = match piece {
                    Ok(p) => p,
                    Err(e) => {
                        yield Err(StreamError::new(format!("upstream stream broke: {e}")));
                        return;
                    }
                };
                buf.extend_from_slice(&piece);
                loop {
                    let frame = match frames.decode_frame(&mut buf) {
                        Ok(DecodedFrame::Complete(m)) => m,
                        Ok(DecodedFrame::Incomplete) => break,
                        Err(e) => {
                            yield Err(StreamError::new(format!("bad event-stream frame from upstream: {e}")));
                            return;
                        }
                    };
                    match event_of(&frame, &redact) {
                        Ok(Some((event, payload))) => {
                            for chunk in decoder.push(&event, &payload) {
                                yield Ok(Box::new(chunk.into()));
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    }
                }
            }
            if buf.has_remaining() {
                yield Err(StreamError::new("upstream stream ended inside an event-stream frame"));
            }
        };
        Ok(Box::pin(stream))
    }
}

/// The input strings of an OpenAI embeddings body.
fn embedding_inputs(body: &Value) -> Result<Vec<String>, ProviderError> {
    let bad = || ProviderError::Status {
        status: 400,
        message: "`input` must be a string or a list of strings for Bedrock embeddings".into(),
        retry_after: None,
    };
    match body.get("input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

impl BedrockProvider {
    /// One `InvokeModel` call with a JSON payload.
    async fn invoke(
        &self,
        url: &str,
        payload: Value,
        key: Option<&Secret>,
    ) -> Result<Value, ProviderError> {
        let bytes =
            serde_json::to_vec(&payload).map_err(|e| ProviderError::Decode(e.to_string()))?;
        let resp = send(self.post(url, bytes, key)?, &self.redact).await?;
        read_json(resp, &self.redact).await
    }

    /// OpenAI-shaped embeddings through `InvokeModel`: Cohere models (`cohere.embed-*`) take the
    /// inputs in one call, Titan and other models one call per input.
    pub async fn embed(&self, body: &Value, call: Call<'_>) -> Result<Value, ProviderError> {
        let inputs = embedding_inputs(body)?;
        let url = self.url(call.model, "invoke");
        let dims = body.get("dimensions").and_then(Value::as_u64);
        let mut vectors: Vec<Value> = Vec::with_capacity(inputs.len());
        let mut tokens = 0u64;
        let invoke = |payload: Value| self.invoke(&url, payload, call.key);
        if call.model.contains("cohere.embed") {
            let v = invoke(serde_json::json!({"texts": inputs, "input_type": "search_document"}))
                .await?;
            let Some(list) = v.get("embeddings").and_then(Value::as_array) else {
                return Err(ProviderError::Decode(
                    "no `embeddings` in the answer".into(),
                ));
            };
            vectors.extend(list.iter().cloned());
        } else {
            for text in &inputs {
                let mut payload = serde_json::json!({"inputText": text});
                if let Some(d) = dims {
                    payload["dimensions"] = d.into();
                }
                let v = invoke(payload).await?;
                let Some(e) = v.get("embedding") else {
                    return Err(ProviderError::Decode("no `embedding` in the answer".into()));
                };
                tokens += v
                    .get("inputTextTokenCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                vectors.push(e.clone());
            }
        }
        let data: Vec<Value> = vectors
            .into_iter()
            .enumerate()
            .map(|(i, e)| serde_json::json!({"object": "embedding", "index": i, "embedding": e}))
            .collect();
        Ok(serde_json::json!({
            "object": "list",
            "data": data,
            "model": call.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))
    }
}

/// A frame's `:event-type` and JSON payload; an `exception` frame (throttling, validation, a
/// model error mid-stream) is an error with its message.
fn event_of(
    m: &aws_smithy_types::event_stream::Message,
    redact: &Redactor,
) -> Result<Option<(String, Value)>, StreamError> {
    let header = |name: &str| {
        m.headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_owned())
    };
    let payload = String::from_utf8_lossy(m.payload());
    let payload = redact.exact(&payload).into_owned();
    let value: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    match header(":message-type").as_deref() {
        Some("event") => Ok(header(":event-type").map(|e| (e, value))),
        Some("exception") | Some("error") => {
            let kind = header(":exception-type")
                .or_else(|| header(":error-code"))
                .unwrap_or_else(|| "error".into());
            let message = value
                .get("message")
                .or_else(|| value.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or("no message");
            Err(StreamError::new(format!("{kind}: {message}")))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests;
