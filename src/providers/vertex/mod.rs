//! Google Vertex AI: Gemini models through `generateContent` (the Gemini wire code) and Claude
//! models through `rawPredict` (the Anthropic wire code), authenticated with a service-account
//! key: a signed JWT is exchanged for an access token at the key's `token_uri`, cached, and
//! refreshed before it expires.

mod token;

use serde_json::Value;

use super::{Call, ProviderError, Redactor};
use crate::chat::{ChatRequest, ChatResponse, ChatStream};
use crate::config::{ProviderConfig, Secret};

pub use token::TokenSource;

/// The `anthropic_version` Vertex AI expects in a Claude request body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// A Vertex AI upstream.
#[derive(Debug)]
pub struct VertexProvider {
    client: crate::providers::client::Client,
    /// `{base_url}/v1/projects/{project}/locations/{location}`.
    prefix: String,
    tokens: Option<TokenSource>,
    headers: std::collections::BTreeMap<String, Secret>,
    /// Every string from this upstream passes it.
    pub(super) redact: Redactor,
}

impl VertexProvider {
    /// A provider for this config entry (whose key was checked by config validation).
    pub fn new(cfg: &ProviderConfig, client: crate::providers::client::Client) -> Self {
        let (prefix, tokens) = match &cfg.vertex {
            Some(v) => (
                format!(
                    "{}/v1/projects/{}/locations/{}",
                    cfg.base_url, v.project, v.location
                ),
                TokenSource::new(v.credentials.expose(), client.clone()).ok(),
            ),
            None => (cfg.base_url.clone(), None),
        };
        Self {
            client,
            prefix,
            tokens,
            headers: cfg.headers.clone(),
            redact: Redactor::for_provider(cfg),
        }
    }

    /// Claude models are served by Anthropic's publisher, everything else by Google's.
    fn is_claude(model: &str) -> bool {
        model.starts_with("claude")
    }

    async fn post(
        &self,
        url: String,
    ) -> Result<crate::providers::client::RequestBuilder<'_>, ProviderError> {
        let Some(tokens) = &self.tokens else {
            return Err(ProviderError::Status {
                status: 401,
                message: "the Vertex AI service-account key could not be loaded".into(),
                retry_after: None,
            });
        };
        let token = tokens.token().await?;
        let mut rb = self.client.post(url).bearer_auth(token.expose());
        for (name, value) in &self.headers {
            rb = rb.secret_header(name.as_str(), value.expose());
        }
        Ok(rb)
    }

    fn url(&self, publisher: &str, model: &str, method: &str) -> String {
        format!(
            "{}/publishers/{publisher}/models/{model}:{method}",
            self.prefix
        )
    }

    /// The Claude request body: the Messages request without `model`, with Vertex's version.
    fn claude_body(req: &ChatRequest, model: &str, stream: bool) -> Result<Value, ProviderError> {
        let mut wire = super::anthropic::AnthropicProvider::build(req, model)?;
        if stream {
            wire.stream = Some(true);
        }
        let mut v =
            serde_json::to_value(&wire).map_err(|e| ProviderError::Decode(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.remove("model");
            o.insert("anthropic_version".into(), Value::from(ANTHROPIC_VERSION));
        }
        Ok(v)
    }

    /// Non-streaming chat.
    pub async fn chat(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
    ) -> Result<ChatResponse, ProviderError> {
        if Self::is_claude(call.model) {
            let body = Self::claude_body(req, call.model, false)?;
            let rb = self
                .post(self.url("anthropic", call.model, "rawPredict"))
                .await?;
            return super::anthropic::messages(rb.json(&body), &self.redact).await;
        }
        let rb = self
            .post(self.url("google", call.model, "generateContent"))
            .await?;
        super::gemini::generate(rb, req, call.model, &self.redact).await
    }

    /// Streaming chat.
    pub async fn chat_stream(
        &self,
        req: &ChatRequest,
        call: Call<'_>,
    ) -> Result<ChatStream, ProviderError> {
        if Self::is_claude(call.model) {
            let body = Self::claude_body(req, call.model, true)?;
            let rb = self
                .post(self.url("anthropic", call.model, "streamRawPredict"))
                .await?;
            return super::anthropic::messages_stream(rb.json(&body), &self.redact).await;
        }
        let rb = self
            .post(self.url("google", call.model, "streamGenerateContent?alt=sse"))
            .await?;
        super::gemini::generate_stream(rb, req, call.model, &self.redact).await
    }
}

#[cfg(test)]
mod tests;
