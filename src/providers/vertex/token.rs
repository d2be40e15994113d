//! Google OAuth access tokens from a service-account key (RFC 7523 JWT bearer grant): an RS256
//! JWT signed with the key (`ring`), exchanged at the key's `token_uri`, cached until shortly
//! before it expires. Concurrent requests wait for one exchange instead of each making their own.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::config::Secret;
use crate::providers::ProviderError;

/// The scope Vertex AI needs.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, when the key names none.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// A token is renewed this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The largest token endpoint answer read (Google's are under 2 KiB).
const MAX_TOKEN_BODY: usize = 64 * 1024;
/// The longest token lifetime believed (`expires_in` beyond it is cut to it).
const MAX_LIFETIME_SECS: u64 = 86_400;
/// How long a token exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Access tokens for one service account.
pub struct TokenSource {
    client: crate::providers::client::Client,
    email: String,
    key_id: Option<String>,
    token_uri: String,
    key: RsaKeyPair,
    cached: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("email", &self.email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

fn auth_error(status: u16, message: String) -> ProviderError {
    ProviderError::Status {
        status,
        message,
        retry_after: None,
    }
}

impl TokenSource {
    /// A source for the service-account key `json`; the error says what is wrong with the key.
    pub fn new(json: &str, client: crate::providers::client::Client) -> Result<Self, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let email = field("client_email").ok_or("no client_email")?;
        let pem = field("private_key").ok_or("no private_key")?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("private_key is not PEM PKCS#8: {e:?}"))?;
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| format!("private_key is not an RSA key: {e}"))?;
        Ok(Self {
            client,
            email,
            key_id: field("private_key_id"),
            token_uri: field("token_uri").unwrap_or_else(|| DEFAULT_TOKEN_URI.into()),
            key,
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// A valid access token: the cached one, or a new one.
    pub async fn token(&self) -> Result<Secret, ProviderError> {
        let mut cached = self.cached.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() + REFRESH_MARGIN < *until
        {
            return Ok(t.clone());
        }
        let (token, lifetime) = self.exchange().await?;
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// The signed JWT asserting this service account, issued at `now` (unix seconds).
    pub fn assertion(&self, now: u64) -> Result<String, ProviderError> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| auth_error(401, "cannot sign the service-account JWT".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    async fn exchange(&self) -> Result<(Secret, Duration), ProviderError> {
        let jwt = self.assertion(crate::chat::unix_now())?;
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"
        );
        let send = self
            .client
            .post(self.token_uri.as_str())
            .header(
                axum::http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send();
        // The timeout covers the answer's body too, and the body is read up to a bound: a token
        // endpoint that never finishes its answer must not hold the token lock (and with it every
        // Vertex request) or fill memory.
        let read = async {
            let resp = send.await.map_err(super::super::transport_error)?;
            let status = resp.status().as_u16();
            let bytes = super::super::read_capped(resp, MAX_TOKEN_BODY)
                .await
                .map_err(super::super::transport_error)?;
            Ok::<_, ProviderError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(EXCHANGE_TIMEOUT, read)
            .await
            .map_err(|_| ProviderError::Timeout(EXCHANGE_TIMEOUT))??;
        let body: Value = if bytes.len() > MAX_TOKEN_BODY {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if !(200..300).contains(&status) {
            let why = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            // A refused grant is the key's fault (401); the endpoint's own trouble stays 5xx.
            let status = if status >= 500 { status } else { 401 };
            return Err(auth_error(
                status,
                format!("the token exchange for {} failed: {why}", self.email),
            ));
        }
        let Some(token) = body.get("access_token").and_then(Value::as_str) else {
            return Err(ProviderError::Decode(
                "the token endpoint answered without access_token".into(),
            ));
        };
        // Google's tokens live an hour; a lifetime over a day (or one no clock holds) is not
        // believed: the token is asked for again after a day at most.
        let lifetime = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600)
            .min(MAX_LIFETIME_SECS);
        Ok((Secret::new(token), Duration::from_secs(lifetime)))
    }
}
