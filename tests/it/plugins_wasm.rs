//! WebAssembly plugins through the real gateway: the AssemblyScript sample (plugins/tag-and-route,
//! built by tests/run.sh with npm), and hand-written modules that trap, run away, outgrow their
//! memory or break the ABI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest;

use crate::gateway::{Gateway, sse};
use crate::plugins::{ask, echo, provider};

/// The sample plugin as `npm run build` leaves it.
pub fn sample() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/tag-and-route/build/tag-and-route.wasm");
    assert!(
        path.exists(),
        "{} is missing: tests/run.sh builds it (cd plugins/tag-and-route && npm ci && npm run build)",
        path.display()
    );
    path
}

fn sha256(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A `[[plugins]]` entry for the module at `path`, pinned to its hash.
pub fn entry(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nkind = \"wasm\"\npath = \"{}\"\nsha256 = \"{}\"\n{extra}\n",
        path.display(),
        sha256(path)
    )
}

/// Writes the module in `wat` text to a file in `dir`.
pub fn module(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
    path
}

/// A module whose `on_request` runs `body` (memory at 1024 is where the input goes).
fn with_on_request(body: &str) -> String {
    format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "on_request") (param i32 i32) (result i64) {body}))"#
    )
}

/// A module whose `on_request` answers `json`.
fn answering(json: &str) -> String {
    answering_on("on_request", json)
}

/// A module whose `hook` answers `json` (kept at offset 16).
pub fn answering_on(hook: &str, json: &str) -> String {
    let packed = (16_i64 << 32) | json.len() as i64;
    format!(
        r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "{hook}") (param i32 i32) (result i64) (i64.const {packed})))"#,
        json.replace('"', "\\\"")
    )
}

const ROUTE_CHEAP: &str =
    "config = { rules = [{ model = \"mock/*\", contains = \"cheap\", to = \"mock/small\" }] }";

#[tokio::test]
async fn the_assemblyscript_sample_routes_by_rule_and_tags_the_answer() {
    let model = echo().await;
    let gw = Gateway::start(&format!(
        "{}{}",
        provider(&model),
        entry("tag-and-route", &sample(), ROUTE_CHEAP)
    ))
    .await;
    let (status, _, body) = gw.chat(&ask("A CHEAP question", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(model.seen().last().unwrap()["model"], "small");
    assert_eq!(
        body["switchyard_route"],
        json!({"requested_model": "mock/m", "routed_to": "mock/small", "rule": 0}),
        "{body}"
    );
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "You said: A CHEAP question"
    );

    // No rule matches: the request goes where it was sent, the answer is untouched.
    let (status, _, body) = gw.chat(&ask("an expensive question", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(model.seen().last().unwrap()["model"], "m");
    assert!(body.get("switchyard_route").is_none(), "{body}");

    // Streams are routed too (the sample has no stream hook: chunks pass untouched).
    let events = sse(gw
        .post("/v1/chat/completions", &ask("cheap, streamed", true))
        .await)
    .await;
    assert!(events.iter().any(|e| e.data == "[DONE]"), "{events:?}");
    assert_eq!(model.seen().last().unwrap()["model"], "small");

    let v: Value = gw.get("/api/plugins", None).await.json().await.unwrap();
    assert_eq!(v["data"][0]["kind"], "wasm", "{v}");
    assert_eq!(v["data"][0]["hooks"], json!(["request", "response"]), "{v}");
    assert_eq!(v["data"][0]["stats"]["request"]["calls"], 3, "{v}");
}

#[tokio::test]
async fn a_plugin_cannot_route_a_key_to_a_model_it_may_not_use() {
    let model = echo().await;
    let key = "sk-sy-wasm-route-0123456789abcdef";
    let gw = Gateway::start(&format!(
        "{}{}\n[governance]\nrequire_virtual_key = true\n\n[[governance.keys]]\nid = \"k\"\nvalue = \"{key}\"\nmodels = [\"mock/m\"]\n",
        provider(&model),
        entry("tag-and-route", &sample(), ROUTE_CHEAP)
    ))
    .await;
    let send = |text: &str| {
        let body = ask(text, false);
        let http = reqwest::Client::new();
        let url = gw.url("/v1/chat/completions");
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = send("hello").await;
    assert_eq!(status, 200, "{body}");
    let calls = model.seen().len();
    let (status, body) = send("something cheap").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock/small"),
        "{body}"
    );
    assert_eq!(model.seen().len(), calls, "the provider was not called");
}

#[tokio::test]
async fn a_wasm_plugin_can_refuse_a_request() {
    let model = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = module(
        dir.path(),
        "refuse",
        &answering(r#"{"action":"deny","status":403,"message":"not on Sundays"}"#),
    );
    let gw = Gateway::start(&format!(
        "{}{}",
        provider(&model),
        entry("refuse", &path, "")
    ))
    .await;
    let (status, _, body) = gw.chat(&ask("hello", false)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "plugin_rejected");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not on Sundays"),
        "{body}"
    );
    assert!(model.seen().is_empty());
}

#[tokio::test]
async fn a_trapping_runaway_or_greedy_module_follows_on_error_and_the_gateway_stays_up() {
    let model = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            module(dir.path(), "trap", &with_on_request("unreachable")),
            "",
            "trapped",
        ),
        (
            module(
                dir.path(),
                "spin",
                &with_on_request("(loop $l (br $l)) (i64.const 0)"),
            ),
            "timeout_ms = 50",
            "ran past its time limit of 50 ms",
        ),
        (
            module(
                dir.path(),
                "grow",
                &with_on_request(
                    "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i64.const 0)",
                ),
            ),
            "memory_mb = 2",
            "over its limit of 2 MiB",
        ),
        (
            module(dir.path(), "garbage", &answering("this is not json")),
            "",
            "JSON the ABI does not accept",
        ),
    ];
    for (path, extra, why) in &cases {
        for on_error in ["fail_closed", "fail_open"] {
            let gw = Gateway::start(&format!(
                "{}{}",
                provider(&model),
                entry("bad", path, &format!("{extra}\non_error = \"{on_error}\""))
            ))
            .await;
            // Twice: a failed instance is thrown away and the next call gets a fresh one.
            for _ in 0..2 {
                let started = Instant::now();
                let (status, _, body) = gw.chat(&ask("hello", false)).await;
                assert!(
                    started.elapsed() < Duration::from_secs(3),
                    "{why}: {:?}",
                    started.elapsed()
                );
                if on_error == "fail_closed" {
                    assert_eq!(status, 500, "{why} {body}");
                    assert_eq!(body["error"]["code"], "plugin_failed");
                    assert!(
                        body["error"]["message"].as_str().unwrap().contains(why),
                        "{why}: {body}"
                    );
                } else {
                    assert_eq!(status, 200, "{why} {body}");
                    assert_eq!(body["choices"][0]["message"]["content"], "You said: hello");
                }
            }
            let v: Value = gw.get("/api/plugins", None).await.json().await.unwrap();
            assert_eq!(v["data"][0]["stats"]["request"]["errors"], 2, "{v}");
        }
    }
}

fn check(config: &str) -> (bool, String) {
    let out = crate::cli::check(config);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_loads_wasm_plugins_and_names_every_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let sample = sample();
    let (ok, err) = check(&entry("tag-and-route", &sample, ROUTE_CHEAP));
    assert!(ok, "{err}");

    let wasi = module(
        dir.path(),
        "wasi",
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "on_request") (param i32 i32) (result i64) (i64.const 0)))"#,
    );
    let no_alloc = module(
        dir.path(),
        "no-alloc",
        r#"(module
  (memory (export "memory") 1)
  (func (export "on_request") (param i32 i32) (result i32) (i32.const 0)))"#,
    );
    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    // Entries whose files load but are wrong in themselves.
    let loadable = [
        entry("a", &wasi, ""),
        entry("b", &no_alloc, ""),
        entry(
            "c",
            &sample,
            "config = { rules = [{ model = \"x\", sent_to = \"y\" }] }",
        ),
        entry("d", &not_wasm, ""),
    ]
    .join("\n");
    let config = [
        loadable.clone(),
        format!(
            "[[plugins]]\nname = \"e\"\nkind = \"wasm\"\npath = \"{}\"\nsha256 = \"{}\"\n",
            sample.display(),
            "0".repeat(64)
        ),
        "[[plugins]]\nname = \"f\"\nkind = \"wasm\"\npath = \"/nonexistent/x.wasm\"\nsha256 = \"00\"\nurl = \"http://x\"\n".to_owned(),
    ]
    .join("\n");
    let (ok, err) = check(&config);
    assert!(!ok, "{err}");
    for needle in [
        "plugins[4].sha256: `",
        "not the pinned 0000",
        "plugins[5].sha256: must be 64 hex digits",
        "plugins[5].path: cannot read `/nonexistent/x.wasm`",
        "plugins[5].url: only used by kind `webhook`",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
    // The file's own problems come once the entries themselves are right.
    let (ok, err) = check(&loadable);
    assert!(!ok, "{err}");
    for needle in [
        "plugins[0] `a`: imports `wasi_snapshot_preview1.fd_write`, which the gateway does not provide",
        "plugins[1] `b`: export `on_request` must be a function (i32, i32) -> (i64)",
        "plugins[1] `b`: exports no `alloc(len: i32) -> i32`",
        "plugins[2] `c`: config.rules[0].sent_to: unknown field",
        "plugins[3] `d`: `",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[tokio::test]
async fn the_gateway_refuses_to_start_with_a_broken_wasm_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let no_alloc = module(
        dir.path(),
        "no-alloc",
        r#"(module (memory (export "memory") 1) (func (export "on_request") (param i32 i32) (result i64) (i64.const 0)))"#,
    );
    let mut cfg = switchyard::config::Config::parse(&entry("b", &no_alloc, ""), &|_| None).unwrap();
    cfg.server.data_dir = dir.path().join("data");
    let err = switchyard::app::Server::start(cfg, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("exports no `alloc"), "{err}");
}
