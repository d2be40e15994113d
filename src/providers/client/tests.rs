// The loopback servers here live as long as their test's runtime.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// One request as the upstream read it off the wire.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    /// Every value of a header (names compared without case).
    fn header(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// A plain HTTP/1.1 upstream on loopback that records each request and its connection, and
/// answers every request with `answer` (keep-alive: several requests per connection).
struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<Mutex<usize>>,
}

impl Upstream {
    async fn start(answer: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (s, c) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                let s = s.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = read_head(&mut sock, &mut buf).await else {
                            return;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        let len = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        buf.drain(..end + 4);
                        while buf.len() < len {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body: Vec<u8> = buf.drain(..len).collect();
                        s.lock().unwrap().push(Seen { head, body });
                        if sock.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            url,
            seen,
            connections,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

/// Reads until a request head is complete; its length (before the blank line), or `None` at EOF.
async fn read_head(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i);
        }
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const OK_JSON: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-upstream: yes\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";

/// The reqwest path, with the rustls provider the gateway installs at start.
fn reqwest_path() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::via_reqwest(reqwest_client().unwrap())
}

async fn body_of(mut resp: Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        out.extend_from_slice(&c);
    }
    out
}

/// Both ways of calling (direct and through reqwest) send the same request and read the same
/// answer: method, path and query, JSON body and its content type, the bearer token, headers
/// given twice kept twice.
#[tokio::test]
async fn a_post_arrives_as_built_and_its_answer_reads_back() {
    let up = Upstream::start(OK_JSON).await;
    for client in [Client::direct().unwrap(), reqwest_path()] {
        let resp = client
            .post(format!("{}/v1/chat/completions?api-version=1", up.url))
            .bearer_auth("sk-secret")
            .header("x-custom", "one")
            .header("x-custom", "two")
            .json(&serde_json::json!({"model": "m", "n": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{client:?}");
        assert_eq!(resp.headers()["x-upstream"], "yes");
        assert_eq!(resp.content_length(), Some(11));
        assert_eq!(body_of(resp).await, b"{\"ok\":true}");
        let seen = up.seen().pop().unwrap();
        assert_eq!(
            seen.request_line(),
            "POST /v1/chat/completions?api-version=1 HTTP/1.1",
            "{client:?}"
        );
        assert_eq!(seen.header("authorization"), ["Bearer sk-secret"]);
        assert_eq!(seen.header("x-custom"), ["one", "two"]);
        assert_eq!(seen.header("content-type"), ["application/json"]);
        assert_eq!(seen.header("host"), [up.url.trim_start_matches("http://")]);
        let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(body, serde_json::json!({"model": "m", "n": 1}));
    }
}

/// Requests reuse a pooled connection instead of opening one each.
#[tokio::test]
async fn connections_are_pooled() {
    let up = Upstream::start(OK_JSON).await;
    let client = Client::direct().unwrap();
    for _ in 0..5 {
        let resp = client
            .post(format!("{}/x", up.url))
            .body("hi")
            .send()
            .await
            .unwrap();
        assert_eq!(body_of(resp).await, b"{\"ok\":true}");
    }
    assert_eq!(up.seen().len(), 5);
    assert_eq!(up.connections(), 1);
    assert_eq!(up.seen()[0].body, b"hi");
}

/// A redirect is an answer, not followed (the providers turn it into an error; credentials are
/// never sent to the other place).
#[tokio::test]
async fn redirects_are_not_followed() {
    let up = Upstream::start(
        b"HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    let resp = Client::direct()
        .unwrap()
        .post(format!("{}/x", up.url))
        .bearer_auth("sk-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(up.seen().len(), 1);
}

/// A streamed (chunked) answer arrives piece by piece through `bytes_stream`.
#[tokio::test]
async fn a_chunked_answer_streams() {
    let up = Upstream::start(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n3\r\n1\n\n\r\n0\r\n\r\n",
    )
    .await;
    for client in [Client::direct().unwrap(), reqwest_path()] {
        let resp = client.post(format!("{}/s", up.url)).send().await.unwrap();
        assert_eq!(resp.content_length(), None);
        let mut got = Vec::new();
        let mut stream = std::pin::pin!(resp.bytes_stream());
        while let Some(piece) = stream.next().await {
            got.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(got, b"data: 1\n\n", "{client:?}");
    }
}

/// Nothing listening: a connect error (retryable by the router), not a hang or a panic.
#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = Client::direct()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/x"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
}

/// `https://` speaks TLS: a plain HTTP server (which answers the handshake's bytes with a 400
/// and hangs up, as one does) is a failed connection, and it never reads the request (or its
/// token) in the clear.
#[tokio::test]
async fn https_is_tls_and_never_plaintext() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut chunk = [0u8; 4096];
            if let Ok(n) = sock.read(&mut chunk).await {
                g.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            let _ = sock
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                )
                .await;
        }
    });
    let client = Client::direct().unwrap();
    let send = client
        .post(format!("https://{addr}/x"))
        .bearer_auth("sk-secret")
        .body("secret body")
        .send();
    let e = tokio::time::timeout(Duration::from_secs(10), send)
        .await
        .expect("the handshake ends")
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    let got = got.lock().unwrap().clone();
    // A TLS record (handshake, 0x16) arrived, and nothing of the request in the clear.
    assert_eq!(got.first(), Some(&0x16), "{got:?}");
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("sk-secret") && !text.contains("POST"),
        "{text}"
    );
}

/// A credential header arrives as given, and a builder's `Debug` (should one ever be logged)
/// does not show it.
#[tokio::test]
async fn secret_headers_arrive_and_stay_out_of_debug() {
    let up = Upstream::start(OK_JSON).await;
    let client = Client::direct().unwrap();
    let rb = client
        .post(format!("{}/x", up.url))
        .secret_header("x-api-key", "sk-ant-secret-value")
        .bearer_auth("sk-bearer-value")
        .header("anthropic-version", "2023-06-01");
    let debug = format!("{rb:?}");
    assert!(
        !debug.contains("sk-ant-secret-value") && !debug.contains("sk-bearer-value"),
        "{debug}"
    );
    assert!(debug.contains("2023-06-01"), "{debug}");
    rb.send().await.unwrap();
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("x-api-key"), ["sk-ant-secret-value"]);
    assert_eq!(seen.header("authorization"), ["Bearer sk-bearer-value"]);
    // A value HTTP cannot carry is refused without being echoed.
    let e = client
        .post(format!("{}/x", up.url))
        .secret_header("x-api-key", "sk-broken\nvalue")
        .send()
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("sk-broken"), "{e}");
}

/// A header HTTP cannot carry fails the request before anything is sent.
#[tokio::test]
async fn a_bad_header_fails_before_sending() {
    let up = Upstream::start(OK_JSON).await;
    let client = Client::direct().unwrap();
    let e = client
        .post(format!("{}/x", up.url))
        .header("x-key", "line\nbreak")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Request(_)), "{e:?}");
    let e = client
        .post(format!("{}/x", up.url))
        .header("bad name", "v")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::Request(_)), "{e:?}");
    assert!(up.seen().is_empty());
}

#[test]
fn urls_are_read_as_reqwest_read_them() {
    let u = parse_uri("https://api.example.com/v1/chat/completions?api-version=2024").unwrap();
    assert_eq!(
        u.to_string(),
        "https://api.example.com/v1/chat/completions?api-version=2024"
    );
    // What HTTP's grammar refuses as it is is percent-encoded, as a WHATWG URL.
    let u = parse_uri("https://host/models/my model é:generateContent").unwrap();
    assert_eq!(
        u.to_string(),
        "https://host/models/my%20model%20%C3%A9:generateContent"
    );
    assert!(parse_uri("not a url").is_err());
    assert!(parse_uri("/relative/path").is_err());
}

#[test]
fn a_proxy_in_the_environment_is_noticed() {
    let env = |pairs: &[(&str, &str)]| {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k: &str| m.get(k).cloned()
    };
    assert!(!proxy_configured(env(&[])));
    assert!(!proxy_configured(env(&[("NO_PROXY", "localhost")])));
    assert!(!proxy_configured(env(&[("HTTPS_PROXY", " ")])));
    for var in PROXY_VARS {
        assert!(
            proxy_configured(env(&[(var, "http://proxy:3128")])),
            "{var}"
        );
    }
}

/// `Host` is set to `host:port` only where hyper's client would have formatted that itself.
#[test]
fn host_with_a_port_is_set_as_the_client_would() {
    let host = |url: &str, preset: Option<&str>| {
        let mut h = HeaderMap::new();
        if let Some(p) = preset {
            h.insert(header::HOST, HeaderValue::from_str(p).unwrap());
        }
        host_with_port(&url.parse::<Uri>().unwrap(), &mut h);
        h.get(header::HOST).map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        host("http://127.0.0.1:18081/v1/x", None).as_deref(),
        Some("127.0.0.1:18081")
    );
    assert_eq!(
        host("https://[::1]:8443/", None).as_deref(),
        Some("[::1]:8443")
    );
    assert_eq!(host("https://api.openai.com/v1", None), None);
    assert_eq!(host("https://api.openai.com:443/v1", None), None);
    assert_eq!(host("http://example.com:80/", None), None);
    assert_eq!(host("http://u:p@example.com:8080/", None), None);
    assert_eq!(
        host("http://example.com:8080/", Some("other")).as_deref(),
        Some("other")
    );
}
