//! Client side of the legacy HTTP+SSE transport (MCP 2024-11-05), which rmcp does not provide.
//!
//! `GET url` opens an event stream; its first `endpoint` event names the URL to `POST` each
//! JSON-RPC message to; every `message` event carries one JSON-RPC message from the server.
//! The transport implements rmcp's `Transport`, so the rest of the client is rmcp's.

use std::borrow::Cow;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use rmcp::service::{RoleClient, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use sse_stream::SseStream;
use tokio::sync::mpsc;

use crate::config::Secret;

/// How long the server may take to name its message endpoint.
const ENDPOINT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Messages buffered from the event stream before the reader waits.
const BUFFER: usize = 64;

/// What went wrong on the SSE transport.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// HTTP failed.
    #[error("{0}")]
    Http(String),
    /// The server broke the protocol.
    #[error("{0}")]
    Protocol(String),
}

/// A connected legacy SSE transport.
pub struct SseTransport {
    http: reqwest::Client,
    headers: HeaderMap,
    endpoint: reqwest::Url,
    rx: mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens the event stream and waits for the `endpoint` event.
pub async fn connect(
    http: &reqwest::Client,
    url: &str,
    headers: &[(String, Secret)],
) -> Result<SseTransport, SseError> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v.expose()),
        ) else {
            return Err(SseError::Http(format!("header `{k}` is not valid")));
        };
        map.insert(k, v);
    }
    let base = reqwest::Url::parse(url).map_err(|e| SseError::Http(format!("bad url: {e}")))?;
    let resp = http
        .get(base.clone())
        .headers(map.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| SseError::Http(format!("GET failed: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(SseError::Http(format!("GET answered {status}")));
    }
    let mut events = SseStream::from_bytes_stream(resp.bytes_stream());
    let endpoint = tokio::time::timeout(ENDPOINT_TIMEOUT, async {
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|e| SseError::Protocol(format!("event stream: {e}")))?;
            if ev.event.as_deref() == Some("endpoint") {
                let data = ev.data.unwrap_or_default();
                return base.join(data.trim()).map_err(|e| {
                    SseError::Protocol(format!("endpoint event `{data}` is not a URL: {e}"))
                });
            }
        }
        Err(SseError::Protocol(
            "the event stream ended before an `endpoint` event".into(),
        ))
    })
    .await
    .map_err(|_| {
        SseError::Protocol(format!(
            "no `endpoint` event within {} s (is this a legacy SSE server? use transport = \"http\" for streamable HTTP)",
            ENDPOINT_TIMEOUT.as_secs()
        ))
    })??;
    let (tx, rx) = mpsc::channel(BUFFER);
    // Owned by the transport, aborted when it drops.
    #[allow(clippy::disallowed_methods)]
    let reader = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let Ok(ev) = ev else { break };
            if !matches!(ev.event.as_deref(), None | Some("message")) {
                continue;
            }
            let data = ev.data.unwrap_or_default();
            match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&data) {
                Ok(msg) => {
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "an SSE message from an MCP server is not JSON-RPC; skipped")
                }
            }
        }
    });
    Ok(SseTransport {
        http: http.clone(),
        headers: map,
        endpoint,
        rx,
        reader,
    })
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    fn name() -> Cow<'static, str> {
        "legacy-sse".into()
    }

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let req = self
            .http
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .json(&item);
        async move {
            let resp = req
                .send()
                .await
                .map_err(|e| SseError::Http(format!("POST failed: {e}")))?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(SseError::Http(format!("POST answered {}", resp.status())))
            }
        }
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.rx.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        Ok(())
    }
}
