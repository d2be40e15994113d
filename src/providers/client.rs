//! The providers' HTTP client: hyper's pooled client with rustls, called directly.
//!
//! reqwest (which the gateway keeps for everything else: MCP servers, webhooks) puts every request
//! through layers the providers do not use (a redirect policy that parses the URL again, a retry
//! policy, proxy matching) and builds it through its own types; on the proxied request path that
//! was about 7 % of the gateway's CPU (docs/performance.md, tenth slice). This client offers the
//! calls the providers make (`post`, `header`, `bearer_auth`, `json`, `body`, `send`; a
//! response's `status`, `headers`, `content_length`, `chunk` and `bytes_stream`) over
//! hyper-util's pooled client, with the settings the gateway gave reqwest: `TCP_NODELAY`, a 10 s
//! connect timeout, TCP keepalive every 15 s, idle connections closed after 90 s, no redirects
//! (an API that redirects a POST is misconfigured: the answer is an error, credentials are never
//! sent elsewhere), no retries (they live in `router/retry.rs`), HTTP/1.1 or HTTP/2 as the
//! server offers in TLS (ALPN), certificates checked by the platform's verifier.
//!
//! With a proxy in the environment (`HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY`, in either case),
//! upstream calls go through reqwest, which reads those and `NO_PROXY` as it always did.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt, future::Either};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::{Client as Pool, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;

/// How long a TCP connect to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first capacity of a JSON request body's buffer: the last body's length and an eighth (from
/// 256 bytes, at most [`MAX_BODY_HINT`], so one huge request does not make every later one reserve
/// as much).
static LAST_BODY_LEN: AtomicUsize = AtomicUsize::new(1024);

/// The largest first capacity of a request body's buffer.
const MAX_BODY_HINT: usize = 64 * 1024;

/// Idle pooled connections are closed after this.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// TCP keepalive probes on upstream connections (reqwest's defaults).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The environment variables that configure an outbound proxy (reqwest and curl read the same).
const PROXY_VARS: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The client every provider sends its upstream requests with (cheap to clone: shared pool).
#[derive(Clone)]
pub struct Client {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    /// hyper's pooled client, no proxy.
    Direct(Box<Pool<Https, Full<Bytes>>>),
    /// reqwest, for a proxy configured in the environment.
    Reqwest(reqwest::Client),
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Direct(_) => "Client(direct)",
            Inner::Reqwest(_) => "Client(reqwest, proxy from the environment)",
        })
    }
}

/// Why an upstream call failed before an answer's status arrived, or while its body was read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be built (a header or URL that HTTP does not allow).
    #[error("{0}")]
    Request(String),
    /// Connecting or sending failed.
    #[error(transparent)]
    Send(#[from] hyper_util::client::legacy::Error),
    /// Reading the answer's body failed.
    #[error(transparent)]
    Body(#[from] hyper::Error),
    /// The same, through reqwest (proxied).
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
}

impl HttpError {
    /// No connection could be made (refused, unreachable, TLS handshake failed, timed out).
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Send(e) => e.is_connect(),
            Self::Reqwest(e) => e.is_connect(),
            Self::Request(_) | Self::Body(_) => false,
        }
    }

    /// A timeout set on the client ran out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Reqwest(e) if e.is_timeout())
    }
}

impl Client {
    /// The client for this process's environment: direct, or through reqwest when a proxy is
    /// configured.
    pub fn new() -> Result<Self, String> {
        if proxy_configured(|k| std::env::var(k).ok()) {
            return Ok(Self::via_reqwest(reqwest_client()?));
        }
        Self::direct()
    }

    /// hyper's pooled client with rustls (no proxy).
    pub fn direct() -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .map_err(|e| format!("cannot set up TLS for upstream calls: {e}"))?
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_keepalive(Some(KEEPALIVE));
        http.set_keepalive_interval(Some(KEEPALIVE));
        http.set_keepalive_retries(Some(3));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Self {
            inner: Inner::Direct(Box::new(pool)),
        })
    }

    /// Calls through this reqwest client (it applies its own proxy settings).
    pub fn via_reqwest(client: reqwest::Client) -> Self {
        Self {
            inner: Inner::Reqwest(client),
        }
    }

    /// A POST to `url` (a `Uri`, or text: `https://host/path?query`).
    pub fn post(&self, url: impl IntoUri) -> RequestBuilder<'_> {
        RequestBuilder {
            client: self,
            uri: url.into_uri(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            error: None,
        }
    }
}

/// The reqwest client the gateway uses for calls other than the providers' (and for the providers'
/// behind a proxy): the same settings as [`Client::direct`]. It uses the process's default
/// rustls provider, which `AppState::new` installs at start.
pub fn reqwest_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE)
        // Retries and backoff live only in router/retry.rs; attempts are counted there.
        .retry(reqwest::retry::never())
        // An LLM API that redirects a POST is misconfigured: answer 502, never resend credentials.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// Whether the environment names an outbound proxy (a set, non-empty variable of [`PROXY_VARS`]).
fn proxy_configured(get: impl Fn(&str) -> Option<String>) -> bool {
    PROXY_VARS
        .iter()
        .any(|k| get(k).is_some_and(|v| !v.trim().is_empty()))
}

/// A URL a request can be sent to.
pub trait IntoUri {
    /// The URI, or why it is not one.
    fn into_uri(self) -> Result<Uri, String>;
}

impl IntoUri for Uri {
    fn into_uri(self) -> Result<Uri, String> {
        Ok(self)
    }
}

impl IntoUri for Result<Uri, String> {
    fn into_uri(self) -> Result<Uri, String> {
        self
    }
}

impl IntoUri for &str {
    fn into_uri(self) -> Result<Uri, String> {
        parse_uri(self)
    }
}

impl IntoUri for String {
    fn into_uri(self) -> Result<Uri, String> {
        parse_uri(&self)
    }
}

/// Text to a URI. What HTTP's grammar takes as it is goes straight through; anything else (a
/// space or a non-ASCII character in a model name, say) is read as a WHATWG URL first, which
/// percent-encodes it, as reqwest did.
pub fn parse_uri(text: &str) -> Result<Uri, String> {
    if let Ok(uri) = Uri::try_from(text)
        && uri.scheme().is_some()
        && uri.authority().is_some()
    {
        return Ok(uri);
    }
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    Uri::try_from(url.as_str()).map_err(|e| e.to_string())
}

/// One request being built; errors surface at [`RequestBuilder::send`].
#[derive(Debug)]
pub struct RequestBuilder<'a> {
    client: &'a Client,
    uri: Result<Uri, String>,
    headers: HeaderMap,
    body: Bytes,
    error: Option<String>,
}

impl RequestBuilder<'_> {
    /// Adds a header (after any of the same name).
    pub fn header<K, V>(self, name: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: std::fmt::Display,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: std::fmt::Display,
    {
        self.push(name, value, false)
    }

    /// Adds a header whose value is a credential (a key, a signature, a custom header from the
    /// config), marked sensitive: `Debug` hides it and HTTP/2's header compression never indexes
    /// it.
    pub fn secret_header<K>(self, name: K, value: &str) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: std::fmt::Display,
    {
        self.push(name, value, true)
    }

    fn push<K, V>(mut self, name: K, value: V, sensitive: bool) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: std::fmt::Display,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: std::fmt::Display,
    {
        match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(sensitive);
                self.headers.append(n, v);
            }
            (Err(e), _) => self.fail(format!("invalid header name: {e}")),
            // The value is not echoed: it may be a credential.
            (_, Err(_)) => self.fail("invalid header value (a control character?)".into()),
        }
        self
    }

    /// `Authorization: Bearer <token>`, marked sensitive.
    pub fn bearer_auth(mut self, token: &str) -> Self {
        let mut value = String::with_capacity(7 + token.len());
        value.push_str("Bearer ");
        value.push_str(token);
        match HeaderValue::try_from(value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                self.headers.append(header::AUTHORIZATION, v);
            }
            Err(_) => self.fail("invalid bearer token: not a header value".into()),
        }
        self
    }

    /// The body as JSON (and `Content-Type: application/json` unless one is set).
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        // Room for about as much as the last body took: writing grew the buffer from serde_json's
        // 128 bytes four or five times for a request with tools, copying it each time.
        let mut bytes = Vec::with_capacity(LAST_BODY_LEN.load(Ordering::Relaxed));
        match serde_json::to_writer(&mut bytes, value) {
            Ok(()) => {
                let hint = bytes.len() + bytes.len() / 8;
                LAST_BODY_LEN.store(hint.clamp(256, MAX_BODY_HINT), Ordering::Relaxed);
                self.body = Bytes::from(bytes);
                if !self.headers.contains_key(header::CONTENT_TYPE) {
                    self.headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
            }
            Err(e) => self.fail(format!("cannot encode the request: {e}")),
        }
        self
    }

    /// The body as it is.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    fn fail(&mut self, why: String) {
        self.error.get_or_insert(why);
    }

    /// Sends the request; returns once the answer's status and headers arrived.
    pub async fn send(self) -> Result<Response, HttpError> {
        if let Some(e) = self.error {
            return Err(HttpError::Request(e));
        }
        let uri = self
            .uri
            .map_err(|e| HttpError::Request(format!("invalid upstream URL: {e}")))?;
        match &self.client.inner {
            Inner::Direct(pool) => {
                let mut headers = self.headers;
                host_with_port(&uri, &mut headers);
                let mut req = Request::new(Full::new(self.body));
                *req.method_mut() = Method::POST;
                *req.uri_mut() = uri;
                *req.headers_mut() = headers;
                Ok(Response::Direct(pool.request(req).await?))
            }
            Inner::Reqwest(client) => {
                let resp = client
                    .post(uri.to_string())
                    .headers(self.headers)
                    .body(self.body)
                    .send()
                    .await?;
                Ok(Response::Reqwest(resp))
            }
        }
    }
}

/// Sets `Host` to the URL's `host:port` when the port is not the scheme's default, as hyper's
/// client would (it formats that value anew for every request); without a port, or with the
/// default one, the client's own `Host` (the host alone) is left to it.
fn host_with_port(uri: &Uri, headers: &mut HeaderMap) {
    let default = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let Some(authority) = uri.authority() else {
        return;
    };
    if authority.port_u16().is_none_or(|p| p == default)
        || authority.as_str().contains('@')
        || headers.contains_key(header::HOST)
    {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
        headers.insert(header::HOST, v);
    }
}

/// An upstream's answer: status and headers read, the body still to come.
#[derive(Debug)]
pub enum Response {
    /// From hyper's client.
    Direct(axum::http::Response<Incoming>),
    /// From reqwest (proxied).
    Reqwest(reqwest::Response),
}

impl From<reqwest::Response> for Response {
    fn from(r: reqwest::Response) -> Self {
        Self::Reqwest(r)
    }
}

impl Response {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Direct(r) => r.status(),
            Self::Reqwest(r) => r.status(),
        }
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        match self {
            Self::Direct(r) => r.headers(),
            Self::Reqwest(r) => r.headers(),
        }
    }

    /// The body's length when the upstream said it (`Content-Length`).
    pub fn content_length(&self) -> Option<u64> {
        match self {
            Self::Direct(r) => r.body().size_hint().exact(),
            Self::Reqwest(r) => r.content_length(),
        }
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        match self {
            Self::Direct(r) => loop {
                match r.body_mut().frame().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.into()),
                    // Trailers carry no body bytes.
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                    }
                }
            },
            Self::Reqwest(r) => Ok(r.chunk().await?),
        }
    }

    /// The body as a stream of its pieces.
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, HttpError>> + Send + 'static {
        match self {
            Self::Direct(r) => {
                Either::Left(r.into_body().into_data_stream().map_err(HttpError::from))
            }
            Self::Reqwest(r) => Either::Right(r.bytes_stream().map_err(HttpError::from)),
        }
    }
}

#[cfg(test)]
mod tests;
