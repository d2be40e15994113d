//! Governance end to end (embedded store): virtual keys from the config and the admin API, the
//! error of every refusal in the shape the SDKs expect, budgets that hold under 64 concurrent
//! requests, rate limits and their headers, accounting of streams and cache hits, rotation with a
//! grace period, restarts, tenant-scoped caching, and the exposure refusal.

use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway::{Gateway, client, header};
use crate::mock::{Mock, Reply};
use crate::redis_server::RedisServer;

/// The store under test: every test below runs against both (`embedded::*`, `redis::*`).
pub enum Backend {
    /// The sled store.
    Embedded,
    /// A real redis-server.
    Redis(RedisServer),
}

impl Backend {
    /// `[governance]` with this store.
    pub fn gov(&self) -> String {
        match self {
            Self::Embedded => "[governance]\n".into(),
            Self::Redis(r) => format!(
                "[governance]\nstore = \"redis\"\nredis_url = \"{}\"\n",
                r.url
            ),
        }
    }

    /// The config with this store in its `[governance]` table.
    pub fn apply(&self, cfg: &str) -> String {
        cfg.replacen("[governance]\n", &self.gov(), 1)
    }
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test]
            async fn $name() {
                super::$name(&super::Backend::Embedded).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                let Some(r) = crate::redis_server::RedisServer::start() else { return };
                super::$name(&super::Backend::Redis(r)).await;
            })*
        }
    };
}

both_stores!(
    keys_from_the_config_gate_every_ingress,
    api_keys_are_shown_once_rotate_with_grace_and_keep_only_hashes,
    a_budget_holds_under_64_concurrent_requests,
    budgets_name_the_level_and_a_worst_case_too_big_names_max_tokens,
    rate_limits_answer_429_with_openai_headers,
    streams_and_cache_hits_are_accounted,
    keys_see_and_run_only_their_mcp_tools,
    a_cut_stream_is_charged_what_was_used,
    per_model_limits_apply_to_their_models_only,
    a_changed_key_is_seen_on_its_next_request,
);

/// A config-declared key's secret (from the environment, as the config says `env.NAME`).
const PROD: &str = "prod-key-0123456789abcdef";
const OFF: &str = "off-key-0123456789abcdef";
const OLD: &str = "old-key-0123456789abcdef";

fn env(k: &str) -> Option<String> {
    match k {
        "PROD_KEY" => Some(PROD.into()),
        "OFF_KEY" => Some(OFF.into()),
        "OLD_KEY" => Some(OLD.into()),
        _ => None,
    }
}

/// OpenAI's own API: its answers travel as their bytes (read for the usage) through the OpenAI
/// ingress, so what is charged is read there (`governance_redis.rs` charges decoded answers).
fn provider(mock: &Mock) -> String {
    format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"upstream-key\"]\n\n",
        mock.url()
    )
}

fn chat_body(extra: Value) -> Value {
    let mut b =
        json!({"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    if let (Value::Object(m), Value::Object(e)) = (&mut b, extra) {
        m.extend(e);
    }
    b
}

async fn chat_as(gw: &Gateway, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut rb = client().post(gw.url("/v1/chat/completions")).json(body);
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    rb.send().await.unwrap()
}

async fn err_code(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn admin(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = client().request(method, gw.url(path));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn keys_from_the_config_gate_every_ingress(b: &Backend) {
    let mock = Mock::start().await;
    let cfg = format!(
        "{}[governance]\nrequire_virtual_key = true\n\n\
         [[governance.keys]]\nid = \"prod\"\nvalue = \"env.PROD_KEY\"\nmodels = [\"mock/*\"]\ndeny_models = [\"mock/o1*\"]\n\n\
         [[governance.keys]]\nid = \"off\"\nvalue = \"env.OFF_KEY\"\nactive = false\n\n\
         [[governance.keys]]\nid = \"old\"\nvalue = \"env.OLD_KEY\"\nexpires_at = \"2020-01-01T00:00:00Z\"\n",
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start_env(&cfg, &env).await;
    let body = chat_body(json!({}));
    // Missing, unknown, disabled, expired.
    let (s, code, _) = err_code(chat_as(&gw, None, &body).await).await;
    assert_eq!((s, code.as_str()), (401, "invalid_api_key"));
    let (s, code, _) = err_code(chat_as(&gw, Some("sk-sy-nope"), &body).await).await;
    assert_eq!((s, code.as_str()), (401, "invalid_api_key"));
    let (s, code, _) = err_code(chat_as(&gw, Some(OFF), &body).await).await;
    assert_eq!((s, code.as_str()), (403, "key_disabled"));
    let (s, code, msg) = err_code(chat_as(&gw, Some(OLD), &body).await).await;
    assert_eq!((s, code.as_str()), (401, "invalid_api_key"));
    assert!(msg.contains("expired"), "{msg}");
    // A model outside the key's list, named.
    let denied = chat_body(json!({"model": "mock/o1-mini"}));
    let (s, code, msg) = err_code(chat_as(&gw, Some(PROD), &denied).await).await;
    assert_eq!((s, code.as_str()), (403, "model_not_allowed"));
    assert!(msg.contains("mock/o1-mini"), "{msg}");
    // The key in each header the SDKs use; the bearer scheme in any case.
    let r = chat_as(&gw, Some(PROD), &body).await;
    assert_eq!(r.status(), 200);
    for (name, value) in [
        ("x-api-key", PROD.to_owned()),
        ("api-key", PROD.to_owned()),
        ("authorization", format!("bearer {PROD}")),
    ] {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header(name, value)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
    // Anthropic ingress: its error shape.
    let msg = json!({"model": "mock/gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let r = client()
        .post(gw.url("/anthropic/v1/messages"))
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let r = client()
        .post(gw.url("/anthropic/v1/messages"))
        .header("x-api-key", PROD)
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Embeddings are governed too.
    let r = client()
        .post(gw.url("/v1/embeddings"))
        .json(&json!({"model": "mock/text-embedding-3-small", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The request log names the key, never the secret.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = gw
        .get("/api/logs?key=prod", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(logs.contains("\"key\":\"prod\""), "{logs}");
    assert!(!logs.contains(PROD));
    let keys = gw.get("/api/keys", None).await.text().await.unwrap();
    assert!(
        !keys.contains(PROD) && keys.contains("\"source\":\"config\""),
        "{keys}"
    );
    // Config entities are read-only through the API.
    let (s, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        "/api/keys/prod",
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(s, 409, "{v}");
    gw.shutdown().await;
}

async fn api_keys_are_shown_once_rotate_with_grace_and_keep_only_hashes(b: &Backend) {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = {:?}\n\n{}[governance]\nrequire_virtual_key = true\n",
        dir.path(),
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start(&cfg).await;
    let post = reqwest::Method::POST;
    let (s, c) = admin(&gw, post.clone(), "/api/customers", Some(json!({"id": "acme", "budgets": [{"max_usd": 5.0, "period": "1M", "calendar_aligned": true}]}))).await;
    assert_eq!(s, 201, "{c}");
    assert!(
        c["budgets"][0]["resets_at"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z"),
        "{c}"
    );
    let (s, t) = admin(
        &gw,
        post.clone(),
        "/api/teams",
        Some(json!({"id": "search", "customer": "acme"})),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let (s, k) = admin(
        &gw,
        post.clone(),
        "/api/keys",
        Some(json!({"id": "k1", "team": "search", "metadata": {"owner": "ana"}})),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    let secret = k["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-sy-") && secret.len() > 30);
    assert_eq!(k["prefix"], secret[..12]);
    assert_eq!(k["customer"], "acme");
    // Never shown again.
    let listed = gw.get("/api/keys", None).await.text().await.unwrap();
    assert!(!listed.contains(&secret) && listed.contains(&secret[..12]));
    let one = gw.get("/api/keys/k1", None).await.text().await.unwrap();
    assert!(!one.contains(&secret));
    assert_eq!(
        chat_as(&gw, Some(&secret), &chat_body(json!({})))
            .await
            .status(),
        200
    );
    // Bad input: a clear 400 naming the field; unknown owners; duplicates.
    for (body, needle) in [
        (
            json!({"id": "b1", "budgets": [{"max_usd": -5.0}]}),
            "max_usd",
        ),
        (
            json!({"id": "b2", "budgets": [{"max_usd": 1.0, "period": "3x"}]}),
            "period",
        ),
        (json!({"id": "b3", "models": ["openai/[x"]}), "models[0]"),
        (json!({"id": "b4", "team": "nope"}), "team"),
        (json!({"id": "bad id!"}), "id"),
        (
            json!({"id": "b5", "value": "my-own-secret-123456"}),
            "value",
        ),
        (json!({"id": "b6", "expires_at": "tomorrow"}), "expires_at"),
    ] {
        let (s, v) = admin(&gw, post.clone(), "/api/keys", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{body}: {m}");
    }
    let (s, _) = admin(&gw, post.clone(), "/api/keys", Some(json!({"id": "k1"}))).await;
    assert_eq!(s, 409);
    // Deleting an owner that still owns keys or teams: 409 naming them.
    let (s, v) = admin(&gw, reqwest::Method::DELETE, "/api/teams/search", None).await;
    assert_eq!(s, 409);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("key `k1`"),
        "{v}"
    );
    let (s, v) = admin(&gw, reqwest::Method::DELETE, "/api/customers/acme", None).await;
    assert_eq!(s, 409);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team `search`"),
        "{v}"
    );
    // PATCH merges; disabling answers 403.
    let (s, v) = admin(
        &gw,
        reqwest::Method::PATCH,
        "/api/keys/k1",
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["metadata"]["owner"], "ana");
    assert_eq!(
        chat_as(&gw, Some(&secret), &chat_body(json!({})))
            .await
            .status(),
        403
    );
    admin(
        &gw,
        reqwest::Method::PATCH,
        "/api/keys/k1",
        Some(json!({"active": true})),
    )
    .await;
    // Rotation with a grace period: both work, then only the new one.
    let (s, r) = admin(
        &gw,
        post.clone(),
        "/api/keys/k1/rotate",
        Some(json!({"grace_seconds": 1})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let new = r["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, secret);
    assert_eq!(
        chat_as(&gw, Some(&secret), &chat_body(json!({})))
            .await
            .status(),
        200
    );
    assert_eq!(
        chat_as(&gw, Some(&new), &chat_body(json!({})))
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        chat_as(&gw, Some(&secret), &chat_body(json!({})))
            .await
            .status(),
        401
    );
    assert_eq!(
        chat_as(&gw, Some(&new), &chat_body(json!({})))
            .await
            .status(),
        200
    );
    gw.shutdown().await;
    // The store holds hashes, not secrets; a restart keeps the keys.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        for s in [&secret, &new] {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} holds a secret",
                entry.display()
            );
        }
    }
    if let Backend::Redis(r) = b {
        let mut c = r.conn().await;
        let all: Vec<(String, String)> = ::redis::cmd("HGETALL")
            .arg("sy:gov:entities")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(all.iter().any(|(k, _)| k == "key/k1"), "{all:?}");
        for (_, v) in &all {
            assert!(
                !v.contains(&secret) && !v.contains(&new),
                "redis holds a secret: {v}"
            );
        }
    }
    let gw = Gateway::start(&cfg).await;
    assert_eq!(
        chat_as(&gw, Some(&new), &chat_body(json!({})))
            .await
            .status(),
        200
    );
    // Deleted: gone, its secret refused, its owners free to go.
    let (s, _) = admin(&gw, reqwest::Method::DELETE, "/api/keys/k1", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        chat_as(&gw, Some(&new), &chat_body(json!({})))
            .await
            .status(),
        401
    );
    let (s, _) = admin(&gw, reqwest::Method::GET, "/api/keys/k1", None).await;
    assert_eq!(s, 404);
    let (s, v) = admin(&gw, reqwest::Method::DELETE, "/api/teams/search", None).await;
    assert_eq!(s, 200, "{v}");
    gw.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The worst case of one request with `max_tokens` 100000 on gpt-4o-mini ($0.60 per 1M output
/// tokens) is just over $0.06; the budget covers 10 of them.
const WORST_OUTPUT: u64 = 100_000;

async fn a_budget_holds_under_64_concurrent_requests(b: &Backend) {
    let mock = Mock::start().await;
    mock.always(Reply::Slow(Duration::from_millis(600)));
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = {:?}\n\n{}[governance]\nrequire_virtual_key = true\n\n\
         [[governance.keys]]\nid = \"prod\"\nvalue = \"env.PROD_KEY\"\nbudgets = [{{ max_usd = 0.63, period = \"1d\" }}]\n",
        dir.path(),
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start_env(&cfg, &env).await;
    let body = chat_body(json!({"max_tokens": WORST_OUTPUT}));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let rb = client()
                .post(gw.url("/v1/chat/completions"))
                .bearer_auth(PROD)
                .json(&body);
            tokio::spawn(async move {
                let r = rb.send().await.unwrap();
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                (status, v)
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            200 => ok += 1,
            402 => {
                assert_eq!(v["error"]["code"], "budget_exceeded");
                let m = v["error"]["message"].as_str().unwrap();
                assert!(m.contains("key `prod`"), "{m}");
                refused += 1;
            }
            s => panic!("unexpected {s}: {v}"),
        }
    }
    assert_eq!(
        ok, 10,
        "exactly the requests whose worst case fits are admitted"
    );
    assert_eq!(refused, 54);
    assert_eq!(
        mock.calls(),
        10,
        "every admitted request was answered, no other"
    );
    // Settled (Redis: by a background write just after each answer): the actual cost (19 prompt
    // + 10 completion tokens each), nothing reserved.
    let expected = 10.0 * (19.0 * 0.15 + 10.0 * 0.60) / 1e6;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, k) = admin(&gw, reqwest::Method::GET, "/api/keys/prod", None).await;
        let b = &k["budgets"][0];
        let spent = b["spent_usd"].as_f64().unwrap();
        let reserved = b["reserved_usd"].as_f64().unwrap();
        assert!(b["resets_at"].is_string());
        if (spent - expected).abs() < 1e-9 && reserved == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{spent} vs {expected}, {reserved} reserved"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // With the reservations released, the budget admits again.
    mock.always(Reply::Ok);
    assert_eq!(chat_as(&gw, Some(PROD), &body).await.status(), 200);
    gw.shutdown().await;
    // A restart keeps the spend.
    let gw = Gateway::start_env(&cfg, &env).await;
    let (_, k) = admin(&gw, reqwest::Method::GET, "/api/keys/prod", None).await;
    let after = k["budgets"][0]["spent_usd"].as_f64().unwrap();
    assert!((after - expected * 1.1).abs() < 1e-9, "{after}");
    gw.shutdown().await;
}

async fn budgets_name_the_level_and_a_worst_case_too_big_names_max_tokens(b: &Backend) {
    let mock = Mock::start().await;
    let cfg = format!(
        "{}[governance]\n\n[[governance.customers]]\nid = \"acme\"\n\n\
         [[governance.teams]]\nid = \"search\"\ncustomer = \"acme\"\nbudgets = [{{ max_usd = 0.001 }}]\n\n\
         [[governance.keys]]\nid = \"prod\"\nteam = \"search\"\nvalue = \"env.PROD_KEY\"\n",
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start_env(&cfg, &env).await;
    // Keyless requests pass ungoverned (require_virtual_key = false).
    assert_eq!(
        chat_as(&gw, None, &chat_body(json!({}))).await.status(),
        200
    );
    let big = chat_body(json!({"max_tokens": WORST_OUTPUT}));
    let (s, code, msg) = err_code(chat_as(&gw, Some(PROD), &big).await).await;
    assert_eq!((s, code.as_str()), (402, "budget_exceeded"));
    assert!(
        msg.contains("team `search`") && msg.contains("max_tokens") && msg.contains("never resets"),
        "{msg}"
    );
    // A small request fits.
    let small = chat_body(json!({"max_tokens": 100}));
    assert_eq!(chat_as(&gw, Some(PROD), &small).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = gw
        .get("/api/logs?team=search", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(logs.contains("\"customer\":\"acme\""), "{logs}");
    // Prometheus: the refusal by reason, the team's budget; no key labels by default.
    let m = gw.get("/metrics", None).await.text().await.unwrap();
    assert!(
        m.contains("switchyard_governance_rejections_total{reason=\"budget_exceeded\"} 1"),
        "{m}"
    );
    let spent = m
        .lines()
        .find(|l| l.starts_with("switchyard_budget_spent_usd{") && l.contains("id=\"search\""))
        .unwrap_or_else(|| panic!("{m}"));
    assert!(
        spent.contains("level=\"team\"") && spent.contains("period=\"none\""),
        "{spent}"
    );
    let value: f64 = spent.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 0.0, "{spent}");
    assert!(
        !m.contains("id=\"prod\""),
        "keys are labels only with metrics_per_key"
    );
    gw.shutdown().await;
}

/// Waits until at least 12 s remain in the current UTC minute, so that a test counting calls per
/// minute never sees its window reset halfway.
pub async fn clear_of_minute_boundary() {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 60_000;
    if ms > 48_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - ms as u64 + 50)).await;
    }
}

async fn rate_limits_answer_429_with_openai_headers(b: &Backend) {
    let mock = Mock::start().await;
    let cfg = format!(
        "{}[governance]\n\n[[governance.keys]]\nid = \"prod\"\nvalue = \"env.PROD_KEY\"\nrate_limits = {{ requests_per_minute = 4, tokens_per_minute = 1000000 }}\n",
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start_env(&cfg, &env).await;
    clear_of_minute_boundary().await;
    let body = chat_body(json!({"max_tokens": 50}));
    // An upstream error after admission still carries the key's limits (every answer does).
    mock.script([Reply::Status(400, None)]);
    let r = chat_as(&gw, Some(PROD), &body).await;
    assert_eq!(r.status(), 400);
    assert_eq!(header(r.headers(), "x-ratelimit-limit-requests"), "4");
    assert_eq!(header(r.headers(), "x-ratelimit-remaining-requests"), "3");
    for left in ["2", "1", "0"] {
        let r = chat_as(&gw, Some(PROD), &body).await;
        assert_eq!(r.status(), 200);
        let h = r.headers();
        assert_eq!(header(h, "x-ratelimit-limit-requests"), "4");
        assert_eq!(header(h, "x-ratelimit-remaining-requests"), left);
        let reset = header(h, "x-ratelimit-reset-requests");
        assert!(reset.ends_with('s'), "{reset}");
        assert_eq!(header(h, "x-ratelimit-limit-tokens"), "1000000");
    }
    let r = chat_as(&gw, Some(PROD), &body).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(r.headers(), "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(r.headers(), "x-ratelimit-remaining-requests"), "0");
    let (_, code, _) = err_code(r).await;
    assert_eq!(code, "rate_limit_exceeded");
    assert_eq!(mock.calls(), 4);
    gw.shutdown().await;
}

async fn streams_and_cache_hits_are_accounted(b: &Backend) {
    let mock = Mock::start().await;
    let cfg = format!(
        "{}[cache]\nmode = \"exact\"\n\n[governance]\ncache_scope = \"key\"\n\n\
         [[governance.keys]]\nid = \"prod\"\nvalue = \"env.PROD_KEY\"\nbudgets = [{{ max_usd = 1.0 }}]\n\n\
         [[governance.keys]]\nid = \"other\"\nvalue = \"env.OFF_KEY\"\n",
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start_env(&cfg, &env).await;
    gw.wait_ready().await;
    let one = (19.0 * 0.15 + 10.0 * 0.60) / 1e6;
    // A stream: charged from the usage of its final chunk.
    let r = chat_as(
        &gw,
        Some(PROD),
        &chat_body(json!({"stream": true, "max_tokens": 100})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    // The same question twice: a miss, then a hit that costs nothing.
    let q =
        chat_body(json!({"max_tokens": 100, "messages": [{"role": "user", "content": "cached?"}]}));
    let r = chat_as(&gw, Some(PROD), &q).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = chat_as(&gw, Some(PROD), &q).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "hit-exact");
    // Another key does not get this key's cached answer (cache_scope = "key").
    let r = chat_as(&gw, Some(OFF), &q).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, k) = admin(&gw, reqwest::Method::GET, "/api/keys/prod", None).await;
    let spent = k["budgets"][0]["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - 2.0 * one).abs() < 1e-12,
        "{spent} vs {}",
        2.0 * one
    );
    gw.shutdown().await;
}

/// Admission hands out who a key is from the directory's index: a key moved to another team
/// shares that team's cached answers on its next request, and a changed model list holds at once.
async fn a_changed_key_is_seen_on_its_next_request(b: &Backend) {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = {:?}\n\n{}[cache]\nmode = \"exact\"\n\n[governance]\nrequire_virtual_key = true\n",
        dir.path(),
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start(&cfg).await;
    gw.wait_ready().await;
    let post = reqwest::Method::POST;
    for team in ["red", "blue"] {
        let (s, t) = admin(&gw, post.clone(), "/api/teams", Some(json!({"id": team}))).await;
        assert_eq!(s, 201, "{t}");
    }
    let mut secrets = Vec::new();
    for (id, team) in [("a", "red"), ("b", "blue")] {
        let (s, k) = admin(
            &gw,
            post.clone(),
            "/api/keys",
            Some(json!({"id": id, "team": team})),
        )
        .await;
        assert_eq!(s, 201, "{k}");
        secrets.push(k["secret"].as_str().unwrap().to_owned());
    }
    let (a, b_key) = (secrets[0].as_str(), secrets[1].as_str());
    let q = chat_body(json!({"messages": [{"role": "user", "content": "shared by a team?"}]}));
    let r = chat_as(&gw, Some(a), &q).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        header(
            chat_as(&gw, Some(a), &q).await.headers(),
            "x-switchyard-cache"
        ),
        "hit-exact"
    );
    // Another team's key does not get it (cache_scope = "team", the default)...
    assert_eq!(
        header(
            chat_as(&gw, Some(b_key), &q).await.headers(),
            "x-switchyard-cache"
        ),
        "miss"
    );
    // ...until the key is moved into the team.
    let (s, k) = admin(
        &gw,
        reqwest::Method::PATCH,
        "/api/keys/b",
        Some(json!({"team": "red"})),
    )
    .await;
    assert_eq!(s, 200, "{k}");
    assert_eq!(
        header(
            chat_as(&gw, Some(b_key), &q).await.headers(),
            "x-switchyard-cache"
        ),
        "hit-exact"
    );
    // A model list narrowed holds on the next request.
    let (s, k) = admin(
        &gw,
        reqwest::Method::PATCH,
        "/api/keys/b",
        Some(json!({"models": ["other/*"]})),
    )
    .await;
    assert_eq!(s, 200, "{k}");
    let (status, code, _) = err_code(chat_as(&gw, Some(b_key), &q).await).await;
    assert_eq!((status, code.as_str()), (403, "model_not_allowed"));
    gw.shutdown().await;
}

#[tokio::test]
async fn serving_beyond_loopback_needs_keys_or_an_explicit_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("require_virtual_key") && err.contains("admin_token"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refusing to start") && err.contains("allow_unauthenticated"),
        "{err}"
    );
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:0\"\nadmin_token = \"t\"\n\n[governance]\nrequire_virtual_key = true\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Posts a JSON-RPC message to `/mcp` with a key; returns the status and the JSON-RPC answer
/// (the data of the SSE event, or the JSON body).
async fn mcp_post(
    gw: &Gateway,
    key: Option<&str>,
    session: Option<&str>,
    body: Value,
) -> (u16, Value, Option<String>) {
    let mut rb = client()
        .post(gw.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    if let Some(s) = session {
        rb = rb
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-06-18");
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let sid = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await.unwrap();
    let json = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (status, json, sid)
}

/// The `name` of every tool in a JSON list at `ptr` (`/data`, `/result/tools`).
fn tool_names<'a>(v: &'a Value, ptr: &str) -> Vec<&'a str> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default()
}

/// `GET /api/mcp/tools` with these request headers.
async fn admin_tools(gw: &Gateway, headers: &[(&str, &str)]) -> Value {
    let mut rb = client().get(gw.url("/api/mcp/tools"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap().json().await.unwrap()
}

async fn keys_see_and_run_only_their_mcp_tools(b: &Backend) {
    use crate::model::{Conv, Model, Turn};
    let offered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let seen = offered.clone();
    let model = Model::start(move |c: &Conv| {
        seen.lock().unwrap().push(c.tools.clone());
        if c.results.is_empty() {
            Turn::call(&[("calc__add", json!({"a": 2, "b": 3}))])
        } else {
            Turn::say(format!("The sum is {}.", c.results.join(" and ")))
        }
    })
    .await;
    let cfg = format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\nkeys = [\"k\"]\n\n\
         [[mcp.servers]]\nname = \"calc\"\ntransport = \"stdio\"\ncommand = \"{}\"\n\n\
         [[mcp.servers]]\nname = \"slow\"\ntransport = \"stdio\"\ncommand = \"{}\"\n\n\
         [governance]\nrequire_virtual_key = true\n\n\
         [[governance.keys]]\nid = \"prod\"\nvalue = \"env.PROD_KEY\"\nmcp_tools = [\"calc__*\"]\nrate_limits = {{ tool_calls_per_minute = 3 }}\n\n\
         [[governance.keys]]\nid = \"none\"\nvalue = \"env.OFF_KEY\"\n",
        model.openai_url(),
        crate::mcp::server_bin("mcp-calculator").display(),
        crate::mcp::server_bin("mcp-slow").display(),
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start_env(&cfg, &env).await;
    crate::mcp::ready_servers(&gw, 2).await;
    clear_of_minute_boundary().await;
    let body = json!({"model": "mock/m", "messages": [{"role": "user", "content": "add 2 and 3"}]});
    // Offered and run: only the key's tools.
    let r = chat_as(&gw, Some(PROD), &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-switchyard-mcp-tool-calls"), "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "The sum is 5.");
    let tools = offered.lock().unwrap()[0].clone();
    assert!(
        !tools.is_empty() && tools.iter().all(|t| t.starts_with("calc__")),
        "{tools:?}"
    );
    // A key without MCP tools is offered none, and the model's call is not run by the gateway.
    offered.lock().unwrap().clear();
    let r = chat_as(&gw, Some(OFF), &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert!(offered.lock().unwrap()[0].is_empty());
    // /mcp: a key is needed, lists only its tools, runs only those, counted per minute.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (s, v, _) = mcp_post(&gw, None, None, init.clone()).await;
    assert_eq!(s, 401, "{v}");
    let (s, _, sid) = mcp_post(&gw, Some(PROD), None, init).await;
    assert_eq!(s, 200);
    let sid = sid.unwrap();
    let (s, _, _) = mcp_post(
        &gw,
        Some(PROD),
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(s, 202);
    let (_, v, _) = mcp_post(
        &gw,
        Some(PROD),
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    let names = tool_names(&v, "/result/tools");
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("calc__")),
        "{names:?}"
    );
    let call = |id: u64, name: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {"a": 1, "b": 2}}});
    let (_, v, _) = mcp_post(&gw, Some(PROD), Some(&sid), call(2, "slow__echo")).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not run"),
        "{v}"
    );
    for id in 3..5 {
        let (_, v, _) = mcp_post(&gw, Some(PROD), Some(&sid), call(id, "calc__add")).await;
        assert!(v["result"].is_object(), "{v}");
    }
    // The chat above ran one call, these two: the fourth in the minute is refused.
    let (_, v, _) = mcp_post(&gw, Some(PROD), Some(&sid), call(5, "calc__add")).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tool calls per minute"),
        "{v}"
    );
    // The admin API's tool list and try-a-tool call, with the key: the same rules.
    let as_key = |rb: reqwest::RequestBuilder| rb.header("x-api-key", PROD);
    let v = admin_tools(&gw, &[("x-api-key", PROD)]).await;
    let listed = tool_names(&v, "/data");
    assert!(
        !listed.is_empty() && listed.iter().all(|n| n.starts_with("calc__")),
        "{listed:?}"
    );
    let all: Value = gw.get("/api/mcp/tools", None).await.json().await.unwrap();
    assert!(
        all["data"].as_array().unwrap().len() > listed.len(),
        "{all}"
    );
    let try_tool = |name: &str| {
        as_key(client().post(gw.url(&format!("/api/mcp/tools/{name}/call"))))
            .json(&json!({"a": 1, "b": 2}))
    };
    let (s, code, _) = err_code(try_tool("slow__echo").send().await.unwrap()).await;
    assert_eq!((s, code.as_str()), (403, "tool_not_allowed"));
    let (s, code, _) = err_code(try_tool("calc__add").send().await.unwrap()).await;
    assert_eq!((s, code.as_str()), (429, "rate_limit_exceeded"));
    // Without a key the admin runs any tool.
    let r = client()
        .post(gw.url("/api/mcp/tools/calc__add/call"))
        .json(&json!({"a": 1, "b": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Narrowed by the header within what the key may run (its calls are refused by now: the
    // offer is what counts); a tool the key may not run is as unknown to it as one that does not
    // exist.
    let with_tools = |tools: &str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(PROD)
            .header("x-switchyard-mcp-tools", tools.to_owned())
            .json(&body)
            .send()
    };
    offered.lock().unwrap().clear();
    let r = with_tools("calc__add").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(offered.lock().unwrap()[0], ["calc__add"]);
    let slow = tool_names(&admin_tools(&gw, &[]).await, "/data")
        .into_iter()
        .find(|t| t.starts_with("slow__"))
        .map(str::to_owned)
        .unwrap();
    for named in [slow.as_str(), "calc__nope"] {
        let (status, code, message) = err_code(with_tools(named).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "no MCP tool named `{named}` that this virtual key may run"
            )),
            "{message}"
        );
    }
    gw.shutdown().await;
}

/// With an admin token and required keys, the admin on `/mcp` sees every tool (the token is not
/// mistaken for a bad virtual key), and acting as a key (`x-api-key`) sees only the key's.
#[tokio::test]
async fn the_admin_token_on_mcp_is_not_a_virtual_key() {
    const ADMIN: &str = "admin-token-0123456789";
    let cfg = format!(
        "[server]\nadmin_token = \"{ADMIN}\"\n\n\
         [[mcp.servers]]\nname = \"calc\"\ntransport = \"stdio\"\ncommand = \"{}\"\n\n\
         [governance]\nrequire_virtual_key = true\n\n\
         [[governance.keys]]\nid = \"prod\"\nvalue = \"env.PROD_KEY\"\nmcp_tools = [\"calc__add\"]\n",
        crate::mcp::server_bin("mcp-calculator").display(),
    );
    let gw = Gateway::start_env(&cfg, &env).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let all = loop {
        let v: Value = gw
            .get("/api/mcp/tools", Some(ADMIN))
            .await
            .json()
            .await
            .unwrap();
        let n = v["data"].as_array().map_or(0, Vec::len);
        if n > 1 {
            break n;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (s, v, sid) = mcp_post(&gw, Some(ADMIN), None, init).await;
    assert_eq!(s, 200, "{v}");
    let sid = sid.unwrap();
    mcp_post(
        &gw,
        Some(ADMIN),
        Some(&sid),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    let (_, v, _) = mcp_post(
        &gw,
        Some(ADMIN),
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(
        v["result"]["tools"].as_array().map(Vec::len),
        Some(all),
        "{v}"
    );
    let bearer = format!("Bearer {ADMIN}");
    let v = admin_tools(&gw, &[("authorization", &bearer), ("x-api-key", PROD)]).await;
    assert_eq!(tool_names(&v, "/data"), ["calc__add"]);
    gw.shutdown().await;
}

async fn a_cut_stream_is_charged_what_was_used(b: &Backend) {
    let mock = Mock::start().await;
    let cfg = format!(
        "{}[governance]\n\n[[governance.keys]]\nid = \"prod\"\nvalue = \"env.PROD_KEY\"\nbudgets = [{{ max_usd = 1.0 }}]\n",
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start_env(&cfg, &env).await;
    // The upstream breaks after a few chunks, before its usage chunk.
    mock.script([Reply::Cut(4)]);
    let r = chat_as(
        &gw,
        Some(PROD),
        &chat_body(json!({"stream": true, "max_tokens": 1000})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, k) = admin(&gw, reqwest::Method::GET, "/api/keys/prod", None).await;
        let bud = &k["budgets"][0];
        let (spent, reserved) = (
            bud["spent_usd"].as_f64().unwrap(),
            bud["reserved_usd"].as_f64().unwrap(),
        );
        // Charged an estimate of what was used: more than nothing, far less than the worst case.
        let worst = 1000.0 * 0.60 / 1e6;
        if reserved == 0.0 && spent > 0.0 {
            assert!(spent < worst / 2.0, "{spent}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spent {spent}, reserved {reserved}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await;
}

async fn per_model_limits_apply_to_their_models_only(b: &Backend) {
    let mock = Mock::start().await;
    let cfg = format!(
        "{}[governance]\n\n[[governance.keys]]\nid = \"prod\"\nvalue = \"env.PROD_KEY\"\n\
         rate_limits = {{ requests_per_minute = 100, models = {{ \"mock/gpt-4o*\" = {{ requests_per_minute = 2 }} }} }}\n",
        provider(&mock)
    );
    let cfg = b.apply(&cfg);
    let gw = Gateway::start_env(&cfg, &env).await;
    clear_of_minute_boundary().await;
    let limited = chat_body(json!({"max_tokens": 10}));
    for left in ["1", "0"] {
        let r = chat_as(&gw, Some(PROD), &limited).await;
        assert_eq!(r.status(), 200);
        // The tightest of the key's limits is the one reported.
        assert_eq!(header(r.headers(), "x-ratelimit-limit-requests"), "2");
        assert_eq!(header(r.headers(), "x-ratelimit-remaining-requests"), left);
    }
    let (s, code, msg) = err_code(chat_as(&gw, Some(PROD), &limited).await).await;
    assert_eq!((s, code.as_str()), (429, "rate_limit_exceeded"));
    assert!(msg.contains("mock/gpt-4o*"), "{msg}");
    // Another model is not limited by it.
    let other = chat_body(json!({"model": "mock/other-model", "max_tokens": 10}));
    let r = chat_as(&gw, Some(PROD), &other).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-ratelimit-limit-requests"), "100");
    gw.shutdown().await;
}
