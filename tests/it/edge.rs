//! The HTTP edge: bad input, limits, admin API, models, metrics, embeddings, shutdown drain.

use std::time::Duration;

use serde_json::{Value, json};

use crate::conformance::{FAST_ROUTER, hello};
use crate::gateway::{Gateway, header};
use crate::mock::{Mock, Reply};

fn config(mock: &Mock, extra: &str) -> String {
    format!(
        "{extra}\n[[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"env.SWITCHYARD_TEST_KEY_NEVER_SHOWN\"]\nmodels = [\"gpt-4o-mini\", \"text-embedding-3-small\"]\n\n[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nkeys = [{{ value = \"sk-ant-inline-secret-value\", weight = 2 }}]\n{FAST_ROUTER}\n[[routes]]\nmodel = \"smart\"\ntargets = [{{ model = \"openai/gpt-4o-mini\", weight = 0.8 }}, {{ model = \"claude/claude-sonnet-4-5\", weight = 0.2 }}]\nfallbacks = [\"claude/claude-haiku-4-5\"]\n",
        mock.url(),
        mock.url()
    )
}

async fn start(extra: &str) -> (Mock, Gateway) {
    let env = |k: &str| match k {
        "SWITCHYARD_TEST_KEY_NEVER_SHOWN" => Some("sk-proj-env-secret-value-123456".to_owned()),
        "SWITCHYARD_TEST_ADMIN_TOKEN" => Some("admin-token-xyz".to_owned()),
        _ => None,
    };
    let mock = Mock::start().await;
    let gw = Gateway::start_env(&config(&mock, extra), &env).await;
    (mock, gw)
}

/// Serves a hand-made upstream on 127.0.0.1:0.
async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn raw(gw: &Gateway, path: &str, body: &'static str) -> (u16, Value) {
    let r = gw
        .http
        .post(gw.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (mock, gw) = start("").await;
    let (status, body) = raw(&gw, "/v1/chat/completions", "{\"model\": \"x\", ").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn wrong_types_name_the_field() {
    let (_mock, gw) = start("").await;
    let (status, body) = raw(&gw, "/v1/chat/completions", r#"{"model": "smart", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`temperature`"),
        "{body}"
    );
    let (status, body) = raw(
        &gw,
        "/v1/chat/completions",
        r#"{"model": "smart", "messages": [{"role": "wizard", "content": "hi"}]}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].role"),
        "{body}"
    );
    let (status, body) = raw(&gw, "/v1/chat/completions", r#"{"messages": []}"#).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("model"),
        "{body}"
    );
    let (status, body) = raw(
        &gw,
        "/v1/chat/completions",
        r#"{"model": "smart", "messages": []}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages"),
        "{body}"
    );
    let (status, _) = raw(&gw, "/v1/chat/completions", r#"[1, 2, 3]"#).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn unknown_model_is_404_with_a_hint() {
    let (_mock, gw) = start("").await;
    let (status, h, body) = gw.chat(&hello("nope")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("openai, claude") && msg.contains("smart"),
        "{msg}"
    );
    assert!(!header(&h, "x-request-id").is_empty());
    assert_eq!(header(&h, "x-switchyard-attempts"), "0");
}

#[tokio::test]
async fn bare_model_names_listed_by_a_provider_resolve() {
    let (mock, gw) = start("").await;
    let (status, h, _) = gw.chat(&hello("gpt-4o-mini")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-switchyard-provider"), "openai");
    assert_eq!(mock.last().body["model"], "gpt-4o-mini");
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let (mock, gw) = start("[server]\nmax_body_bytes = 1024").await;
    let big = "x".repeat(4096);
    let r = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "smart", "messages": [{"role": "user", "content": big}]}),
        )
        .await;
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn client_request_id_is_echoed() {
    let (_mock, gw) = start("").await;
    let r = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .header("x-request-id", "trace-abc-123")
        .json(&hello("smart"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-request-id"), "trace-abc-123");
}

#[tokio::test]
async fn unknown_fields_reach_openai_compatible_upstreams() {
    let (mock, gw) = start("").await;
    let mut body = hello("openai/gpt-4o-mini");
    body["response_format"] = json!({"type": "json_object"});
    body["seed"] = json!(42);
    body["logit_bias"] = json!({"50256": -100});
    assert_eq!(gw.chat(&body).await.0, 200);
    let sent = mock.last().body;
    assert_eq!(sent["response_format"], json!({"type": "json_object"}));
    assert_eq!(sent["seed"], 42);
    assert_eq!(sent["logit_bias"], json!({"50256": -100}));
}

#[tokio::test]
async fn models_lists_routes_and_provider_models() {
    let (_mock, gw) = start("").await;
    let v: Value = gw.get("/v1/models", None).await.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "smart",
            "openai/gpt-4o-mini",
            "openai/text-embedding-3-small"
        ]
    );
    // The same under /openai/v1 and /openai for SDKs with those base URLs.
    let v: Value = gw
        .get("/v1/models/openai/gpt-4o-mini", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], "openai/gpt-4o-mini");
    assert_eq!(v["owned_by"], "openai");
    let r = gw.get("/openai/v1/models/smart", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(gw.get("/v1/models/nope", None).await.status(), 404);
    for path in ["/openai/v1/models", "/openai/models"] {
        let v: Value = gw.get(path, None).await.json().await.unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 3, "{path}");
    }
}

#[tokio::test]
async fn embeddings_are_routed() {
    let (mock, gw) = start("").await;
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "openai/text-embedding-3-small", "input": "hello"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-switchyard-provider"), "openai");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 3);
    let seen = mock.last();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.body["model"], "text-embedding-3-small");
    // Anthropic has no embeddings API: a clear 400.
    let r = gw
        .post(
            "/v1/embeddings",
            &json!({"model": "claude/x", "input": "hello"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = gw
        .post("/openai/v1/embeddings", &json!({"input": "hello"}))
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn admin_api_needs_the_token_and_never_shows_keys() {
    let (_mock, gw) = start("[server]\nadmin_token = \"env.SWITCHYARD_TEST_ADMIN_TOKEN\"").await;
    for path in ["/api/providers", "/api/routes"] {
        assert_eq!(gw.get(path, None).await.status(), 401, "{path}");
        assert_eq!(gw.get(path, Some("wrong")).await.status(), 401, "{path}");
    }
    let r = gw.get("/api/providers", Some("admin-token-xyz")).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("env-secret-value") && !text.contains("inline-secret-value"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["data"][0]["keys"][0]["source"],
        "env.SWITCHYARD_TEST_KEY_NEVER_SHOWN"
    );
    assert_eq!(
        v["data"][1]["keys"][0],
        json!({"source": "inline", "weight": 2.0})
    );
    assert_eq!(v["data"][1]["kind"], "anthropic");
    let v: Value = gw
        .get("/api/routes", Some("admin-token-xyz"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["model"], "smart");
    assert_eq!(
        v["data"][0]["targets"][1],
        json!({"model": "claude/claude-sonnet-4-5", "weight": 0.2})
    );
    assert_eq!(
        v["data"][0]["fallbacks"],
        json!(["claude/claude-haiku-4-5"])
    );
}

#[tokio::test]
async fn metrics_count_requests_and_attempts() {
    let (mock, gw) = start("").await;
    mock.script([Reply::Status(500, None)]);
    assert_eq!(gw.chat(&hello("openai/gpt-4o-mini")).await.0, 200);
    assert_eq!(gw.chat(&hello("nope")).await.0, 404);
    let text = gw.get("/metrics", None).await.text().await.unwrap();
    for needle in [
        "switchyard_requests_total{endpoint=\"chat\",status=\"2xx\",stream=\"false\"} 1",
        "switchyard_requests_total{endpoint=\"chat\",status=\"4xx\",stream=\"false\"} 1",
        "switchyard_upstream_attempts_total{provider=\"openai\",outcome=\"ok\"} 1",
        "switchyard_upstream_attempts_total{provider=\"openai\",outcome=\"server_error\"} 1",
        "switchyard_tokens_total{provider=\"openai\",direction=\"input\"} 19",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_upstream_attempt_duration_seconds_count{provider=\"openai\"} 2",
        "switchyard_in_flight_requests 0",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[tokio::test]
async fn health_ready_and_unknown_paths() {
    let (_mock, gw) = start("").await;
    assert_eq!(gw.get("/health", None).await.status(), 200);
    let v: Value = gw.get("/ready", None).await.json().await.unwrap();
    assert_eq!(v["status"], "ready");
    let r = gw.get("/v2/nothing", None).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let (mock, gw) = start("").await;
    mock.always(Reply::Slow(Duration::from_millis(400)));
    let client = gw.http.clone();
    let url = gw.url("/v1/chat/completions");
    let pending = tokio::spawn(async move {
        client
            .post(url)
            .json(&hello("openai/gpt-4o-mini"))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = gw.addr;
    gw.shutdown().await;
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the in-flight request completes");
    // And new connections are refused afterwards.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn zero_config_without_keys_says_what_to_set() {
    let cfg = switchyard::config::Config::zero_config(&|_| None);
    let gw = Gateway::with_config(cfg).await;
    let (status, _, body) = gw.chat(&hello("gpt-4o-mini")).await;
    assert_eq!(status, 503);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("OPENAI_API_KEY") && msg.contains("ANTHROPIC_API_KEY"),
        "{msg}"
    );
}

#[tokio::test]
async fn zero_config_detects_providers_from_the_environment() {
    let mock = Mock::start().await;
    let url = mock.url();
    let env = move |k: &str| match k {
        "OPENAI_API_KEY" => Some("sk-env-openai".to_owned()),
        "OPENAI_BASE_URL" => Some(format!("{url}/v1")),
        "ANTHROPIC_API_KEY" => Some("sk-env-anthropic".to_owned()),
        "ANTHROPIC_BASE_URL" => Some(url.clone()),
        _ => None,
    };
    let cfg = switchyard::config::Config::zero_config(&env);
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8080");
    let gw = Gateway::with_config(cfg).await;
    let (status, h, _) = gw.chat(&hello("anthropic/claude-sonnet-4-5")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "x-switchyard-provider"), "anthropic");
    assert_eq!(mock.last().key().as_deref(), Some("sk-env-anthropic"));
    let (status, _, _) = gw.chat(&hello("openai/gpt-4o-mini")).await;
    assert_eq!(status, 200);
    assert_eq!(mock.last().key().as_deref(), Some("sk-env-openai"));
}

#[tokio::test]
async fn hostile_bodies_get_400_never_a_crash() {
    let (mock, gw) = start("").await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<String> = vec![
        String::new(),
        "null".into(),
        "\"just a string\"".into(),
        "{\"model\": 1e999999, \"messages\": []}".into(),
        deep,
        "{\"model\": \"smart\", \"messages\": [{\"role\": \"user\", \"content\": {\"nested\": true}}]}".into(),
        "{\"model\": \"smart\", \"messages\": [{\"role\": \"assistant\", \"tool_calls\": [{\"id\": 5}]}]}".into(),
        "{\"model\": \"smart\", \"messages\": [{\"role\": \"user\", \"content\": \"\\ud800\"}]}".into(),
        "\u{feff}{}".into(),
        String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x7b]).into_owned(),
    ];
    for (i, b) in bodies.into_iter().enumerate() {
        for path in [
            "/v1/chat/completions",
            "/anthropic/v1/messages",
            "/v1/embeddings",
        ] {
            let r = gw
                .http
                .post(gw.url(path))
                .header("content-type", "application/json")
                .body(b.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "body #{i} on {path}");
            let v: Value = r.json().await.unwrap();
            assert!(
                v["error"]["message"].is_string(),
                "body #{i} on {path}: {v}"
            );
        }
    }
    assert_eq!(mock.calls(), 0);
    // Still serving.
    assert_eq!(gw.chat(&hello("smart")).await.0, 200);
}

#[tokio::test]
async fn upstream_redirects_are_not_followed() {
    // A tiny upstream that redirects every request elsewhere.
    let target = Mock::start().await;
    let app = axum::Router::new().fallback(move || {
        let to = format!("{}/v1/chat/completions", target.url());
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [("location", to)],
            )
        }
    });
    let addr = serve(app).await;
    let cfg = format!(
        "[[providers]]\nname = \"r\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nkeys = [\"k\"]\nmax_retries = 0\n"
    );
    let gw = Gateway::start(&cfg).await;
    let (status, _, body) = gw.chat(&hello("r/m")).await;
    assert_eq!(status, 502, "{body}");
}

#[tokio::test]
async fn oversized_upstream_answers_are_refused() {
    // An upstream that answers with a body over the 64 MiB cap, without a content-length.
    let app = axum::Router::new().fallback(|| async {
        let chunk = bytes::Bytes::from(vec![b' '; 1024 * 1024]);
        let body = futures_util::stream::iter(
            (0..70).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        axum::body::Body::from_stream(body)
    });
    let addr = serve(app).await;
    let cfg = format!(
        "[[providers]]\nname = \"big\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nkeys = [\"k\"]\n"
    );
    let gw = Gateway::start(&cfg).await;
    let (status, _, body) = gw.chat(&hello("big/m")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 64 MiB"),
        "{body}"
    );
}

#[tokio::test]
async fn tls_upstreams_go_through_rustls() {
    // An https base URL pointing at a plain-HTTP server: the TLS handshake fails cleanly.
    let mock = Mock::start().await;
    let cfg = format!(
        "[[providers]]\nname = \"t\"\nkind = \"openai\"\nbase_url = \"https://{}/v1\"\nkeys = [\"k\"]\nmax_retries = 0\n",
        mock.addr
    );
    let gw = Gateway::start(&cfg).await;
    let (status, _, body) = gw.chat(&hello("t/m")).await;
    assert_eq!(status, 502, "{body}");
    let msg = body["error"]["message"].as_str().unwrap().to_lowercase();
    // rustls rejects the plain-HTTP answer: "received corrupt message of type InvalidContentType".
    assert!(
        msg.contains("cannot connect to upstream") && msg.contains("corrupt message"),
        "{msg}"
    );
}
