//! Router behaviour seen from outside: weights, key rotation, Retry-After, breakers, timeouts, streams.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::conformance::{FAST_ROUTER, hello};
use crate::gateway::{Gateway, fold_openai, header, sse};
use crate::mock::{Mock, Reply, TEXT};

fn openai_provider(name: &str, mock: &Mock, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n{extra}\n",
        mock.url()
    )
}

/// A gateway with one OpenAI-format provider `p` (config lines `extra`) in front of a mock.
async fn single(extra: &str) -> (Mock, Gateway) {
    let mock = Mock::start().await;
    let gw = Gateway::start(&format!(
        "{}{FAST_ROUTER}",
        openai_provider("p", &mock, extra)
    ))
    .await;
    (mock, gw)
}

/// `hello(model)` asking for a streamed answer.
fn hello_streamed(model: &str) -> Value {
    let mut body = hello(model);
    body["stream"] = json!(true);
    body
}

/// A gateway with route `r`: target `a/x` (config lines `a_extra`), fallback `b/y`.
async fn with_fallback(a_extra: &str) -> (Mock, Mock, Gateway) {
    let a = Mock::start().await;
    let b = Mock::start().await;
    let cfg = format!(
        "{}{}{FAST_ROUTER}[[routes]]\nmodel = \"r\"\ntargets = [{{ model = \"a/x\" }}]\nfallbacks = [\"b/y\"]\n",
        openai_provider("a", &a, a_extra),
        openai_provider("b", &b, "keys = [\"kb\"]")
    );
    (a, b, Gateway::start(&cfg).await)
}

#[tokio::test]
async fn keys_are_picked_by_weight() {
    let mock = Mock::start().await;
    let cfg = openai_provider(
        "p",
        &mock,
        "keys = [{ value = \"k-heavy\", weight = 0.8 }, { value = \"k-light\", weight = 0.2 }]",
    );
    let gw = Gateway::start(&cfg).await;
    for _ in 0..300 {
        assert_eq!(gw.chat(&hello("p/m")).await.0, 200);
    }
    let heavy = mock
        .seen()
        .iter()
        .filter(|s| s.key().as_deref() == Some("k-heavy"))
        .count();
    // Binomial(300, 0.8): mean 240, sd ~6.9; 200..280 is beyond 5 sd either way.
    assert!(
        (200..=280).contains(&heavy),
        "k-heavy used {heavy}/300 times"
    );
}

#[tokio::test]
async fn targets_are_picked_by_weight() {
    let a = Mock::start().await;
    let b = Mock::start().await;
    let cfg = format!(
        "{}{}[[routes]]\nmodel = \"mix\"\ntargets = [{{ model = \"a/x\", weight = 3 }}, {{ model = \"b/y\", weight = 1 }}]\n",
        openai_provider("a", &a, "keys = [\"ka\"]"),
        openai_provider("b", &b, "keys = [\"kb\"]")
    );
    let gw = Gateway::start(&cfg).await;
    for _ in 0..200 {
        assert_eq!(gw.chat(&hello("mix")).await.0, 200);
    }
    // Binomial(200, 0.75): mean 150, sd ~6.1.
    assert!(
        (120..=180).contains(&a.calls()),
        "a served {}/200",
        a.calls()
    );
    assert_eq!(a.calls() + b.calls(), 200);
}

#[tokio::test]
async fn rejected_key_moves_to_the_next_key() {
    let (mock, gw) = single(
        "keys = [{ value = \"k-bad\", weight = 1000 }, { value = \"k-good\", weight = 0.001 }]",
    )
    .await;
    mock.reject_key("k-bad");
    let (status, h, body) = gw.chat(&hello("p/m")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-switchyard-attempts"), "2");
    let keys: Vec<String> = mock.seen().iter().filter_map(|s| s.key()).collect();
    assert_eq!(keys, ["k-bad", "k-good"]);
}

#[tokio::test]
async fn all_keys_rejected_is_502_without_the_key() {
    let (mock, gw) = single("keys = [\"sk-live-0123456789abcdef\"]").await;
    mock.reject_key("sk-live-0123456789abcdef");
    let r = gw.post("/v1/chat/completions", &hello("p/m")).await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(text.contains("Incorrect API key provided"), "{text}");
    assert!(!text.contains("0123456789abcdef"), "{text}");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (mock, gw) = single("keys = [\"k\"]").await;
    mock.script([Reply::Status(429, Some(1))]);
    let t = Instant::now();
    let (status, h, _) = gw.chat(&hello("p/m")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-switchyard-attempts"), "2");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn rate_limit_with_two_keys_switches_without_waiting() {
    let (mock, gw) = single("keys = [\"k1\", \"k2\"]").await;
    mock.script([Reply::Status(429, Some(30))]);
    let t = Instant::now();
    let (status, _, _) = gw.chat(&hello("p/m")).await;
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(5));
    let keys: Vec<String> = mock.seen().iter().filter_map(|s| s.key()).collect();
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test]
async fn long_retry_after_falls_back_instead_of_waiting() {
    let (a, b, gw) = with_fallback("keys = [\"ka\"]").await;
    a.always(Reply::Status(429, Some(120)));
    let t = Instant::now();
    let (status, h, _) = gw.chat(&hello("r")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-switchyard-provider"), "b");
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_retry_after_no_duration_holds_is_ignored() {
    // `1e300` seconds overflows a Duration: it must be read as no Retry-After, not end the
    // request without an answer.
    let (mock, gw) = single("keys = [\"k\"]\nmax_retries = 0").await;
    for value in ["1e300", "inf", "NaN"] {
        mock.always(Reply::StatusRawRetryAfter(429, value));
        let (status, _, body) = gw.chat(&hello("p/m")).await;
        assert_eq!(status, 429, "{value}: {body}");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{value}: {body}");
    }
    mock.always(Reply::Ok);
    assert_eq!(gw.chat(&hello("p/m")).await.0, 200);
}

#[tokio::test]
async fn an_endless_upstream_event_is_cut_at_16_mib_with_a_clear_error() {
    // 64 MiB without a line end: the gateway stops reading at 16 MiB and says so, instead of
    // holding the event in memory until it runs out.
    let (mock, gw) = single("keys = [\"k\"]\nmax_retries = 0").await;
    mock.always(Reply::EndlessEvent(64));
    let req = hello_streamed("p/m");
    // Nothing reached the client yet, so the failure is an error status, not a broken stream.
    let (status, _, body) = gw.chat(&req).await;
    assert_eq!(status, 502, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("over 16 MiB"), "{body}");
    // The same answer asked without streaming: the same clear error.
    let (status, _, body) = gw.chat(&hello("p/m")).await;
    assert_eq!(status, 502, "{body}");
    // The gateway is still there.
    mock.always(Reply::Ok);
    assert_eq!(gw.chat(&hello("p/m")).await.0, 200);
}

#[tokio::test]
async fn exhausted_rate_limit_passes_429_and_retry_after() {
    let (mock, gw) = single("keys = [\"k\"]").await;
    mock.always(Reply::Status(429, Some(60)));
    let (status, h, body) = gw.chat(&hello("p/m")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(header(&h, "retry-after"), "60");
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn breaker_opens_then_half_opens() {
    let mock = Mock::start().await;
    mock.always(Reply::Status(500, None));
    let cfg = format!(
        "{}[router]\nretry_base_ms = 1\nbreaker_failures = 2\nbreaker_cooldown_ms = 300\n",
        openai_provider("p", &mock, "keys = [\"k\"]\nmax_retries = 0")
    );
    let gw = Gateway::start(&cfg).await;
    assert_eq!(gw.chat(&hello("p/m")).await.0, 502);
    assert_eq!(gw.chat(&hello("p/m")).await.0, 502);
    assert_eq!(mock.calls(), 2);
    // Open: answered without calling the upstream.
    let (status, h, body) = gw.chat(&hello("p/m")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "circuit_open");
    assert!(!header(&h, "retry-after").is_empty());
    assert_eq!(mock.calls(), 2);
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("switchyard_circuit_breakers_open{provider=\"p\"} 1"),
        "{metrics}"
    );
    // After the cool-down one probe goes through; its success closes the breaker.
    tokio::time::sleep(Duration::from_millis(350)).await;
    mock.always(Reply::Ok);
    assert_eq!(gw.chat(&hello("p/m")).await.0, 200);
    assert_eq!(gw.chat(&hello("p/m")).await.0, 200);
    assert_eq!(mock.calls(), 4);
}

#[tokio::test]
async fn failed_probe_reopens_the_breaker() {
    let mock = Mock::start().await;
    mock.always(Reply::Status(500, None));
    let cfg = format!(
        "{}[router]\nretry_base_ms = 1\nbreaker_failures = 1\nbreaker_cooldown_ms = 200\n",
        openai_provider("p", &mock, "keys = [\"k\"]\nmax_retries = 0")
    );
    let gw = Gateway::start(&cfg).await;
    assert_eq!(gw.chat(&hello("p/m")).await.0, 502);
    assert_eq!(gw.chat(&hello("p/m")).await.0, 503);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        gw.chat(&hello("p/m")).await.0,
        502,
        "the probe goes through and fails"
    );
    assert_eq!(
        gw.chat(&hello("p/m")).await.0,
        503,
        "and the breaker is open again"
    );
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn slow_upstream_times_out_and_falls_back() {
    let a = Mock::start().await;
    let b = Mock::start().await;
    a.always(Reply::Slow(Duration::from_secs(5)));
    let cfg = format!(
        "{}{}{FAST_ROUTER}[[routes]]\nmodel = \"r\"\ntargets = [{{ model = \"a/x\" }}]\nfallbacks = [\"b/y\"]\n",
        openai_provider(
            "a",
            &a,
            "keys = [\"ka\"]\ntimeout_ms = 150\nmax_retries = 0"
        ),
        openai_provider("b", &b, "keys = [\"kb\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let t = Instant::now();
    let (status, h, _) = gw.chat(&hello("r")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-switchyard-provider"), "b");
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn timeout_without_fallback_is_504() {
    let (mock, gw) = single("keys = [\"k\"]\ntimeout_ms = 100\nmax_retries = 1").await;
    mock.always(Reply::Slow(Duration::from_secs(5)));
    let (status, h, body) = gw.chat(&hello("p/m")).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(header(&h, "x-switchyard-attempts"), "2");
}

#[tokio::test]
async fn connect_error_falls_back() {
    let good = Mock::start().await;
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = format!(
        "[[providers]]\nname = \"dead\"\nkind = \"openai\"\nbase_url = \"http://{dead}/v1\"\nkeys = [\"k\"]\nmax_retries = 1\n{}{FAST_ROUTER}[[routes]]\nmodel = \"r\"\ntargets = [{{ model = \"dead/x\" }}]\nfallbacks = [\"b/y\"]\n",
        openai_provider("b", &good, "keys = [\"kb\"]")
    );
    let gw = Gateway::start(&cfg).await;
    let (status, h, _) = gw.chat(&hello("r")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-switchyard-provider"), "b");
    assert_eq!(header(&h, "x-switchyard-attempts"), "3");
}

#[tokio::test]
async fn stream_that_dies_midway_ends_with_an_error_event() {
    let (mock, gw) = single("keys = [\"k\"]").await;
    mock.always(Reply::Cut(3));
    let body = hello_streamed("p/m");
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let events = sse(r).await;
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["code"], "stream_error", "{last}");
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    let (text, _, _, _) = fold_openai(&events[..events.len() - 1]);
    assert_eq!(text, "Hello! How can I");
    assert_eq!(mock.calls(), 1, "no retry after the first byte");
}

#[tokio::test]
async fn stream_that_dies_before_the_first_byte_is_retried() {
    let (mock, gw) = single("keys = [\"k\"]").await;
    mock.script([Reply::Reset]);
    let body = hello_streamed("p/m");
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(header(r.headers(), "x-switchyard-attempts"), "2");
    let (text, _, _, _) = fold_openai(&sse(r).await);
    assert_eq!(text, TEXT);
}

#[tokio::test]
async fn an_upstream_silent_mid_stream_for_its_timeout_ends_the_stream_with_an_error() {
    let (mock, gw) = single("keys = [\"k\"]\ntimeout_ms = 300").await;
    mock.always(Reply::Stall(2));
    let body = hello_streamed("p/m");
    let started = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let events = sse(r).await;
    let took = started.elapsed();
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["code"], "stream_error", "{last}");
    assert_eq!(
        last["error"]["message"], "upstream sent nothing for 300 ms",
        "{last}"
    );
    assert_eq!(
        events.len(),
        3,
        "the two chunks sent, then the error: {events:?}"
    );
    assert!(events.iter().all(|e| e.data != "[DONE]"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "ended after {took:?}"
    );
    assert_eq!(mock.calls(), 1, "no retry after the first byte");
}

#[tokio::test]
async fn keep_alive_comments_cover_a_silent_upstream() {
    let mock = Mock::start().await;
    let cfg = format!(
        "[server]\nsse_keep_alive_ms = 100\n{}{FAST_ROUTER}",
        openai_provider("p", &mock, "keys = [\"k\"]")
    );
    mock.always(Reply::Drip(Duration::from_millis(250)));
    let gw = Gateway::start(&cfg).await;
    let body = hello_streamed("p/m");
    let text = gw
        .post("/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.contains("\n\n: keep-alive\n\n"), "{text}");
    let events = text
        .split("\n\n")
        .filter(|e| e.starts_with("data: {"))
        .count();
    assert_eq!(
        events, 5,
        "every recorded chunk but the unrequested usage chunk arrives: {text}"
    );
}

#[tokio::test]
async fn a_rejected_key_stays_out_after_a_rate_limit_wait() {
    let (mock, gw) = single(
        "keys = [{ value = \"k-bad\", weight = 1000 }, { value = \"k-ok\", weight = 0.001 }]",
    )
    .await;
    mock.reject_key("k-bad");
    mock.script([Reply::Status(429, Some(1))]);
    let (status, h, body) = gw.chat(&hello("p/m")).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<String> = mock.seen().iter().filter_map(|s| s.key()).collect();
    assert_eq!(
        keys,
        ["k-bad", "k-ok", "k-ok"],
        "after the wait only the rate-limited key comes back"
    );
    assert_eq!(header(&h, "x-switchyard-attempts"), "3");
}
