//! `store = "qdrant"`: the same cache behaviour through qdrant-client, against the in-process
//! fake server (always) and a real Qdrant server (when `QDRANT_URL` is set).

use std::time::Duration;

use serde_json::{Value, json};

use crate::conformance::FAST_ROUTER;
use crate::gateway::{Gateway, header};
use crate::mock::Mock;
use crate::qdrant_fake::Fake;

fn config(mock: &Mock, cache: &str) -> String {
    format!(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"k\"]\n\n{FAST_ROUTER}\n[cache]\n{cache}\n",
        mock.url()
    )
}

fn ask(model: &str, system: &str, user: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": user}]})
}

async fn cache_header(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> String {
    let mut rb = gw.http.post(gw.url("/v1/chat/completions")).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 200);
    header(r.headers(), "x-switchyard-cache")
}

async fn entries(gw: &Gateway) -> u64 {
    let v: Value = gw.get("/api/cache/stats", None).await.json().await.unwrap();
    v["entries"].as_u64().unwrap_or(u64::MAX)
}

async fn wait_entries(gw: &Gateway, n: u64) {
    for _ in 0..500 {
        if entries(gw).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never reached {n} entries (have {})", entries(gw).await);
}

/// The behaviour every store must have: tiers, partitions, TTL, hit counts, deletes.
async fn scenario(gw: &Gateway, mock: &Mock) {
    let q = ask("p/m", "s", "How do I reset my password?");
    assert_eq!(cache_header(gw, &q, &[]).await, "miss");
    wait_entries(gw, 1).await;
    assert_eq!(cache_header(gw, &q, &[]).await, "hit-exact");
    assert_eq!(
        cache_header(
            gw,
            &ask("p/m", "s", "What are the steps to reset my password?"),
            &[]
        )
        .await,
        "hit-semantic"
    );
    assert_eq!(
        cache_header(gw, &ask("p/m", "other", "How do I reset my password?"), &[]).await,
        "miss"
    );
    assert_eq!(
        cache_header(gw, &ask("p/x", "s", "How do I reset my password?"), &[]).await,
        "miss"
    );
    assert_eq!(
        cache_header(gw, &ask("p/m", "s", "Don't reset my password"), &[]).await,
        "miss"
    );
    assert_eq!(mock.calls(), 4);
    wait_entries(gw, 4).await;

    // Hits are counted on the entry.
    let mut hits = 0;
    for _ in 0..100 {
        let list: Value = gw
            .get("/api/cache/entries?model=p/m", None)
            .await
            .json()
            .await
            .unwrap();
        hits = list["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["prompt"] == "How do I reset my password?" && e["hits"].as_u64() > Some(0))
            .map_or(0, |e| e["hits"].as_u64().unwrap());
        if hits == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hits, 2);

    // TTL.
    let short = ask("p/m", "s", "Give me a fun fact.");
    cache_header(gw, &short, &[("x-switchyard-cache-ttl", "1")]).await;
    wait_entries(gw, 5).await;
    assert_eq!(cache_header(gw, &short, &[]).await, "hit-exact");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(cache_header(gw, &short, &[]).await, "miss");
    wait_entries(gw, 5).await;

    // Deletes: one model, then everything.
    let r = gw.delete_json("/api/cache/entries?model=p/x").await;
    assert_eq!(r["deleted"], 1);
    let r = gw.delete_json("/api/cache/entries").await;
    assert_eq!(r["deleted"], 4);
    assert_eq!(entries(gw).await, 0);
    assert_eq!(cache_header(gw, &q, &[]).await, "miss");
}

#[tokio::test]
async fn qdrant_store_behaves_like_the_embedded_one() {
    let (fake, addr) = Fake::start().await;
    let mock = Mock::start().await;
    let gw = Gateway::start(&config(
        &mock,
        &format!(
            "store = \"qdrant\"\nqdrant_url = \"http://{addr}\"\nqdrant_collection = \"sy_test\""
        ),
    ))
    .await;
    gw.wait_ready().await;
    let ready: Value = gw.get("/ready", None).await.json().await.unwrap();
    assert_eq!(ready["cache"]["store"], "ready", "{ready}");
    let mut idx = fake.indexes("sy_test");
    idx.sort();
    assert_eq!(idx, ["expires", "last_used", "model", "partition"]);
    scenario(&gw, &mock).await;
    assert_eq!(fake.len("sy_test"), 1);
    let calls = fake.calls();
    for rpc in [
        "collection_exists",
        "create_collection",
        "upsert",
        "get",
        "query",
        "set_payload",
        "delete",
        "count",
        "scroll",
    ] {
        assert!(
            calls.iter().any(|c| c == rpc),
            "{rpc} never called: {calls:?}"
        );
    }
    assert!(
        !calls.iter().any(|c| c == "search"),
        "uses the query API, not the deprecated search"
    );
}

#[tokio::test]
async fn an_unreachable_qdrant_is_reported_and_chat_still_works() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mock = Mock::start().await;
    let gw = Gateway::start(&config(
        &mock,
        &format!("store = \"qdrant\"\nqdrant_url = \"http://127.0.0.1:{port}\""),
    ))
    .await;
    gw.wait_ready().await;
    let ready: Value = gw.get("/ready", None).await.json().await.unwrap();
    let store = ready["cache"]["store"].as_str().unwrap();
    assert!(
        store.starts_with("unavailable") && store.contains("Qdrant"),
        "{store}"
    );
    assert_eq!(
        cache_header(&gw, &ask("p/m", "s", "Hello"), &[]).await,
        "bypass"
    );
    let r = gw.get("/api/cache/entries", None).await;
    assert_eq!(r.status(), 503);

    // The server comes up: the gateway reconnects on its own.
    let (fake, _) = Fake::start_on(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let mut store = String::new();
    for _ in 0..300 {
        let ready: Value = gw.get("/ready", None).await.json().await.unwrap();
        store = ready["cache"]["store"].as_str().unwrap().to_owned();
        if store == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store, "ready");
    assert_eq!(
        cache_header(&gw, &ask("p/m", "s", "Hello"), &[]).await,
        "miss"
    );
    wait_entries(&gw, 1).await;
    assert_eq!(fake.len("switchyard_cache"), 1);
}

/// Against a real server: `QDRANT_URL=http://host:6334 tests/run.sh` (no server here; see docs).
#[tokio::test]
async fn real_qdrant_server_when_qdrant_url_is_set() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!(
            "skipping: set QDRANT_URL (gRPC, e.g. http://127.0.0.1:6334) to run against a real Qdrant"
        );
        return;
    };
    let mock = Mock::start().await;
    let collection = format!("switchyard_test_{}", uuid::Uuid::new_v4().simple());
    let gw = Gateway::start(&config(
        &mock,
        &format!(
            "store = \"qdrant\"\nqdrant_url = \"{url}\"\nqdrant_collection = \"{collection}\""
        ),
    ))
    .await;
    gw.wait_ready().await;
    scenario(&gw, &mock).await;
}

#[tokio::test]
async fn two_instances_on_one_qdrant_share_entries_and_deletes() {
    let (_fake, addr) = Fake::start().await;
    let mock = Mock::start().await;
    let cfg = config(
        &mock,
        &format!(
            "mode = \"exact\"\nstore = \"qdrant\"\nqdrant_url = \"http://{addr}\"\nqdrant_collection = \"sy_fleet\""
        ),
    );
    let (a, b) = (Gateway::start(&cfg).await, Gateway::start(&cfg).await);
    a.wait_ready().await;
    b.wait_ready().await;
    let q = ask("p/m", "s", "How do I reset my password?");
    assert_eq!(cache_header(&a, &q, &[]).await, "miss");
    wait_entries(&b, 1).await;
    // Written through A, served by B.
    assert_eq!(cache_header(&b, &q, &[]).await, "hit-exact");
    // Deleted through B: gone for A.
    let page: Value = b
        .get("/api/cache/entries", None)
        .await
        .json()
        .await
        .unwrap();
    let id = page["entries"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        b.delete(&format!("/api/cache/entries/{id}")).await.status(),
        200
    );
    assert_eq!(entries(&a).await, 0);
    assert_eq!(cache_header(&a, &q, &[]).await, "miss");
}
