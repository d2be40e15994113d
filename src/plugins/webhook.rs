//! Webhook plugins: the hook's payload POSTed as JSON, a verdict read back.
//!
//! Request hook: `{"hook": "request", "request_id", "model", "key", "request": {...}}`
//! answered by `{"action": "allow"}`, `{"action": "deny", "status"?, "message"}`,
//! `{"action": "modify", "request": {...}}` or `{"action": "respond", "response": {...}}`.
//! Response hook: the same with `"hook": "response"` and `"response"`, answered by `allow`,
//! `deny` or `modify` with a `response`. Anything else (a timeout, a non-2xx status, a body that
//! is not such a verdict) is the plugin's error, and its `on_error` decides. No retries.
//! Complete hook: `{"hook": "complete", "record": {...}}` after the answer; only the status is read.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_plugin::{PluginError, RequestInfo, Verdict};

use crate::chat::{ChatRequest, ChatResponse};
use crate::config::Secret;

/// Largest verdict read back.
const MAX_VERDICT: usize = 16 * 1024 * 1024;

pub(super) struct Webhook {
    url: String,
    headers: BTreeMap<String, Secret>,
    timeout: Duration,
    client: reqwest::Client,
}

fn err(m: impl Into<String>) -> PluginError {
    PluginError(m.into())
}

impl Webhook {
    pub(super) fn new(
        url: String,
        headers: BTreeMap<String, Secret>,
        timeout: Duration,
        client: reqwest::Client,
    ) -> Self {
        Self {
            url,
            headers,
            timeout,
            client,
        }
    }

    /// POSTs `payload` within the timeout; the answer's status and body.
    async fn send(
        &self,
        payload: &Value,
    ) -> Result<(reqwest::StatusCode, bytes::Bytes), PluginError> {
        let mut rb = self.client.post(&self.url).json(payload);
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.expose());
        }
        let call = async {
            let resp = rb
                .send()
                .await
                .map_err(|e| err(format!("cannot reach the webhook: {e}")))?;
            let status = resp.status();
            // Read until past the limit at most: `call` refuses what is longer.
            let bytes = crate::providers::read_capped(resp.into(), MAX_VERDICT)
                .await
                .map_err(|e| err(format!("the webhook's answer broke: {e}")))?;
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                err(format!(
                    "the webhook did not answer within {} ms",
                    self.timeout.as_millis()
                ))
            })?
    }

    /// POSTs `payload` and reads the verdict.
    async fn call(&self, payload: Value) -> Result<Value, PluginError> {
        let (status, bytes) = self.send(&payload).await?;
        if !status.is_success() {
            return Err(err(format!("the webhook answered {status}")));
        }
        if bytes.len() > MAX_VERDICT {
            return Err(err("the webhook's verdict is too large"));
        }
        serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| err(format!("the webhook's verdict is not JSON: {e}")))
    }

    fn payload(hook: &str, info: &RequestInfo) -> Value {
        json!({
            "hook": hook,
            "request_id": info.request_id,
            "model": info.model,
            "key": info.key,
        })
    }

    pub(super) async fn on_request(
        &self,
        info: &RequestInfo,
        req: &mut ChatRequest,
    ) -> Result<Verdict, PluginError> {
        let mut payload = Self::payload("request", info);
        payload["request"] = serde_json::to_value(&*req).map_err(|e| err(e.to_string()))?;
        let v = self.call(payload).await?;
        match v.get("action").and_then(Value::as_str) {
            Some("allow") => Ok(Verdict::Continue),
            Some("deny") => Ok(deny(&v)),
            Some("modify") => {
                let r = v
                    .get("request")
                    .cloned()
                    .ok_or_else(|| err("`modify` needs a `request`"))?;
                *req = serde_json::from_value(r).map_err(|e| {
                    err(format!("the webhook's request is not a chat request: {e}"))
                })?;
                Ok(Verdict::Continue)
            }
            Some("respond") => {
                let r = v
                    .get("response")
                    .cloned()
                    .ok_or_else(|| err("`respond` needs a `response`"))?;
                let resp: ChatResponse = serde_json::from_value(r).map_err(|e| {
                    err(format!(
                        "the webhook's response is not a chat completion: {e}"
                    ))
                })?;
                Ok(Verdict::Respond(Box::new(resp)))
            }
            _ => Err(err(
                "the webhook's verdict needs an `action`: allow, deny, modify or respond",
            )),
        }
    }

    pub(super) async fn on_response(
        &self,
        info: &RequestInfo,
        resp: &mut ChatResponse,
    ) -> Result<(), PluginError> {
        let mut payload = Self::payload("response", info);
        payload["response"] = serde_json::to_value(&*resp).map_err(|e| err(e.to_string()))?;
        let v = self.call(payload).await?;
        match v.get("action").and_then(Value::as_str) {
            Some("allow") => Ok(()),
            Some("deny") => Err(err(format!(
                "the webhook denied the answer: {}",
                v.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
            ))),
            Some("modify") => {
                let r = v
                    .get("response")
                    .cloned()
                    .ok_or_else(|| err("`modify` needs a `response`"))?;
                *resp = serde_json::from_value(r).map_err(|e| {
                    err(format!(
                        "the webhook's response is not a chat completion: {e}"
                    ))
                })?;
                Ok(())
            }
            _ => Err(err(
                "the webhook's verdict needs an `action`: allow, deny or modify",
            )),
        }
    }
}

impl Webhook {
    /// Sends a request's record after the answer; the webhook's answer is not read beyond its
    /// status.
    pub(super) async fn on_complete(&self, record: &Value) -> Result<(), PluginError> {
        let (status, _) = self
            .send(&json!({"hook": "complete", "record": record}))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(err(format!("the webhook answered {status}")))
        }
    }
}

fn deny(v: &Value) -> Verdict {
    Verdict::Reject {
        status: v
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (400..=599).contains(s))
            .unwrap_or(400),
        message: v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the request was denied by a guardrail")
            .to_owned(),
    }
}
