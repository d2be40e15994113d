//! The semantic cache end to end: real embedding model, embedded Qdrant Edge, mock provider.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::conformance::FAST_ROUTER;
use crate::gateway::{Gateway, fold_openai, header, sse};
use crate::mock::{Mock, Reply, TEXT};

fn config(mock: &Mock, data: &Path, cache: &str) -> String {
    format!(
        "[server]\ndata_dir = {data:?}\n\n[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"k\"]\n\n{FAST_ROUTER}\n[cache]\n{cache}\n",
        mock.url()
    )
}

/// A gateway with the cache on, in front of one OpenAI-format mock, ready to serve.
async fn cached(cache: &str) -> (Mock, Gateway, tempfile::TempDir) {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&mock, dir.path(), cache)).await;
    gw.wait_ready().await;
    (mock, gw, dir)
}

fn ask(model: &str, system: &str, user: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": user}
    ]})
}

async fn send(gw: &Gateway, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = gw.http.post(gw.url("/v1/chat/completions")).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// Sends and returns (status, x-switchyard-cache, similarity header, body).
async fn outcome(
    gw: &Gateway,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, String, String, Value) {
    let r = send(gw, body, headers).await;
    let status = r.status().as_u16();
    let cache = header(r.headers(), "x-switchyard-cache");
    let sim = header(r.headers(), "x-switchyard-cache-similarity");
    (status, cache, sim, r.json().await.unwrap_or(Value::Null))
}

async fn stats(gw: &Gateway) -> Value {
    gw.get("/api/cache/stats", None).await.json().await.unwrap()
}

/// Waits until the store holds `n` entries (writes happen after the answer is sent).
async fn wait_entries(gw: &Gateway, n: u64) {
    for _ in 0..500 {
        if stats(gw).await["entries"] == json!(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cache never reached {n} entries: {}", stats(gw).await);
}

/// Earlier turns are part of the partition with `conversations = "exact"`; by meaning (the
/// default) content-free earlier turns such as the ones below may share an answer, which
/// `conversations_by_meaning_share_answers_across_small_talk_but_not_flipped_intent` covers.
#[tokio::test]
async fn exact_and_semantic_hits_stay_inside_their_partition() {
    let (mock, gw, _dir) = cached("conversations = \"exact\"").await;
    let q = ask("p/m", "You are terse.", "How do I reset my password?");

    let (s, c, _, body) = outcome(&gw, &q, &[]).await;
    assert_eq!((s, c.as_str()), (200, "miss"));
    assert_eq!(body["choices"][0]["message"]["content"], TEXT);
    wait_entries(&gw, 1).await;

    // Same request, keys in another order and other JSON whitespace: exact hit, no upstream call.
    let reordered = r#"{ "messages": [ {"content": "You are terse.", "role": "system"},
        {"content": "How do I reset my password?", "role": "user"} ],   "model": "p/m" }"#;
    let r = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(reordered)
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "hit-exact");
    assert_eq!(header(r.headers(), "x-switchyard-provider"), "p");
    assert_eq!(header(r.headers(), "x-switchyard-attempts"), "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], TEXT);
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(mock.calls(), 1);

    // A paraphrase: semantic hit with its similarity.
    let (_, c, sim, body) = outcome(
        &gw,
        &ask(
            "p/m",
            "You are terse.",
            "What are the steps to reset my password?",
        ),
        &[],
    )
    .await;
    assert_eq!(c, "hit-semantic");
    let sim: f32 = sim.parse().unwrap();
    assert!((0.82..=1.0).contains(&sim), "{sim}");
    assert_eq!(body["choices"][0]["message"]["content"], TEXT);
    assert_eq!(mock.calls(), 1);

    // Everything that must not share the answer goes upstream.
    let mut expected_calls = 1;
    let misses = [
        ask("p/m", "You are terse.", "What is the capital of France?"),
        ask("p/m", "You are verbose.", "How do I reset my password?"),
        ask("p/other", "You are terse.", "How do I reset my password?"),
        {
            let mut q = q.clone();
            q["temperature"] = json!(0.2);
            q
        },
        {
            let mut q = q.clone();
            q["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
            q
        },
        {
            let mut q = q.clone();
            q["messages"]
                .as_array_mut()
                .unwrap()
                .insert(1, json!({"role": "user", "content": "Earlier turn"}));
            q["messages"]
                .as_array_mut()
                .unwrap()
                .insert(2, json!({"role": "assistant", "content": "Earlier answer"}));
            q
        },
        ask("p/m", "You are terse.", "How do I reset my router?"),
        ask("p/m", "You are terse.", "Don't reset my password"),
    ];
    for m in &misses {
        let (s, c, _, _) = outcome(&gw, m, &[]).await;
        expected_calls += 1;
        assert_eq!((s, c.as_str()), (200, "miss"), "{m}");
        assert_eq!(mock.calls(), expected_calls, "{m}");
    }

    // Analytics and metrics saw all of it.
    wait_entries(&gw, 1 + misses.len() as u64).await;
    let st = stats(&gw).await;
    assert_eq!(st["lookups"]["hit-exact"], 1);
    assert_eq!(st["lookups"]["hit-semantic"], 1);
    assert_eq!(st["lookups"]["miss"], json!(1 + misses.len()));
    assert_eq!(st["by_route"]["p/m"]["lookups"]["hit-semantic"], 1);
    assert!(st["saved"]["prompt_tokens"].as_u64().unwrap() > 0);
    let hist: u64 = st["similarity"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(hist, 1);
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("switchyard_cache_lookups_total{outcome=\"hit-semantic\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_cache_lookups_total{outcome=\"hit-exact\"} 1"));
    assert!(
        metrics.contains("switchyard_cache_similarity_count{result=\"hit\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("switchyard_cache_saved_tokens_total{direction=\"input\"}"));
}

#[tokio::test]
async fn streamed_and_plain_answers_serve_each_other() {
    let (mock, gw, _dir) = cached("").await;

    // Stored from a stream, served as JSON.
    let mut q = ask("p/m", "s", "Tell me a joke.");
    q["stream"] = json!(true);
    let r = send(&gw, &q, &[]).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    let (text, _, _, _) = fold_openai(&sse(r).await);
    assert_eq!(text, TEXT);
    wait_entries(&gw, 1).await;
    let (_, c, _, body) = outcome(&gw, &ask("p/m", "s", "Tell me a joke."), &[]).await;
    assert_eq!(c, "hit-exact");
    assert_eq!(body["choices"][0]["message"]["content"], TEXT);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(mock.calls(), 1);

    // Stored as JSON, served as a live-looking stream, with usage when asked.
    let (_, c, _, _) = outcome(&gw, &ask("p/m", "s", "What is the capital of France?"), &[]).await;
    assert_eq!(c, "miss");
    wait_entries(&gw, 2).await;
    let mut q = ask("p/m", "s", "Which city is the capital of France?");
    q["stream"] = json!(true);
    q["stream_options"] = json!({"include_usage": true});
    let r = send(&gw, &q, &[]).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "hit-semantic");
    assert!(header(r.headers(), "content-type").starts_with("text/event-stream"));
    let events = sse(r).await;
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let first: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (text, _, finish, usage) = fold_openai(&events);
    assert_eq!(text, TEXT);
    assert_eq!(finish.as_deref(), Some("stop"));
    assert!(usage.unwrap()["total_tokens"].as_u64().unwrap() > 0);
    assert!(events.len() > 4, "content should arrive in several chunks");
    assert_eq!(mock.calls(), 2);

    // Through the Anthropic ingress: stored from a Messages request, replayed as Anthropic
    // events (max_tokens is a sampling parameter, so this is its own partition).
    let anthropic = |stream: bool| {
        json!({"model": "p/m", "max_tokens": 100, "system": "s", "stream": stream,
            "messages": [{"role": "user", "content": "Tell me a joke."}]})
    };
    let r = gw
        .http
        .post(gw.url("/anthropic/v1/messages"))
        .json(&anthropic(false))
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    wait_entries(&gw, 3).await;
    let r = gw
        .http
        .post(gw.url("/anthropic/v1/messages"))
        .json(&anthropic(true))
        .send()
        .await
        .unwrap();
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "hit-exact");
    let events = sse(r).await;
    let names: Vec<String> = events.iter().filter_map(|e| e.event.clone()).collect();
    assert_eq!(names.first().map(String::as_str), Some("message_start"));
    assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("content_block_delta"))
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["delta"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(text, TEXT);
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn request_headers_control_lookup_store_threshold_and_ttl() {
    let (mock, gw, _dir) = cached("").await;
    let q = ask("p/m", "s", "How do I boil an egg?");

    // no-store: neither looked up nor stored.
    let (_, c, _, _) = outcome(&gw, &q, &[("cache-control", "no-store")]).await;
    assert_eq!(c, "bypass");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stats(&gw).await["entries"], 0);

    // no-cache: not looked up, but stored.
    let (_, c, _, _) = outcome(&gw, &q, &[("cache-control", "no-cache")]).await;
    assert_eq!(c, "miss");
    wait_entries(&gw, 1).await;
    let (_, c, _, _) = outcome(&gw, &q, &[("cache-control", "no-cache")]).await;
    assert_eq!(c, "miss", "no-cache must not look up");
    assert_eq!(mock.calls(), 3);
    let (_, c, _, _) = outcome(&gw, &q, &[]).await;
    assert_eq!(c, "hit-exact");

    // A stricter threshold turns a paraphrase into a miss; the default serves it.
    let para = ask("p/m", "s", "How should I boil an egg?");
    let (_, c, _, _) = outcome(&gw, &para, &[("x-switchyard-cache-threshold", "0.999")]).await;
    assert_eq!(c, "miss");
    wait_entries(&gw, 2).await;

    // A one-second TTL: served now, gone after it.
    let short = ask("p/m", "s", "Give me a fun fact.");
    outcome(&gw, &short, &[("x-switchyard-cache-ttl", "1")]).await;
    wait_entries(&gw, 3).await;
    let (_, c, _, _) = outcome(&gw, &short, &[]).await;
    assert_eq!(c, "hit-exact");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, c, _, _) = outcome(&gw, &short, &[]).await;
    assert_eq!(c, "miss", "expired entries are never served");

    // Bad values are a clear 400.
    for (h, v) in [
        ("x-switchyard-cache-threshold", "2"),
        ("x-switchyard-cache-ttl", "soon"),
    ] {
        let (s, _, _, body) = outcome(&gw, &q, &[(h, v)]).await;
        assert_eq!(s, 400);
        assert!(
            body["error"]["message"].as_str().unwrap().contains(h),
            "{body}"
        );
    }
}

#[tokio::test]
async fn failures_and_several_choices_are_not_cached() {
    let (mock, gw, _dir) = cached("").await;
    let q = ask("p/m", "s", "Explain recursion.");

    mock.script([
        Reply::Status(500, None),
        Reply::Status(500, None),
        Reply::Status(500, None),
    ]);
    let (s, c, _, _) = outcome(&gw, &q, &[]).await;
    assert_eq!((s, c.as_str()), (502, ""));

    // A stream cut before its end is not stored.
    let mut sq = ask("p/m", "s", "Explain iteration.");
    sq["stream"] = json!(true);
    mock.script([Reply::Cut(3)]);
    let r = send(&gw, &sq, &[]).await;
    let _ = r.text().await;

    // n > 1 is bypassed.
    let mut nq = q.clone();
    nq["n"] = json!(2);
    let (_, c, _, _) = outcome(&gw, &nq, &[]).await;
    assert_eq!(c, "bypass");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stats(&gw).await["entries"], 0);
    let (_, c, _, _) = outcome(&gw, &q, &[]).await;
    assert_eq!(c, "miss");
    wait_entries(&gw, 1).await;
}

#[tokio::test]
async fn the_cache_survives_a_restart_and_a_corrupt_store_is_rebuilt() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let q = ask("p/m", "s", "What is the boiling point of water?");
    {
        let gw = Gateway::start(&config(&mock, dir.path(), "")).await;
        gw.wait_ready().await;
        outcome(&gw, &q, &[]).await;
        wait_entries(&gw, 1).await;
        gw.shutdown().await;
    }
    {
        let gw = Gateway::start(&config(&mock, dir.path(), "")).await;
        gw.wait_ready().await;
        let (_, c, _, _) = outcome(&gw, &q, &[]).await;
        assert_eq!(c, "hit-exact");
        assert_eq!(
            stats(&gw).await["lookups"]["miss"],
            1,
            "analytics persist too"
        );
        gw.shutdown().await;
    }
    assert_eq!(mock.calls(), 1);

    // Damage every file of the shard: the gateway moves it aside and starts empty.
    let edge = dir.path().join("cache").join("edge");
    for entry in walk(&edge) {
        std::fs::write(&entry, b"not a qdrant file").unwrap();
    }
    let gw = Gateway::start(&config(&mock, dir.path(), "")).await;
    gw.wait_ready().await;
    let ready: Value = gw.get("/ready", None).await.json().await.unwrap();
    assert_eq!(ready["cache"]["store"], "ready", "{ready}");
    let (s, c, _, _) = outcome(&gw, &q, &[]).await;
    assert_eq!((s, c.as_str()), (200, "miss"));
    wait_entries(&gw, 1).await;
    let aside: Vec<String> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        aside.iter().any(|n| n.starts_with("edge.broken-")),
        "{aside:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn admin_api_pages_deletes_and_purges() {
    let (_mock, gw, _dir) = cached("").await;
    for (model, text) in [("p/a", "one"), ("p/a", "two"), ("p/b", "three")] {
        outcome(&gw, &ask(model, "s", text), &[]).await;
    }
    wait_entries(&gw, 3).await;
    let page: Value = gw
        .get("/api/cache/entries?limit=2", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 3);
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let rest: Value = gw
        .get("/api/cache/entries?offset=2&limit=2", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    let only_b: Value = gw
        .get("/api/cache/entries?model=p/b", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only_b["entries"][0]["prompt"], "three");
    assert_eq!(only_b["entries"][0]["answer"], TEXT);

    let only_a: Value = gw
        .get("/api/cache/entries?model=p/a", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only_a["entries"].as_array().unwrap().len(), 2);
    let id = only_a["entries"][0]["id"].as_str().unwrap().to_owned();
    let r = gw.delete(&format!("/api/cache/entries/{id}")).await;
    assert_eq!(r.status(), 200);
    let r = gw.delete(&format!("/api/cache/entries/{id}")).await;
    assert_eq!(r.status(), 404);
    let r = gw.delete("/api/cache/entries/not-an-id").await;
    assert_eq!(r.status(), 400);
    assert_eq!(stats(&gw).await["entries"], 2);

    let r = gw.delete_json("/api/cache/entries?model=p/b").await;
    assert_eq!(r["deleted"], 1);
    assert_eq!(stats(&gw).await["entries"], 1);
    let r = gw.delete_json("/api/cache/entries").await;
    assert_eq!(r["deleted"], 1);
    assert_eq!(stats(&gw).await["entries"], 0);
}

#[tokio::test]
async fn a_missing_model_is_named_with_the_fetch_command_and_exact_hits_still_work() {
    let (mock, gw, _dir) = cached("embedding_model = \"models/not-there\"").await;
    let ready = gw.get("/ready", None).await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    let msg = ready["cache"]["embedder"].as_str().unwrap();
    assert!(msg.contains("python3 models/fetch.py"), "{msg}");
    let q = ask("p/m", "s", "How do I reset my password?");
    outcome(&gw, &q, &[]).await;
    wait_entries(&gw, 1).await;
    let (_, c, _, _) = outcome(&gw, &q, &[]).await;
    assert_eq!(c, "hit-exact");
    let (_, c, _, _) = outcome(
        &gw,
        &ask("p/m", "s", "What are the steps to reset my password?"),
        &[],
    )
    .await;
    assert_eq!(c, "miss");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn entries_beyond_max_entries_are_evicted_least_recently_used_first() {
    let (_mock, gw, _dir) = cached("max_entries = 2").await;
    let first = ask("p/m", "s", "What is the capital of France?");
    outcome(&gw, &first, &[]).await;
    wait_entries(&gw, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    outcome(&gw, &ask("p/m", "s", "Tell me a joke."), &[]).await;
    wait_entries(&gw, 2).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A hit makes the first entry the most recently used one.
    let (_, c, _, _) = outcome(&gw, &first, &[]).await;
    assert_eq!(c, "hit-exact");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    outcome(&gw, &ask("p/m", "s", "How do I boil an egg?"), &[]).await;
    // The third answer is written in the background: wait until it is (it may be evicted as
    // soon as it is, so the entry count cannot tell).
    let mut written = false;
    for _ in 0..500 {
        let metrics = gw.get("/metrics", None).await.text().await.unwrap();
        written = metrics.contains("switchyard_cache_writes_total{outcome=\"stored\"} 3");
        if written {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(written, "the third answer was never written");
    // Housekeeping runs every 5 s and trims the store back to max_entries.
    let mut left = Vec::new();
    for _ in 0..400 {
        let list: Value = gw
            .get("/api/cache/entries", None)
            .await
            .json()
            .await
            .unwrap();
        left = list["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["prompt"].as_str().unwrap().to_owned())
            .collect();
        if list["total"] == 2 && left.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    left.sort();
    assert_eq!(
        left,
        ["How do I boil an egg?", "What is the capital of France?"]
    );
}

const Q: &str = "How do I reset my password?";
const PARAPHRASE: &str = "What are the steps to reset my password?";

#[tokio::test]
async fn routes_have_their_own_mode_threshold_and_ttl() {
    let route = |name: &str, cache: &str| {
        format!(
            "\n[[routes]]\nmodel = \"{name}\"\ntargets = [{{ model = \"p/m\" }}]\ncache = {{ {cache} }}\n"
        )
    };
    let cache = format!(
        "mode = \"exact\"\n{}{}{}{}",
        route("sem", "mode = \"semantic\""),
        route("strict", "mode = \"semantic\", threshold = 0.995"),
        route("none", "mode = \"off\""),
        route("short", "ttl_seconds = 1"),
    );
    let (mock, gw, _dir) = cached(&cache).await;
    let (mut calls, mut entries) = (0, 0);
    let expect = |model: &str, user: &str, want: &str, gw: &Gateway| {
        let q = ask(model, "You are terse.", user);
        let want = want.to_owned();
        let gw_url = gw.url("/v1/chat/completions");
        let http = gw.http.clone();
        async move {
            let r = http.post(gw_url).json(&q).send().await.unwrap();
            assert_eq!(r.status(), 200);
            (header(r.headers(), "x-switchyard-cache"), want, q)
        }
    };
    // The global mode (exact) for a model without a route of its own: a paraphrase misses.
    for (model, user, want, upstream) in [
        ("p/m", Q, "miss", true),
        ("p/m", PARAPHRASE, "miss", true),
        ("p/m", Q, "hit-exact", false),
        // A semantic route serves the paraphrase; a strict one does not.
        ("sem", Q, "miss", true),
        ("sem", PARAPHRASE, "hit-semantic", false),
        ("strict", Q, "miss", true),
        ("strict", PARAPHRASE, "miss", true),
        // Off: neither looked up nor stored, no header.
        ("none", Q, "", true),
        ("none", Q, "", true),
    ] {
        let (got, want, q) = expect(model, user, want, &gw).await;
        if upstream {
            calls += 1;
        }
        assert_eq!(got, want, "{q}");
        assert_eq!(mock.calls(), calls, "{q}");
        if want == "miss" {
            // Each miss stores an entry of its own: let the write land before the next lookup.
            entries += 1;
            wait_entries(&gw, entries).await;
        }
    }
    // A route's TTL: its entry is gone a second later.
    let short = ask("short", "You are terse.", Q);
    assert_eq!(outcome(&gw, &short, &[]).await.1, "miss");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outcome(&gw, &short, &[]).await.1, "hit-exact");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(outcome(&gw, &short, &[]).await.1, "miss");
}

#[tokio::test]
async fn shadow_mode_records_what_it_would_serve_and_serves_live() {
    let (mock, gw, _dir) = cached("mode = \"shadow\"").await;
    let q = ask("p/m", "You are terse.", Q);
    let r = send(&gw, &q, &[]).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    assert_eq!(header(r.headers(), "x-switchyard-cache-shadow"), "miss");
    wait_entries(&gw, 1).await;
    // The same request: shadow found it, the answer is still live.
    let r = send(&gw, &q, &[]).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    assert_eq!(
        header(r.headers(), "x-switchyard-cache-shadow"),
        "hit-exact"
    );
    assert_eq!(mock.calls(), 2);
    // A paraphrase: a semantic shadow hit, with its similarity.
    let r = send(&gw, &ask("p/m", "You are terse.", PARAPHRASE), &[]).await;
    assert_eq!(header(r.headers(), "x-switchyard-cache"), "miss");
    assert_eq!(
        header(r.headers(), "x-switchyard-cache-shadow"),
        "hit-semantic"
    );
    let sim: f32 = header(r.headers(), "x-switchyard-cache-shadow-similarity")
        .parse()
        .unwrap();
    assert!((0.82..1.0).contains(&sim), "{sim}");
    assert_eq!(header(r.headers(), "x-switchyard-cache-similarity"), "");
    assert_eq!(mock.calls(), 3);
    // The what-if shows both, each beside the live answer's first words.
    let mut report = Value::Null;
    for _ in 0..200 {
        report = gw
            .get("/api/cache/whatif", None)
            .await
            .json()
            .await
            .unwrap();
        if report["shadow_total"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(report["shadow_total"], 2, "{report}");
    let newest = &report["shadow"][0];
    assert_eq!(newest["prompt"], PARAPHRASE);
    assert_eq!(newest["cached_prompt"], Q);
    assert_eq!(newest["shadow"]["tier"], "hit-semantic");
    assert_eq!(newest["shadow"]["cached_answer"], TEXT);
    assert_eq!(newest["shadow"]["live_answer"], TEXT);
    assert_eq!(report["shadow"][1]["shadow"]["tier"], "hit-exact");
    let st = stats(&gw).await;
    assert_eq!(st["lookups"]["shadow-hit-exact"], 1);
    assert_eq!(st["lookups"]["shadow-hit-semantic"], 1);
    assert_eq!(st["lookups"]["miss"], 3);
    assert_eq!(st["mode"], "shadow");
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("switchyard_cache_shadow_hits_total{outcome=\"hit-semantic\"} 1"),
        "{metrics}"
    );
}

/// The id of the only cache entry.
async fn only_entry(gw: &Gateway) -> String {
    let v: Value = gw
        .get("/api/cache/entries", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["entries"].as_array().unwrap().len(), 1, "{v}");
    v["entries"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn wrong_answers_reported_are_removed_counted_and_kept() {
    let (mock, gw, _dir) = cached("").await;
    let q = ask("p/m", "You are terse.", Q);
    let para = ask("p/m", "You are terse.", PARAPHRASE);
    assert_eq!(outcome(&gw, &q, &[]).await.1, "miss");
    wait_entries(&gw, 1).await;
    let (_, c, _, _) = outcome(&gw, &para, &[("x-request-id", "hit-1")]).await;
    assert_eq!(c, "hit-semantic");
    let id = only_entry(&gw).await;
    let feedback = |id: &str, body: Value| {
        gw.http
            .post(gw.url(&format!("/api/cache/entries/{id}/feedback")))
            .json(&body)
            .send()
    };
    // Bad input: a clear 400 or 404, nothing removed.
    let r = feedback(&id, json!({"verdict": "right"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = feedback(
        &uuid::Uuid::new_v4().to_string(),
        json!({"verdict": "wrong"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = feedback("not-an-id", json!({"verdict": "wrong"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    wait_entries(&gw, 1).await;
    // Reported through the API: removed, counted, the pair kept with the question asked.
    let r = feedback(&id, json!({"verdict": "wrong"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["reported"]["prompt"], PARAPHRASE);
    assert_eq!(v["reported"]["cached_prompt"], Q);
    assert_eq!(v["reported"]["request_id"], "hit-1");
    wait_entries(&gw, 0).await;
    let r = feedback(&id, json!({"verdict": "wrong"})).await.unwrap();
    assert_eq!(r.status(), 404, "reported twice");
    assert_eq!(outcome(&gw, &para, &[]).await.1, "miss", "not served again");
    let calls = mock.calls();

    // Reported by a follow-up request's header: removed before the follow-up is looked up.
    wait_entries(&gw, 1).await;
    // (The paraphrase's entry answers the original question now.)
    let (_, c, _, _) = outcome(&gw, &q, &[("x-request-id", "hit-2")]).await;
    assert_eq!(c, "hit-semantic");
    let (s, c, _, _) = outcome(
        &gw,
        &q,
        &[("x-switchyard-cache-feedback", "wrong; request-id=hit-2")],
    )
    .await;
    assert_eq!((s, c.as_str()), (200, "miss"));
    assert_eq!(mock.calls(), calls + 1);
    // A malformed header is a 400 naming it; an unknown hit is ignored.
    let r = send(&gw, &q, &[("x-switchyard-cache-feedback", "nope")]).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-switchyard-cache-feedback"),
        "{v}"
    );
    let r = send(
        &gw,
        &q,
        &[("x-switchyard-cache-feedback", "wrong; request-id=unknown")],
    )
    .await;
    assert_eq!(r.status(), 200);

    let st = stats(&gw).await;
    assert_eq!(st["lookups"]["reported-wrong"], 2);
    let list: Value = gw
        .get("/api/cache/feedback", None)
        .await
        .json()
        .await
        .unwrap();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["source"], "header");
    assert_eq!(data[0]["prompt"], Q);
    assert_eq!(data[0]["cached_prompt"], PARAPHRASE);
    assert_eq!(data[1]["source"], "api");
    let jsonl = gw
        .get("/api/cache/feedback?format=jsonl", None)
        .await
        .text()
        .await
        .unwrap();
    let first: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"a": Q, "b": PARAPHRASE, "hit": false, "kind": "reported"})
    );
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("switchyard_cache_feedback_total{outcome=\"wrong\"} 2"),
        "{metrics}"
    );
}

/// The default judge, the learned cross-encoder (models/cache-verifier), serves a rewording that
/// cosine and the guard (`verifier = "guard"`) miss, and refuses a swapped comparison that they
/// serve. Both pairs are from the test split of the labelled set, which the model was not
/// trained on.
#[tokio::test]
async fn the_learned_verifier_serves_rewordings_and_refuses_swapped_comparisons() {
    let cached_q = "How often should I clean a fish tank?";
    let reworded = "What's a sensible schedule for changing the water in an aquarium?";
    let compared = "Is a passkey safer than a password?";
    let swapped = "Is a password safer than a passkey?";
    for (config, reworded_outcome, swapped_outcome) in [
        ("", "hit-semantic", "miss"),
        ("verifier = \"guard\"", "miss", "hit-semantic"),
    ] {
        let (mock, gw, _dir) = cached(config).await;
        if config.is_empty() {
            let ready: Value = gw.get("/ready", None).await.json().await.unwrap();
            assert_eq!(ready["cache"]["verifier"], "ready", "{ready}");
        }
        // Every miss stores its answer (in the background): the count to wait for.
        let mut entries = stats(&gw).await["entries"].as_u64().unwrap();
        for (first, second, want) in [
            (cached_q, reworded, reworded_outcome),
            (compared, swapped, swapped_outcome),
        ] {
            assert_eq!(outcome(&gw, &ask("p/m", "", first), &[]).await.1, "miss");
            entries += 1;
            wait_entries(&gw, entries).await;
            let calls = mock.calls();
            let (_, got, _, _) = outcome(&gw, &ask("p/m", "", second), &[]).await;
            assert_eq!(got, want, "[{config}] {first} / {second}");
            let upstream = if want == "miss" { 1 } else { 0 };
            assert_eq!(mock.calls(), calls + upstream);
            if want == "miss" {
                entries += 1;
                wait_entries(&gw, entries).await;
            }
        }
    }
}

fn chat(turns: &[&str]) -> Value {
    let messages: Vec<Value> = turns
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": t})
        })
        .collect();
    json!({"model": "p/m", "messages": messages})
}

/// `conversations = "meaning"` (the default): a conversation that differs from a cached one only
/// by small talk earlier is served its answer (the conversation verifier reads both whole); one
/// whose earlier turn asks for the opposite is not. With `exact` earlier turns must match. The
/// pairs are from the test split of the conversation set, which the model was not trained on.
#[tokio::test]
async fn conversations_by_meaning_share_answers_across_small_talk_but_not_flipped_intent() {
    let browsing = chat(&[
        "Just browsing, really.",
        "Happy to help.",
        "Is it worth buying an extended warranty?",
    ]);
    let plain = chat(&["Is it worth buying an extended warranty?"]);
    let on = chat(&[
        "I want to turn on automatic payments.",
        "Sure.",
        "Where do I do that?",
    ]);
    let off = chat(&[
        "I want to turn off automatic payments.",
        "Sure.",
        "Where do I do that?",
    ]);
    for (config, chatter_outcome) in [
        ("", "hit-semantic"),
        ("conversations = \"meaning\"", "hit-semantic"),
        ("conversations = \"exact\"", "miss"),
    ] {
        let (mock, gw, _dir) = cached(config).await;
        let mut entries = 0;
        for (first, second, want) in [(&browsing, &plain, chatter_outcome), (&on, &off, "miss")] {
            assert_eq!(outcome(&gw, first, &[]).await.1, "miss");
            entries += 1;
            wait_entries(&gw, entries).await;
            let calls = mock.calls();
            let (status, got, _, body) = outcome(&gw, second, &[]).await;
            assert_eq!((status, got.as_str()), (200, want), "[{config}] {second}");
            assert_eq!(body["choices"][0]["message"]["content"], TEXT);
            let upstream = u64::from(want == "miss");
            assert_eq!(mock.calls(), calls + upstream as usize);
            entries += upstream;
            wait_entries(&gw, entries).await;
        }
        // The same conversation again is an exact hit either way.
        assert_eq!(outcome(&gw, &browsing, &[]).await.1, "hit-exact");
    }
}
