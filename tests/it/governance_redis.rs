//! Governance across instances: two real gateway processes sharing one real redis-server hold one
//! budget under 64 concurrent requests split between them, see each other's key changes within a
//! second; and an unreachable Redis answers 503 (`fail_closed`) or lets requests through.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gateway::{Binary, Gateway, client};
use crate::mock::{Mock, Reply};
use crate::redis_server::RedisServer;

fn config(mock: &Mock, redis: &RedisServer, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai-compatible\"\nbase_url = \"{}/v1\"\nkeys = [\"upstream-key\"]\n\n\
         [governance]\nrequire_virtual_key = true\nstore = \"redis\"\nredis_url = \"{}\"\n{extra}",
        mock.url(),
        redis.url
    )
}

async fn admin(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = client().request(method, format!("{base}{path}"));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn chat(base: &str, key: &str, max_tokens: u64) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "mock/gpt-4o-mini", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Creates a key through `base`'s API; its secret.
async fn new_key(base: &str, body: Value) -> String {
    let (s, k) = admin(base, reqwest::Method::POST, "/api/keys", Some(body)).await;
    assert_eq!(s, 201, "{k}");
    k["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn two_instances_share_keys_and_hold_one_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = Mock::start().await;
    mock.always(Reply::Slow(Duration::from_millis(800)));
    let cfg = config(&mock, &redis, "");
    let a = Binary::start(&cfg).await;
    let b = Binary::start(&cfg).await;
    // A key made on one instance works on the other within a second.
    let secret = new_key(
        &a.url,
        json!({"id": "shared", "budgets": [{"max_usd": 0.63, "period": "1d"}]}),
    )
    .await;
    let started = Instant::now();
    loop {
        let (s, _) = admin(&b.url, reqwest::Method::GET, "/api/keys/shared", None).await;
        if s == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "instance B never saw the key"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // 64 concurrent requests, half on each instance; the budget covers the worst case of 10.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let base = if i % 2 == 0 {
                a.url.clone()
            } else {
                b.url.clone()
            };
            let key = secret.clone();
            tokio::spawn(async move { chat(&base, &key, 100_000).await })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => ok += 1,
            (402, v) => {
                assert_eq!(v["error"]["code"], "budget_exceeded");
                refused += 1;
            }
            (s, v) => panic!("unexpected {s}: {v}"),
        }
    }
    assert_eq!((ok, refused), (10, 54), "one budget across both instances");
    assert_eq!(mock.calls(), 10);
    // Settled on both instances (background writes): the actual cost, nothing reserved.
    let expected = 10.0 * (19.0 * 0.15 + 10.0 * 0.60) / 1e6;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, k) = admin(&b.url, reqwest::Method::GET, "/api/keys/shared", None).await;
        let bud = &k["budgets"][0];
        let (spent, reserved) = (
            bud["spent_usd"].as_f64().unwrap(),
            bud["reserved_usd"].as_f64().unwrap(),
        );
        if reserved == 0.0 && (spent - expected).abs() < 1e-9 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: spent {spent}, reserved {reserved}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Disabled on B: refused on A within a second.
    let (s, _) = admin(
        &b.url,
        reqwest::Method::PATCH,
        "/api/keys/shared",
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(s, 200);
    mock.always(Reply::Ok);
    let started = Instant::now();
    loop {
        let (s, _) = chat(&a.url, &secret, 10).await;
        if s == 403 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "instance A still serves a disabled key"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_or_open_as_configured() {
    for (fail_closed, expect) in [(true, 503), (false, 200)] {
        let Some(mut redis) = RedisServer::start() else {
            return;
        };
        let mock = Mock::start().await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "[server]\ndata_dir = {:?}\n\n{}fail_closed = {fail_closed}\n",
            dir.path(),
            config(&mock, &redis, "")
        );
        let gw = Gateway::start(&cfg).await;
        let secret = new_key(
            &gw.url(""),
            json!({"id": "k", "budgets": [{"max_usd": 1.0}]}),
        )
        .await;
        assert_eq!(chat(&gw.url(""), &secret, 10).await.0, 200);
        redis.stop();
        let started = Instant::now();
        let (s, v) = chat(&gw.url(""), &secret, 10).await;
        assert_eq!(s, expect, "fail_closed = {fail_closed}: {v}");
        if fail_closed {
            assert_eq!(v["error"]["code"], "governance_store_unavailable");
        } else {
            let m = gw.get("/metrics", None).await.text().await.unwrap();
            assert!(m.contains("switchyard_governance_unchecked_total 1"), "{m}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        gw.shutdown().await;
    }
}

/// A key's first budget: (spent, reserved), as instance `base` reports it.
async fn budget(base: &str, id: &str) -> (f64, f64) {
    let (_, k) = admin(base, reqwest::Method::GET, &format!("/api/keys/{id}"), None).await;
    let b = &k["budgets"][0];
    (
        b["spent_usd"].as_f64().unwrap_or(-1.0),
        b["reserved_usd"].as_f64().unwrap_or(-1.0),
    )
}

/// Whether a (spent, reserved) pair is `want` up to float dust.
fn near(got: (f64, f64), want: (f64, f64)) -> bool {
    (got.0 - want.0).abs() < 1e-9 && (got.1 - want.1).abs() < 1e-9
}

/// Waits (3 s at most) until instance `base` reports the budget of key `k` as `want`.
async fn wait_budget(base: &str, want: (f64, f64)) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !near(budget(base, "k").await, want) {
        assert!(Instant::now() < deadline, "{:?}", budget(base, "k").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The mock's answer costs this at gpt-4o-mini's prices (19 prompt + 10 completion tokens).
const ONE_ANSWER_USD: f64 = (19.0 * 0.15 + 10.0 * 0.60) / 1e6;

#[tokio::test]
async fn a_redis_restart_keeps_keys_spend_and_windows() {
    let Some(mut redis) = RedisServer::start_persistent() else {
        return;
    };
    let mock = Mock::start().await;
    let gw = Binary::start(&config(&mock, &redis, "")).await;
    let secret = new_key(&gw.url, json!({"id": "k", "budgets": [{"max_usd": 1.0}], "rate_limits": {"requests_per_minute": 2}})).await;
    crate::governance::clear_of_minute_boundary().await;
    assert_eq!(chat(&gw.url, &secret, 10).await.0, 200);
    wait_budget(&gw.url, (ONE_ANSWER_USD, 0.0)).await;
    redis.restart();
    // The gateway reconnects by itself; until it has, requests fail closed (503, not counted).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (s, v) = loop {
        let (s, v) = chat(&gw.url, &secret, 10).await;
        if s != 503 || Instant::now() > deadline {
            break (s, v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        s, 200,
        "the key made through the API survived the restart: {v}"
    );
    // The minute's window survived too: a third request in it is refused.
    let (s, v) = chat(&gw.url, &secret, 10).await;
    assert_eq!(s, 429, "{v}");
    wait_budget(&gw.url, (2.0 * ONE_ANSWER_USD, 0.0)).await;
}

#[tokio::test]
async fn a_killed_instance_gives_its_reservation_back_after_the_ttl() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = Mock::start().await;
    mock.always(Reply::Slow(Duration::from_secs(30)));
    let cfg = config(&mock, &redis, "reservation_ttl_seconds = 2\n");
    let a = Binary::start(&cfg).await;
    let b = Binary::start(&cfg).await;
    // The budget covers one worst case of 100,000 output tokens, not two.
    let secret = new_key(&a.url, json!({"id": "k", "budgets": [{"max_usd": 0.1}]})).await;
    // The lease starts when A reserves, which is after this: a lower bound that does not depend
    // on how soon B notices the reservation.
    let sent_at = Instant::now();
    let in_flight = {
        let (url, key) = (a.url.clone(), secret.clone());
        tokio::spawn(async move { chat(&url, &key, 100_000).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while budget(&b.url, "k").await.1 <= 0.0 {
        assert!(Instant::now() < deadline, "B never saw A's reservation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reserved_at = Instant::now();
    let (s, v) = chat(&b.url, &secret, 100_000).await;
    assert_eq!(s, 402, "A's request holds the budget: {v}");
    // A dies mid-request: it never settles.
    drop(a);
    in_flight.abort();
    mock.always(Reply::Ok);
    let served_at = loop {
        let (s, v) = chat(&b.url, &secret, 100_000).await;
        if s == 200 {
            break Instant::now();
        }
        assert_eq!(s, 402, "{v}");
        assert!(
            reserved_at.elapsed() < Duration::from_secs(8),
            "the dead instance's reservation was never given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        served_at - sent_at >= Duration::from_millis(1500),
        "given back before its lease ran out ({:?})",
        served_at - sent_at
    );
    // What is left: B's request settled, the dead one's reservation gone, nothing charged for it.
    wait_budget(&b.url, (ONE_ANSWER_USD, 0.0)).await;
}
