//! Upstream providers: one folder per wire format, all speaking canonical types to the core.
//!
//! `openai/` serves every OpenAI-compatible vendor as a preset (OpenAI, Azure, Groq, Mistral,
//! OpenRouter, DeepSeek, xAI, Ollama and Cohere compatibility endpoints); `anthropic/`
//! translates to and from the Messages API, `gemini/` to and from `generateContent`, `bedrock/` to and from Converse; `vertex/` reuses the Gemini and Anthropic
//! wire code behind Google service-account authentication. [`AnyProvider`] is the closed set, statically
//! dispatched.

pub mod anthropic;
pub mod bedrock;
pub mod client;
pub mod gemini;
pub mod openai;
pub mod redact;
mod sse;
pub mod structured;
pub mod vertex;

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::chat::{ChatRequest, ChatResponse, ChatStream};
use crate::config::{ProviderConfig, ProviderKind, Secret};
pub use redact::Redactor;

/// A request that cannot be expressed in another wire format; the message names the field.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct TranslateError(pub String);

/// A [`TranslateError`] with this message.
pub(crate) fn untranslatable(msg: impl Into<String>) -> TranslateError {
    TranslateError(msg.into())
}

/// Tool-call arguments (a JSON string) as the object a wire format wants; empty means `{}`.
pub(crate) fn arguments_object(s: &str) -> Result<Value, String> {
    if s.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    match serde_json::from_str::<Value>(s) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("must encode a JSON object".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// What one upstream attempt failed with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// No connection could be made (refused, DNS, TLS).
    #[error("cannot connect to upstream: {0}")]
    Connect(String),
    /// The upstream did not answer within the attempt timeout.
    #[error("upstream timed out after {0:?}")]
    Timeout(Duration),
    /// The upstream answered with a non-success status.
    #[error("upstream returned {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The upstream's error message (secrets redacted).
        message: String,
        /// Parsed `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The connection broke while reading the answer.
    #[error("upstream connection failed: {0}")]
    Io(String),
    /// The answer could not be understood.
    #[error("cannot decode upstream response: {0}")]
    Decode(String),
}

impl ProviderError {
    /// Whether trying again (same or another target) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Timeout(_) | Self::Io(_) => true,
            Self::Status { status, .. } => {
                matches!(status, 401 | 403 | 408 | 409 | 429) || *status >= 500
            }
            Self::Decode(_) => false,
        }
    }

    /// Whether the fault is the key's (try another key of the same provider).
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            Self::Status {
                status: 401 | 403 | 429,
                ..
            }
        )
    }

    /// A fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect_error",
            Self::Timeout(_) => "timeout",
            Self::Io(_) => "io_error",
            Self::Decode(_) => "decode_error",
            Self::Status { status: 429, .. } => "rate_limited",
            Self::Status {
                status: 401 | 403, ..
            } => "auth_error",
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "client_error",
        }
    }
}

/// What an attempt needs besides the request: the upstream model and the key to use.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// Upstream model name.
    pub model: &'a str,
    /// Key for this attempt, if the provider has keys.
    pub key: Option<&'a Secret>,
}

/// The closed set of providers.
#[derive(Debug)]
pub enum AnyProvider {
    /// OpenAI wire format (and its presets).
    OpenAi(Box<openai::OpenAiProvider>),
    /// Anthropic Messages wire format.
    Anthropic(anthropic::AnthropicProvider),
    /// Gemini `generateContent` wire format.
    Gemini(gemini::GeminiProvider),
    /// Bedrock Converse.
    Bedrock(bedrock::BedrockProvider),
    /// Vertex AI (Gemini and Claude).
    Vertex(Box<vertex::VertexProvider>),
}

macro_rules! delegate {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyProvider::OpenAi($p) => $e,
            AnyProvider::Anthropic($p) => $e,
            AnyProvider::Gemini($p) => $e,
            AnyProvider::Bedrock($p) => $e,
            AnyProvider::Vertex($p) => $e,
        }
    };
}

impl AnyProvider {
    /// Builds the provider for a config entry, sharing one HTTP client.
    pub fn new(cfg: &ProviderConfig, client: client::Client) -> Self {
        match cfg.kind {
            ProviderKind::Anthropic => {
                Self::Anthropic(anthropic::AnthropicProvider::new(cfg, client))
            }
            ProviderKind::Bedrock => Self::Bedrock(bedrock::BedrockProvider::new(cfg, client)),
            ProviderKind::Vertex => {
                Self::Vertex(Box::new(vertex::VertexProvider::new(cfg, client)))
            }
            // A Gemini base URL ending in `/openai` is Google's OpenAI-compatible endpoint.
            ProviderKind::Gemini if !cfg.base_url.trim_end_matches('/').ends_with("/openai") => {
                Self::Gemini(gemini::GeminiProvider::new(cfg, client))
            }
            _ => Self::OpenAi(Box::new(openai::OpenAiProvider::new(cfg, client))),
        }
    }

    /// Whether this provider (for this model) has no JSON mode of its own, so structured output
    /// goes through a forced tool (`structured.rs`).
    fn json_by_tool(&self, model: &str) -> bool {
        match self {
            Self::Anthropic(_) | Self::Bedrock(_) => true,
            Self::Vertex(_) => model.starts_with("claude"),
            Self::OpenAi(_) | Self::Gemini(_) => false,
        }
    }

    /// One non-streaming chat attempt: the answer, and the upstream's JSON of it when that can
    /// be sent on as it came (OpenAI's own API; see `OpenAiProvider::chat`). With `raw` such an
    /// answer is not decoded in full but read for what the stages need ([`Answer::Raw`]).
    pub async fn chat(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
        raw: bool,
    ) -> Result<Answer, ProviderError> {
        let redact = |e| self.redactor().error(e);
        let forced = self
            .json_by_tool(call.model)
            .then(|| structured::force(req))
            .flatten();
        let asked = forced.as_ref().unwrap_or(req);
        let decoded = |r| Answer::Decoded(Box::new(r), None);
        let answer = match self {
            Self::OpenAi(p) => p.chat(asked, call, raw && forced.is_none()).await,
            Self::Anthropic(p) => p.chat(asked, call).await.map(decoded),
            Self::Gemini(p) => p.chat(asked, call).await.map(decoded),
            Self::Bedrock(p) => p.chat(asked, call).await.map(decoded),
            Self::Vertex(p) => p.chat(asked, call).await.map(decoded),
        };
        answer
            .map(|a| match (forced, a) {
                // The upstream's JSON is the forced tool call's, not the answer the client gets.
                (Some(_), Answer::Decoded(r, _)) => {
                    Answer::Decoded(Box::new(structured::unwrap_response(*r)), None)
                }
                (_, a) => a,
            })
            .map_err(redact)
    }

    /// The redaction every string from this provider passes.
    pub fn redactor(&self) -> &Redactor {
        delegate!(self, p => &p.redact)
    }

    /// One streaming attempt at the provider itself (`raw` applies to OpenAI-format upstreams).
    async fn stream_attempt(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
        raw: bool,
    ) -> Result<ChatStream, ProviderError> {
        match self {
            Self::OpenAi(p) => p.chat_stream(req, call, raw).await,
            Self::Anthropic(p) => p.chat_stream(req, call).await,
            Self::Gemini(p) => p.chat_stream(req, call).await,
            Self::Bedrock(p) => p.chat_stream(req, call).await,
            Self::Vertex(p) => p.chat_stream(req, call).await,
        }
    }

    /// One streaming chat attempt; returns once the upstream accepted the request. With `raw`
    /// (the client takes OpenAI's stream and no stage changes the chunks) an OpenAI upstream's
    /// chunks keep their JSON (see `OpenAiProvider::chat_stream`).
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
        raw: bool,
    ) -> Result<ChatStream, ProviderError> {
        use futures_util::StreamExt;
        let redact = self.redactor().clone();
        if self.json_by_tool(call.model)
            && let Some(forced) = structured::force(req)
        {
            // The upstream's chunks are the forced tool call's, not the ones the client gets.
            let stream = self
                .stream_attempt(&forced, call, false)
                .await
                .map_err(|e| redact.error(e))?;
            let stream = structured::unwrap_stream(stream);
            return Ok(Box::pin(
                stream.map(move |r| r.map_err(|e| redact.stream_error(e))),
            ));
        }
        let stream = self
            .stream_attempt(req, call, raw)
            .await
            .map_err(|e| redact.error(e))?;
        Ok(Box::pin(
            stream.map(move |r| r.map_err(|e| redact.stream_error(e))),
        ))
    }

    /// Whether this provider serves `/v1/embeddings`.
    pub fn supports_embeddings(&self) -> bool {
        matches!(self, Self::OpenAi(_) | Self::Gemini(_) | Self::Bedrock(_))
    }

    /// One embeddings attempt (OpenAI wire format only).
    pub async fn embed(&self, body: &Value, call: Call<'_>) -> Result<Value, ProviderError> {
        match self {
            Self::OpenAi(p) => p.embed(body, call).await.map_err(|e| p.redact.error(e)),
            Self::Gemini(p) => p.embed(body, call).await.map_err(|e| p.redact.error(e)),
            Self::Bedrock(p) => p.embed(body, call).await.map_err(|e| p.redact.error(e)),
            Self::Anthropic(_) | Self::Vertex(_) => Err(ProviderError::Status {
                status: 400,
                message: "this provider does not offer embeddings".into(),
                retry_after: None,
            }),
        }
    }
}

/// A provider's complete answer.
#[derive(Debug)]
pub enum Answer {
    /// Decoded, with the upstream's JSON of it when that can be sent on as it came.
    Decoded(Box<ChatResponse>, Option<Bytes>),
    /// The upstream's OpenAI JSON, read only for what the stages need.
    Raw(Box<crate::chat::RawAnswer>),
}

/// Sends a request and turns transport failures and error statuses into [`ProviderError`]
/// (redacted: the message may echo what was sent).
pub(crate) async fn send(
    rb: client::RequestBuilder<'_>,
    redact: &Redactor,
) -> Result<client::Response, ProviderError> {
    let resp = rb.send().await.map_err(transport_error)?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(axum::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let text =
        String::from_utf8_lossy(&read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default())
            .into_owned();
    Err(ProviderError::Status {
        status,
        message: redact.text(&error_message(&text)),
        retry_after,
    })
}

/// Largest non-streaming answer accepted from an upstream.
pub const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// How much of an upstream error body is read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Reads a successful response body (at most [`MAX_UPSTREAM_BODY`]) as JSON of type `T`, with the
/// provider's secrets removed.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    resp: client::Response,
    redact: &Redactor,
) -> Result<T, ProviderError> {
    read_json_bytes(resp, redact).await.map(|(v, _)| v)
}

/// [`read_json`], also giving the bytes the value was read from (after redaction).
pub(crate) async fn read_json_bytes<T: serde::de::DeserializeOwned>(
    resp: client::Response,
    redact: &Redactor,
) -> Result<(T, Bytes), ProviderError> {
    let bytes = read_body(resp, redact).await?;
    let value = serde_json::from_slice(&bytes).map_err(|e| ProviderError::Decode(e.to_string()))?;
    Ok((value, bytes))
}

/// A successful response's body (at most [`MAX_UPSTREAM_BODY`]), with the provider's secrets
/// removed.
pub(crate) async fn read_body(
    resp: client::Response,
    redact: &Redactor,
) -> Result<Bytes, ProviderError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_UPSTREAM_BODY as u64)
    {
        return Err(too_large());
    }
    let bytes = read_capped(resp, MAX_UPSTREAM_BODY)
        .await
        .map_err(transport_error)?;
    if bytes.len() > MAX_UPSTREAM_BODY {
        return Err(too_large());
    }
    Ok(redact.exact_bytes(&bytes).map_or(bytes, Bytes::from))
}

fn too_large() -> ProviderError {
    ProviderError::Decode(format!(
        "upstream answer is larger than {} MiB",
        MAX_UPSTREAM_BODY >> 20
    ))
}

/// Reads a body, stopping once more than `cap` bytes arrived (the result is then longer than `cap`).
/// A body that arrives in one piece (most answers) is kept as it came, not copied.
pub(crate) async fn read_capped(
    mut resp: client::Response,
    cap: usize,
) -> Result<Bytes, client::HttpError> {
    let Some(first) = resp.chunk().await? else {
        return Ok(Bytes::new());
    };
    if first.len() > cap {
        return Ok(first);
    }
    let Some(second) = resp.chunk().await? else {
        return Ok(first);
    };
    let hint = resp
        .content_length()
        .map_or(8 * 1024, |n| n as usize)
        .min(cap)
        .max(first.len() + second.len());
    let mut buf = Vec::with_capacity(hint);
    buf.extend_from_slice(&first);
    buf.extend_from_slice(&second);
    while buf.len() <= cap
        && let Some(chunk) = resp.chunk().await?
    {
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Maps a transport error to the matching [`ProviderError`].
pub(crate) fn transport_error(e: client::HttpError) -> ProviderError {
    if e.is_connect() {
        ProviderError::Connect(root_cause(&e))
    } else if e.is_timeout() {
        ProviderError::Timeout(Duration::ZERO)
    } else {
        ProviderError::Io(root_cause(&e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `Retry-After`: seconds or an HTTP date. A value no `Duration` holds (`1e300`, `inf`, `NaN`,
/// negative) is ignored, as an unreadable one is.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The message of an OpenAI- or Anthropic-shaped error body, or the body itself (shortened).
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let msg = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
    });
    match msg {
        Some(m) => m.to_owned(),
        None if body.trim().is_empty() => "no error message".into(),
        None => body.chars().take(500).collect(),
    }
}

#[cfg(test)]
mod tests;

/// The longest server-sent event taken from an upstream (bytes between blank lines). The SSE
/// parser keeps an unfinished event in memory; without a bound one endless line from an upstream
/// would grow it until the gateway runs out of memory.
pub(crate) const MAX_SSE_EVENT: usize = 16 << 20;

/// The server-sent events of a successful streaming response, with the provider's secrets
/// removed from each event's data. An event over [`MAX_SSE_EVENT`] ends the stream with an error.
pub(crate) fn sse_events(
    resp: client::Response,
    redact: &Redactor,
) -> impl futures_util::Stream<Item = Result<sse_stream::Sse, crate::chat::StreamError>> + Send + 'static
{
    use futures_util::StreamExt;
    let redact = redact.clone();
    sse::events(resp.bytes_stream()).map(move |r| {
        let mut sse =
            r.map_err(|e| crate::chat::StreamError::new(format!("upstream stream broke: {e}")))?;
        if let Some(d) = &sse.data
            && let std::borrow::Cow::Owned(clean) = redact.exact(d)
        {
            sse.data = Some(clean);
        }
        Ok(sse)
    })
}
