//! Plugins through the real gateway: compiled-in pii-redact and prompt-guard, the sample webhook
//! guardrail (plugins/webhook-guard), and webhooks that are slow, down or answer garbage.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

use crate::gateway::{Gateway, header, sse};
use crate::model::{Model, Turn};

pub fn provider(model: &Model) -> String {
    format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\n\n",
        model.openai_url()
    )
}

/// A model that repeats what the user said.
pub async fn echo() -> Model {
    Model::start(|c| Turn::say(format!("You said: {}", c.user))).await
}

pub fn ask(text: &str, stream: bool) -> Value {
    json!({"model": "mock/m", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

fn streamed_text(events: &[crate::gateway::Event]) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn pii_never_reaches_the_provider_and_comes_back_to_the_user() {
    let model = echo().await;
    let gw = Gateway::start(&format!(
        "{}[[plugins]]\nname = \"pii-redact\"\nkind = \"builtin\"\n",
        provider(&model)
    ))
    .await;
    let said = "Mail ada@example.com, card 4111 1111 1111 1111.";
    let (status, _, body) = gw.chat(&ask(said, false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("You said: {said}")
    );
    let seen = model.seen().last().cloned().unwrap_or_default().to_string();
    assert!(
        seen.contains("[EMAIL_1]") && seen.contains("[CARD_1]"),
        "{seen}"
    );
    assert!(
        !seen.contains("ada@example.com") && !seen.contains("4111"),
        "{seen}"
    );

    let events = sse(gw.post("/v1/chat/completions", &ask(said, true)).await).await;
    assert_eq!(streamed_text(&events), format!("You said: {said}"));
    let seen = model.seen().last().cloned().unwrap_or_default().to_string();
    assert!(!seen.contains("ada@example.com"), "{seen}");
}

/// The cache stores the answer before the answer hooks run (its entry keeps the placeholders the
/// model saw) and the client gets the answer after them: restored when it is stored (a miss) and
/// when it is served (a hit). The stored JSON the OpenAI edge may send as it is must not skip
/// the hooks.
#[tokio::test]
async fn an_answer_the_cache_stores_still_goes_through_the_answer_hooks() {
    let model = echo().await;
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&format!(
        "[server]\ndata_dir = {:?}\n\n{}[[plugins]]\nname = \"pii-redact\"\nkind = \"builtin\"\n\n\
         [cache]\nmode = \"exact\"\n",
        data.path(),
        provider(&model)
    ))
    .await;
    gw.wait_ready().await;
    let said = "Mail ada@example.com about it.";
    let want = format!("You said: {said}");
    let (status, headers, body) = gw.chat(&ask(said, false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-switchyard-cache"), "miss");
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert_eq!(body["choices"][0]["message"]["content"], want, "{body}");
    // The entry holds what the model said, placeholders and all.
    let mut hit = None;
    for _ in 0..250 {
        let (status, headers, body) = gw.chat(&ask(said, false)).await;
        assert_eq!(status, 200, "{body}");
        if header(&headers, "x-switchyard-cache") == "hit-exact" {
            hit = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = hit.unwrap_or_else(|| panic!("the answer was never stored"));
    assert_eq!(hit["choices"][0]["message"]["content"], want, "{hit}");
    let seen = model.seen().last().cloned().unwrap_or_default().to_string();
    assert!(
        seen.contains("[EMAIL_1]") && !seen.contains("ada@"),
        "{seen}"
    );
}

#[tokio::test]
async fn answers_are_redacted_even_when_a_number_is_split_across_chunks() {
    let model = Model::start(|_| Turn::say("Your card 4111 1111 1111 1111 is on file.")).await;
    let gw = Gateway::start(&format!(
        "{}[[plugins]]\nname = \"pii-redact\"\nkind = \"builtin\"\nconfig = {{ redact_answers = true, window = 32 }}\n",
        provider(&model)
    ))
    .await;
    let (_, _, body) = gw.chat(&ask("card?", false)).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Your card [CARD_1] is on file."
    );
    // The model streams word by word: the number arrives in four chunks.
    let events = sse(gw.post("/v1/chat/completions", &ask("card?", true)).await).await;
    assert_eq!(
        streamed_text(&events),
        "Your card [CARD_1] is on file.",
        "{events:?}"
    );
}

#[tokio::test]
async fn prompt_guard_blocks_with_a_readable_400_and_the_model_is_not_called() {
    let model = echo().await;
    let gw = Gateway::start(&format!(
        "{}[[plugins]]\nname = \"prompt-guard\"\nkind = \"builtin\"\nconfig = {{ rules = [{{ name = \"no-keys\", pattern = \"(?i)private key\" }}] }}\n",
        provider(&model)
    ))
    .await;
    let (status, h, body) = gw.chat(&ask("here is my PRIVATE KEY", false)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "plugin_rejected");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`no-keys`") && msg.contains("prompt-guard"),
        "{msg}"
    );
    assert!(!header(&h, "x-request-id").is_empty());
    assert!(model.seen().is_empty(), "the model was not called");
    let (status, _, _) = gw.chat(&ask("hello", false)).await;
    assert_eq!(status, 200);
    // The admin API counts it, and the request log names the plugin.
    let v: Value = gw.get("/api/plugins", None).await.json().await.unwrap();
    let stats = &v["data"][0]["stats"]["request"];
    assert_eq!(
        (stats["calls"].as_u64(), stats["blocks"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    let mut logged = String::new();
    for _ in 0..100 {
        let page: Value = gw
            .get("/api/logs?status=400", None)
            .await
            .json()
            .await
            .unwrap();
        if let Some(e) = page["data"][0]["error"].as_str() {
            logged = e.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged.contains("prompt-guard"), "{logged}");
}

/// Starts the sample webhook guardrail (plugins/webhook-guard/server.py); returns its URL.
async fn webhook_guard() -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let script = format!(
        "{}/plugins/webhook-guard/server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg("--port")
        .arg("0")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the sample webhook");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let port = line.trim_start_matches("listening on ").trim().to_owned();
    (child, format!("http://127.0.0.1:{port}/"))
}

#[tokio::test]
async fn the_sample_webhook_denies_answers_and_modifies() {
    let model = echo().await;
    let (_child, url) = webhook_guard().await;
    let gw = Gateway::start(&format!(
        "{}[[plugins]]\nname = \"guard\"\nkind = \"webhook\"\nurl = \"{url}\"\nhooks = [\"request\", \"response\"]\n",
        provider(&model)
    ))
    .await;
    let (status, _, body) = gw.chat(&ask("something forbidden", false)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`forbidden` is not allowed"),
        "{body}"
    );
    // A short-circuit: answered by the webhook, the model never called; streams too.
    let (status, h, body) = gw.chat(&ask("ping", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-switchyard-provider"), "plugin");
    assert_eq!(body["choices"][0]["message"]["content"], "pong");
    let events = sse(gw.post("/v1/chat/completions", &ask("ping", true)).await).await;
    assert_eq!(streamed_text(&events), "pong");
    assert!(model.seen().is_empty(), "short-circuits skip the provider");
    // Modified request (the house rules added) and modified answer (the disclaimer).
    let (status, _, body) = gw.chat(&ask("hello", false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "You said: hello (checked by webhook-guard)"
    );
    let seen = model.seen().last().cloned().unwrap_or_default();
    assert_eq!(
        seen["messages"][0],
        json!({"role": "system", "content": "Answer in plain language."})
    );
}

/// A webhook that answers `reply` after `delay`.
async fn bad_webhook(delay: Duration, reply: &'static str) -> String {
    let app = Router::new().route(
        "/",
        post(move || async move {
            tokio::time::sleep(delay).await;
            ([("content-type", "application/json")], reply)
        }),
    );
    format!("http://{}/", crate::mock::serve(app).await)
}

#[tokio::test]
async fn a_slow_down_or_garbled_webhook_follows_on_error() {
    let model = echo().await;
    let slow = bad_webhook(Duration::from_secs(5), "{\"action\":\"allow\"}").await;
    let garbage = bad_webhook(Duration::ZERO, "<html>oops</html>").await;
    let down = "http://127.0.0.1:9/".to_owned();
    for (url, why) in [
        (slow, "did not answer within 200 ms"),
        (garbage, "not JSON"),
        (down, "cannot reach"),
    ] {
        for on_error in ["fail_closed", "fail_open"] {
            let gw = Gateway::start(&format!(
                "{}[[plugins]]\nname = \"g\"\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_ms = 200\non_error = \"{on_error}\"\n",
                provider(&model)
            ))
            .await;
            let (status, _, body) = gw.chat(&ask("hello", false)).await;
            if on_error == "fail_closed" {
                assert_eq!(status, 500, "{url} {body}");
                assert_eq!(body["error"]["code"], "plugin_failed");
                assert!(
                    body["error"]["message"].as_str().unwrap().contains(why),
                    "{body}"
                );
            } else {
                assert_eq!(status, 200, "{url} {body}");
                assert_eq!(body["choices"][0]["message"]["content"], "You said: hello");
            }
            let v: Value = gw.get("/api/plugins", None).await.json().await.unwrap();
            assert_eq!(v["data"][0]["stats"]["request"]["errors"], 1, "{v}");
        }
    }
}

#[tokio::test]
async fn a_webhook_whose_answer_never_ends_is_cut_at_the_verdict_limit() {
    // 1 MiB blocks of spaces without end: the verdict is read up to its 16 MiB limit and refused
    // then, not held in memory until the timeout.
    let app = Router::new().route(
        "/",
        post(|| async {
            let block = bytes::Bytes::from(vec![b' '; 1 << 20]);
            let body =
                futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(block.clone()));
            axum::body::Body::from_stream(body)
        }),
    );
    let url = format!("http://{}/", crate::mock::serve(app).await);
    let model = echo().await;
    let gw = Gateway::start(&format!(
        "{}[[plugins]]\nname = \"g\"\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_ms = 10000\n",
        provider(&model)
    ))
    .await;
    let (status, _, body) = gw.chat(&ask("hello", false)).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "plugin_failed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("verdict is too large"),
        "{body}"
    );
}

#[tokio::test]
async fn check_reports_plugin_mistakes_with_paths() {
    let toml = "[[plugins]]\nname = \"prompt-guard\"\nkind = \"builtin\"\nconfig = { rules = [{ name = \"x\", pattern = \"(\" }] }\n\n[[plugins]]\nname = \"nope\"\nkind = \"builtin\"\n\n[[plugins]]\nname = \"w\"\nkind = \"webhook\"\nhooks = [\"sometimes\"]\n\n[[plugins]]\nname = \"s\"\nkind = \"wasm\"\n";
    let issues = switchyard::config::Config::parse(toml, &|_| None).unwrap_err();
    let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
    for needle in [
        "plugins[0].config.rules[0].pattern: not a valid regex",
        "plugins[1].name: no compiled-in plugin `nope`",
        "plugins[2].url: kind `webhook` needs a url",
        "plugins[3].sha256: kind `wasm` needs the module's sha256 pinned",
        "plugins[3].path: kind `wasm` needs the path",
    ] {
        assert!(
            text.iter().any(|t| t.starts_with(needle)),
            "{needle} in {text:?}"
        );
    }
}

#[tokio::test]
async fn complete_hooks_get_the_record_after_the_answer() {
    let model = echo().await;
    let got: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/",
        post(move |axum::Json(v): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let url = format!("http://{}/", crate::mock::serve(app).await);
    let gw = Gateway::start(&format!(
        "{}[[plugins]]\nname = \"export\"\nkind = \"webhook\"\nurl = \"{url}\"\nhooks = [\"complete\"]\n",
        provider(&model)
    ))
    .await;
    let (status, h, _) = gw.chat(&ask("hello", false)).await;
    assert_eq!(status, 200);
    let id = header(&h, "x-request-id");
    let mut record = None;
    for _ in 0..100 {
        if let Some(v) = got.lock().unwrap().first() {
            record = Some(v.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v = record.expect("the complete hook got the record");
    assert_eq!(v["hook"], "complete");
    assert_eq!(v["record"]["request_id"], id);
    assert_eq!(v["record"]["model"], "mock/m");
    assert_eq!(v["record"]["status"], 200);
    let p: Value = gw.get("/api/plugins", None).await.json().await.unwrap();
    assert_eq!(p["data"][0]["hooks"], json!(["complete"]), "{p}");
}

const KEY_ADDS: &str = "sk-sy-plugins-adds-0123456789";
const KEY_PLAIN: &str = "sk-sy-plugins-plain-0123456789";

#[tokio::test]
async fn keys_add_opt_in_plugins_and_cannot_remove_mandatory_ones() {
    let model = echo().await;
    let cfg = format!(
        "{}[[plugins]]\nname = \"prompt-guard\"\nkind = \"builtin\"\nconfig = {{ rules = [{{ name = \"no-keys\", pattern = \"(?i)private key\" }}] }}\n\n\
         [[plugins]]\nname = \"pii-redact\"\nkind = \"builtin\"\ndefault_on = false\n\n\
         [governance]\nrequire_virtual_key = true\n\n\
         [[governance.keys]]\nid = \"adds\"\nvalue = \"env.KEY_ADDS\"\nplugins = [\"pii-redact\"]\n\n\
         [[governance.keys]]\nid = \"plain\"\nvalue = \"env.KEY_PLAIN\"\n",
        provider(&model)
    );
    let env = |k: &str| match k {
        "KEY_ADDS" => Some(KEY_ADDS.to_owned()),
        "KEY_PLAIN" => Some(KEY_PLAIN.to_owned()),
        _ => None,
    };
    let gw = Gateway::start_env(&cfg, &env).await;
    let send = |key: &'static str, text: &'static str| {
        let rb = gw
            .http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&ask(text, false));
        async move { rb.send().await.unwrap() }
    };
    // The key that adds pii-redact: the model sees a placeholder.
    assert_eq!(send(KEY_ADDS, "mail ada@example.com").await.status(), 200);
    let seen = model.seen().last().cloned().unwrap_or_default().to_string();
    assert!(seen.contains("[EMAIL_1]"), "{seen}");
    // The other key: the opt-in plugin does not run for it.
    assert_eq!(send(KEY_PLAIN, "mail ada@example.com").await.status(), 200);
    let seen = model.seen().last().cloned().unwrap_or_default().to_string();
    assert!(seen.contains("ada@example.com"), "{seen}");
    // The mandatory guard runs for both.
    assert_eq!(send(KEY_ADDS, "my private key").await.status(), 400);
    assert_eq!(send(KEY_PLAIN, "my private key").await.status(), 400);
    // Through the API: a key may not turn off a mandatory plugin, nor name an unknown one.
    for (body, needle) in [
        (
            json!({"id": "k1", "disable_plugins": ["prompt-guard"]}),
            "mandatory",
        ),
        (
            json!({"id": "k2", "plugins": ["nope"]}),
            "no [[plugins]] entry named `nope`",
        ),
    ] {
        let r = gw.post("/api/keys", &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(needle),
            "{e}"
        );
    }
    let r = gw
        .post(
            "/api/keys",
            &json!({"id": "k3", "disable_plugins": ["pii-redact"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    // And check says the same of the config file.
    let bad = format!(
        "{cfg}\n[[governance.keys]]\nid = \"x\"\nvalue = \"env.KEY_PLAIN\"\ndisable_plugins = [\"prompt-guard\"]\n"
    );
    let issues = switchyard::config::Config::parse(&bad, &env).unwrap_err();
    assert!(
        issues.iter().any(|i| i
            .to_string()
            .starts_with("governance.keys[2].disable_plugins[0]: `prompt-guard` is mandatory")),
        "{issues:?}"
    );
}
