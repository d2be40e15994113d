//! What an operator sees: the request log, usage aggregates, the threshold what-if, metrics.

use std::time::Duration;

use serde_json::{Value, json};

use crate::conformance::{FAST_ROUTER, hello};
use crate::gateway::{Gateway, header, sse};
use crate::mock::{Mock, Reply};

fn config(mock: &Mock, data: &std::path::Path, extra: &str) -> String {
    format!(
        "[server]\ndata_dir = {data:?}\n\n[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"sk-test-secret-key-0001\"]\n\n[[providers]]\nname = \"q\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"k\"]\n\n{FAST_ROUTER}\n{extra}\n",
        mock.url(),
        mock.url()
    )
}

async fn get_json(gw: &Gateway, path: &str) -> (u16, Value) {
    let r = gw.get(path, None).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until the log holds `n` records (records are written after the answer, in the background).
async fn wait_logged(gw: &Gateway, n: usize) -> Vec<Value> {
    for _ in 0..250 {
        let (_, page) = get_json(gw, "/api/logs?limit=500").await;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the log never reached {n} records");
}

#[tokio::test]
async fn every_request_is_logged_without_secrets_and_can_be_filtered_and_paged() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&mock, dir.path(), "")).await;

    let (s, h1, _) = gw.chat(&hello("p/gpt-4o-mini")).await;
    assert_eq!(s, 200);
    let id1 = header(&h1, "x-request-id");
    let mut stream = hello("p/gpt-4o-mini");
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let r = gw.post("/v1/chat/completions", &stream).await;
    let id2 = header(r.headers(), "x-request-id");
    assert!(sse(r).await.len() > 2);
    mock.script([Reply::Status(400, None)]);
    let (s, _, _) = gw.chat(&hello("p/gpt-4o-mini")).await;
    assert_eq!(s, 400);
    let (s, _, _) = gw.chat(&hello("nope")).await;
    assert_eq!(s, 404);

    let all = wait_logged(&gw, 4).await;
    assert_eq!(all.len(), 4);
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains("sk-test-secret"),
        "a key leaked into the log: {text}"
    );
    assert!(!text.contains("request_body"), "bodies are off by default");

    // Newest first; the first request's record has everything the issue lists.
    let first = all
        .iter()
        .find(|r| r["request_id"] == id1.as_str())
        .unwrap();
    assert_eq!(first["endpoint"], "chat");
    assert_eq!(first["model"], "p/gpt-4o-mini");
    assert_eq!(first["provider"], "p");
    assert_eq!(first["served_model"], "gpt-4o-mini");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["status"], 200);
    assert_eq!(first["stream"], false);
    assert_eq!(first["input_tokens"], 19);
    assert_eq!(first["output_tokens"], 10);
    let cost = first["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - (19.0 * 0.15 + 10.0 * 0.60) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    assert!(first["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(first["upstream_ms"].as_f64().unwrap() > 0.0);
    assert!(first.get("ttft_ms").is_none());
    let streamed = all
        .iter()
        .find(|r| r["request_id"] == id2.as_str())
        .unwrap();
    assert_eq!(streamed["stream"], true);
    assert!(streamed["ttft_ms"].as_f64().unwrap() > 0.0);
    assert!(streamed["input_tokens"].as_u64().unwrap() > 0, "{streamed}");
    let failed = all.iter().find(|r| r["status"] == 404).unwrap();
    assert!(
        failed["error"].as_str().unwrap().contains("nope"),
        "{failed}"
    );
    assert_eq!(failed["provider"], "");

    // One record by id; an unknown id is a 404 in OpenAI's error shape.
    let (s, one) = get_json(&gw, &format!("/api/logs/{id1}")).await;
    assert_eq!((s, one["request_id"].as_str()), (200, Some(id1.as_str())));
    let (s, e) = get_json(&gw, "/api/logs/no-such-id").await;
    assert_eq!(s, 404);
    assert!(e["error"]["message"].as_str().is_some());

    // Filters.
    let count = |v: &Value| v["data"].as_array().unwrap().len();
    assert_eq!(count(&get_json(&gw, "/api/logs?status=error").await.1), 2);
    assert_eq!(count(&get_json(&gw, "/api/logs?status=400").await.1), 1);
    assert_eq!(
        count(&get_json(&gw, "/api/logs?status=2xx&provider=p").await.1),
        2
    );
    assert_eq!(count(&get_json(&gw, "/api/logs?model=nope").await.1), 1);
    assert_eq!(count(&get_json(&gw, "/api/logs?provider=q").await.1), 0);
    let future = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(
        count(&get_json(&gw, &format!("/api/logs?from={future}")).await.1),
        0
    );
    let (s, e) = get_json(&gw, "/api/logs?status=teapot").await;
    assert_eq!(s, 400);
    assert!(e["error"]["message"].as_str().unwrap().contains("status"));
    let (s, _) = get_json(&gw, "/api/logs?limit=lots").await;
    assert_eq!(s, 400);

    // Paging: two pages of two, no overlap, no third page.
    let (_, p1) = get_json(&gw, "/api/logs?limit=2").await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = get_json(&gw, &format!("/api/logs?limit=2&cursor={cursor}")).await;
    assert_eq!((count(&p1), count(&p2)), (2, 2));
    assert!(p2["next_cursor"].is_null(), "{p2}");
    let ids: std::collections::HashSet<_> = p1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["data"].as_array().unwrap())
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 4);
    let t1 = p1["data"][1]["at_ms"].as_u64().unwrap();
    let t2 = p2["data"][0]["at_ms"].as_u64().unwrap();
    assert!(t1 >= t2, "pages go from newest to oldest");

    // Usage aggregates over the same records.
    let (s, u) = get_json(&gw, "/api/usage").await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["total"]["requests"], 4);
    assert_eq!(u["total"]["errors"], 2);
    assert_eq!(u["by_model"]["p/gpt-4o-mini"]["requests"], 3);
    assert_eq!(u["by_provider"]["p"]["requests"], 3);
    assert_eq!(u["by_provider"]["none"]["requests"], 1);
    assert_eq!(u["by_key"]["none"]["requests"], 4);
    let input = u["total"]["input_tokens"].as_u64().unwrap();
    assert!(input >= 19 * 2, "{u}");
    let series_requests: u64 = u["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1]["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(series_requests, 4);
    let (s, _) = get_json(&gw, "/api/usage?bucket=0").await;
    assert_eq!(s, 400);

    // Metrics from the same requests.
    let m = gw.get("/metrics", None).await.text().await.unwrap();
    for needle in [
        "switchyard_gateway_overhead_seconds_count{endpoint=\"chat\"} 2",
        "switchyard_time_to_first_token_seconds_count{endpoint=\"chat\"} 1",
        "switchyard_cost_usd_total{provider=\"p\"}",
        "switchyard_log_records_dropped_total 0",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    gw.shutdown().await;

    // The log is in the store: a restarted gateway still shows it.
    let gw = Gateway::start(&config(&mock, dir.path(), "")).await;
    let (_, page) = get_json(&gw, "/api/logs").await;
    assert_eq!(count(&page), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn bodies_are_logged_only_when_asked_and_logging_can_be_off() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&mock, dir.path(), "[logs]\nlog_bodies = true\n")).await;
    let mut stream = hello("p/m");
    stream["stream"] = json!(true);
    sse(gw.post("/v1/chat/completions", &stream).await).await;
    gw.chat(&hello("p/m")).await;
    let all = wait_logged(&gw, 2).await;
    for r in &all {
        assert_eq!(r["request_body"]["messages"][1]["content"], "Hello", "{r}");
        assert_eq!(
            r["response_body"]["choices"][0]["message"]["content"],
            crate::mock::TEXT,
            "{r}"
        );
    }
    gw.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&mock, dir.path(), "[logs]\nenabled = false\n")).await;
    gw.chat(&hello("p/m")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, page) = get_json(&gw, "/api/logs").await;
    assert_eq!(page["data"], json!([]));
}

#[tokio::test]
async fn the_what_if_shows_which_misses_a_lower_threshold_would_have_served() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&config(&mock, dir.path(), "[cache]\n")).await;
    gw.wait_ready().await;
    let ask = |q: &str| json!({"model": "p/m", "messages": [{"role": "user", "content": q}]});
    let send = |body: Value, threshold: Option<&'static str>| {
        let gw = &gw;
        async move {
            let mut rb = gw.http.post(gw.url("/v1/chat/completions")).json(&body);
            if let Some(t) = threshold {
                rb = rb.header("x-switchyard-cache-threshold", t);
            }
            let r = rb.send().await.unwrap();
            let out = (
                header(r.headers(), "x-switchyard-cache"),
                header(r.headers(), "x-request-id"),
            );
            r.bytes().await.unwrap();
            out
        }
    };
    assert_eq!(send(ask("How do I boil an egg?"), None).await.0, "miss");
    for _ in 0..250 {
        let (_, st) = get_json(&gw, "/api/cache/stats").await;
        if st["entries"] == json!(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A paraphrase under a strict threshold: a near miss the log and the what-if keep.
    let (c, id) = send(ask("How should I boil an egg?"), Some("0.999")).await;
    assert_eq!(c, "miss");
    // The same paraphrase at the default threshold: a semantic hit.
    let (c, _) = send(ask("How can I boil an egg?"), None).await;
    assert_eq!(c, "hit-semantic");

    let logged = wait_logged(&gw, 3).await;
    let near = logged
        .iter()
        .find(|r| r["request_id"] == id.as_str())
        .unwrap();
    let sim = near["similarity"].as_f64().unwrap();
    assert!(sim > 0.85 && sim < 0.999, "{near}");

    let (s, w) = get_json(&gw, "/api/cache/whatif?threshold=0.85").await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["served_now"], 1, "{w}");
    assert!(w["gained_total"].as_u64().unwrap() >= 1, "{w}");
    let gained = &w["gained"][0];
    assert_eq!(gained["prompt"], "How should I boil an egg?");
    assert_eq!(gained["cached_prompt"], "How do I boil an egg?");
    let (_, strict) = get_json(&gw, "/api/cache/whatif?threshold=1.0").await;
    assert_eq!(strict["served_at_threshold"], 0);
    assert_eq!(strict["lost_total"], 1);
    let (s, _) = get_json(&gw, "/api/cache/whatif?threshold=3").await;
    assert_eq!(s, 400);

    // The entry that answered is among the most served.
    let (_, st) = get_json(&gw, "/api/cache/stats").await;
    let top = st["top_entries"].as_array().unwrap();
    assert_eq!(top.len(), 1, "{st}");
    assert_eq!(top[0]["prompt"], "How do I boil an egg?");
    assert_eq!(top[0]["hits"], 1);
    // ... until it is deleted.
    let id = top[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        gw.delete(&format!("/api/cache/entries/{id}"))
            .await
            .status(),
        200
    );
    let (_, st) = get_json(&gw, "/api/cache/stats").await;
    assert_eq!(st["top_entries"], json!([]), "{st}");

    // Hits are logged with the money they saved.
    let (_, u) = get_json(&gw, "/api/usage").await;
    assert_eq!(u["total"]["cache_hits"], 1, "{u}");
    assert_eq!(u["total"]["cache_lookups"], 3, "{u}");
}
