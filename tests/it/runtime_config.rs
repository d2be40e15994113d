//! Providers and routes managed through the admin API at run time (issue 16): changes serve at
//! once, survive a restart, are versioned and can be rolled back; file-managed entities are
//! refused; literal keys are sealed at rest and masked everywhere; swaps under load lose nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::gateway::{Binary, client, served_by};
use crate::mock::Mock;

const SECRET: &str = "sk-literal-runtime-secret-0123456789";

fn file(mock: &Mock) -> String {
    format!(
        "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"ka\"]\n",
        mock.url()
    )
}

async fn send(url: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let http = client();
    let req = match method {
        "POST" => http.post(format!("{url}{path}")),
        "PATCH" => http.patch(format!("{url}{path}")),
        "DELETE" => http.delete(format!("{url}{path}")),
        _ => http.get(format!("{url}{path}")),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn providers_and_routes_change_live_are_versioned_and_survive_a_restart() {
    let mock = Mock::start().await;
    let bin = Binary::start(&file(&mock)).await;
    let url = bin.url.clone();

    // A provider with a literal key: served at once, the key masked in every answer.
    let (status, v) = send(
        &url,
        "POST",
        "/api/providers",
        Some(json!({"name": "b", "kind": "openai", "base_url": format!("{}/v1", mock.url()), "keys": [SECRET]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["data"]["keys"][0], "****6789", "{v}");
    assert_eq!(v["data"]["source"], "api");
    assert_eq!(v["version"], 1);
    assert_eq!(served_by(&url, "b/gpt-4o-mini").await, (200, "b".into()));
    assert_eq!(
        mock.last().key().as_deref(),
        Some(SECRET),
        "the real key goes upstream"
    );

    // A route to it, then changed to the file's provider.
    let (status, v) = send(
        &url,
        "POST",
        "/api/routes",
        Some(json!({"model": "smart", "targets": [{"model": "b/gpt-4o-mini"}]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(served_by(&url, "smart").await, (200, "b".into()));
    let (status, v) = send(
        &url,
        "PATCH",
        "/api/routes/smart",
        Some(json!({"targets": [{"model": "a/gpt-4o-mini"}]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(served_by(&url, "smart").await, (200, "a".into()));

    // The file's provider is the file's; a name in use is taken; a bad entry changes nothing.
    let (status, v) = send(
        &url,
        "PATCH",
        "/api/providers/a",
        Some(json!({"max_retries": 0})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("file_managed")),
        "{v}"
    );
    let (status, _) = send(&url, "DELETE", "/api/providers/a", None).await;
    assert_eq!(status, 409);
    let (status, v) = send(
        &url,
        "POST",
        "/api/providers",
        Some(json!({"name": "a", "kind": "ollama"})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("exists")),
        "{v}"
    );
    let (status, v) = send(
        &url,
        "POST",
        "/api/providers",
        Some(json!({"name": "c", "kind": "opnai", "timeout_ms": -1})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_config")),
        "{v}"
    );
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("providers.c.")), "{v}");
    let (status, v) = send(
        &url,
        "PATCH",
        "/api/providers/b",
        Some(json!({"keys": ["****6789"]})),
    )
    .await;
    assert_eq!(status, 400, "a masked key sent back is refused: {v}");
    // A provider a route uses cannot go while the route needs it.
    let (status, _) = send(
        &url,
        "PATCH",
        "/api/routes/smart",
        Some(json!({"targets": [{"model": "b/gpt-4o-mini"}]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = send(&url, "DELETE", "/api/providers/b", None).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("routes[0]")
            || v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("routes.smart"),
        "{v}"
    );
    let (status, _) = send(&url, "DELETE", "/api/routes/smart", None).await;
    assert_eq!(status, 204);
    let (status, _) = send(&url, "DELETE", "/api/providers/b", None).await;
    assert_eq!(status, 204);
    assert_ne!(served_by(&url, "b/gpt-4o-mini").await.1, "b");

    // Every change is a version with its actor and a masked diff.
    let (status, v) = send(&url, "GET", "/api/config/versions", None).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "delete provider b",
            "delete route smart",
            "update route smart",
            "update route smart",
            "create route smart",
            "create provider b"
        ]
    );
    assert!(!v.to_string().contains(SECRET), "{v}");
    assert_eq!(v["data"][5]["actor"], "api");
    let (status, toml) = send(&url, "GET", "/api/config/versions/2", None).await;
    assert_eq!(status, 200);
    let toml = toml.as_str().unwrap();
    assert!(
        toml.contains("name = \"b\"") && toml.contains("model = \"smart\""),
        "{toml}"
    );
    assert!(!toml.contains(SECRET));

    // Roll back to version 2 (b, and smart -> b): served again, as a new version.
    let (status, v) = send(&url, "POST", "/api/config/rollback/2", Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 7);
    assert_eq!(served_by(&url, "smart").await, (200, "b".into()));

    // The whole configuration exports as TOML that check accepts, secrets sealed (the file's
    // literal key too), and it parses back to the same providers with the real keys.
    let (status, text) = send(&url, "GET", "/api/config/export", None).await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_owned();
    assert!(!text.contains(SECRET) && !text.contains("\"ka\""), "{text}");
    assert!(
        text.contains("name = \"b\"") && text.contains("model = \"smart\""),
        "{text}"
    );
    let out = crate::cli::check(&text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported = switchyard::config::Config::parse(&text, &|_| None).unwrap();
    let b = exported.providers.iter().find(|p| p.name == "b").unwrap();
    assert_eq!(b.keys[0].secret.expose(), SECRET);
    assert_eq!(b.keys[0].source, "sealed");

    // The secret is sealed at rest: no file under the data directory holds it.
    let data = bin.config_path().with_file_name("data");
    for entry in walk(&data) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret",
            entry.display()
        );
    }

    // A restart keeps every change, and a request answered just before the stop is logged.
    let r = client()
        .post(format!("{url}/v1/chat/completions"))
        .header("x-request-id", "just-before-the-stop")
        .json(&json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bin = bin.restart().await;
    let (status, v) = send(&bin.url, "GET", "/api/logs/just-before-the-stop", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(served_by(&bin.url, "smart").await, (200, "b".into()));
    assert_eq!(mock.last().key().as_deref(), Some(SECRET));
    let (_, v) = send(&bin.url, "GET", "/api/providers", None).await;
    let sources: Vec<(String, String)> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [("a".into(), "file".into()), ("b".into(), "api".into())]
    );
    // A reload of the file keeps the runtime entities.
    let (status, v) = send(&bin.url, "POST", "/api/config/reload", Some(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(served_by(&bin.url, "smart").await, (200, "b".into()));
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

#[tokio::test]
async fn a_hundred_route_changes_under_load_lose_no_request() {
    let mock = Mock::start().await;
    let bin = Binary::start(&format!(
        "{}\n[[providers]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"kb\"]\n",
        file(&mock),
        mock.url()
    ))
    .await;
    let url = bin.url.clone();
    let (status, v) = send(
        &url,
        "POST",
        "/api/routes",
        Some(json!({"model": "smart", "targets": [{"model": "a/gpt-4o-mini"}]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, p) = served_by(&url, "smart").await;
                if status == 200 && (p == "a" || p == "b") {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for i in 0..100 {
        let target = if i % 2 == 0 {
            "b/gpt-4o-mini"
        } else {
            "a/gpt-4o-mini"
        };
        let (status, v) = send(
            &url,
            "PATCH",
            "/api/routes/smart",
            Some(json!({"targets": [{"model": target}]})),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "{}",
        ok.load(Ordering::Relaxed)
    );
    // The last change (i = 99, to a) is the one in service.
    assert_eq!(served_by(&url, "smart").await, (200, "a".into()));
    let (_, v) = send(&url, "GET", "/api/config/versions", None).await;
    assert_eq!(v["current"], 101);
}

#[tokio::test]
async fn a_zero_config_start_can_add_its_first_provider() {
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = switchyard::config::Config::zero_config(&|_| None);
    cfg.server.data_dir = dir.path().to_owned();
    cfg.cache.enabled = false;
    let gw = crate::gateway::Gateway::with_config(cfg).await;
    let (status, v) = send(&gw.url(""), "GET", "/api/providers", None).await;
    assert_eq!(
        (status, v["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    let (status, v) = send(
        &gw.url(""),
        "POST",
        "/api/providers",
        Some(json!({"name": "first", "kind": "openai", "base_url": format!("{}/v1", mock.url()), "keys": ["env.SWITCHYARD_TEST_FIRST_KEY"]})),
    )
    .await;
    // The variable is not set: the same check as the file's, with the entry's path.
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["problems"][0]["path"], "providers.first.keys[0]", "{v}");
    let (status, v) = send(
        &gw.url(""),
        "POST",
        "/api/providers",
        Some(json!({"name": "first", "kind": "openai", "base_url": format!("{}/v1", mock.url()), "keys": ["sk-first-0000000000000000"]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        served_by(&gw.url(""), "first/gpt-4o-mini").await,
        (200, "first".into())
    );
    // One small real call reports its latency, or the provider's error.
    let (status, v) = send(
        &gw.url(""),
        "POST",
        "/api/providers/first/test",
        Some(json!({"model": "gpt-4o-mini"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["latency_ms"].as_u64().is_some(), "{v}");
    mock.reject_key("sk-first-0000000000000000");
    let (_, v) = send(
        &gw.url(""),
        "POST",
        "/api/providers/first/test",
        Some(json!({"model": "gpt-4o-mini"})),
    )
    .await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("401"), "{v}");
    assert!(!v.to_string().contains("sk-first-0000"), "{v}");
    let (status, v) = send(
        &gw.url(""),
        "POST",
        "/api/providers/first/test",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 400, "no model to test with: {v}");
}

#[tokio::test]
async fn with_config_source_api_the_file_only_seeds_the_store() {
    let mock = Mock::start().await;
    let bin = Binary::start_with(
        &format!(
            "{}\n[[routes]]\nmodel = \"smart\"\ntargets = [{{ model = \"a/gpt-4o-mini\" }}]\n",
            file(&mock)
        ),
        "config_source = \"api\"",
        &[],
    )
    .await;
    let url = bin.url.clone();
    assert_eq!(served_by(&url, "smart").await, (200, "a".into()));
    // The file's entries are the API's now: editable, and the seed is version 1.
    let (status, v) = send(&url, "GET", "/api/config/versions", None).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["actor"], "seed", "{v}");
    let (status, v) = send(
        &url,
        "POST",
        "/api/providers",
        Some(json!({"name": "b", "kind": "openai", "base_url": format!("{}/v1", mock.url()), "keys": ["kb"]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = send(
        &url,
        "PATCH",
        "/api/routes/smart",
        Some(json!({"targets": [{"model": "b/gpt-4o-mini"}]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(&url, "DELETE", "/api/providers/a", None).await;
    assert_eq!(status, 204, "{v}");
    // A restart does not seed again: the store wins over the file.
    let bin = bin.restart().await;
    assert_eq!(served_by(&bin.url, "smart").await, (200, "b".into()));
    let (_, v) = send(&bin.url, "GET", "/api/providers", None).await;
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["b"], "{v}");
    // So does a reload.
    let (status, _) = send(&bin.url, "POST", "/api/config/reload", Some(json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(served_by(&bin.url, "smart").await, (200, "b".into()));
    assert_ne!(served_by(&bin.url, "a/gpt-4o-mini").await.1, "a");
}
