//! The MCP layer end to end: the real gateway, the real sample MCP servers from `mcp-servers/`
//! (stdio and streamable HTTP), and a scripted model behind the OpenAI and Anthropic wire formats.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gateway::{Gateway, fold_openai, header, sse};
use crate::model::{Conv, Model, Turn};

/// Path of a sample server binary, built once if the workspace build has not produced it.
pub fn server_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash> -> target/<profile>
    let dir = exe.parent().and_then(|p| p.parent()).unwrap().to_owned();
    let path = dir.join(name);
    BUILT.get_or_init(|| {
        let all = ["mcp-calculator", "mcp-slow", "mcp-kv"];
        if all.iter().all(|b| dir.join(b).exists()) {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "-p",
                "mcp-calculator",
                "-p",
                "mcp-slow",
                "-p",
                "mcp-kv",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building the sample MCP servers failed");
    });
    assert!(path.exists(), "{} was not built", path.display());
    path
}

fn stdio_server(name: &str, bin: &str, args: &[&str]) -> String {
    format!(
        "[[mcp.servers]]\nname = \"{name}\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = {}\n",
        server_bin(bin).display(),
        serde_json::to_string(args).unwrap()
    )
}

/// Provider `mock` of `kind` pointing at the model, plus `extra` TOML.
fn config(model: &Model, kind: &str, extra: &str) -> String {
    let url = if kind == "anthropic" {
        model.anthropic_url()
    } else {
        model.openai_url()
    };
    format!(
        "[[providers]]\nname = \"mock\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\nkeys = [\"sk-test\"]\n\n[mcp]\ntool_timeout_ms = 3000\n# Tests register stdio servers through the API without an admin token.\nallow_stdio_registration = true\n\n{extra}"
    )
}

/// Calls calc__add(2, 3) first, then says what the tool answered.
fn adder(c: &Conv) -> Turn {
    if c.results.is_empty() {
        Turn::call(&[("calc__add", json!({"a": 2, "b": 3}))])
    } else {
        Turn::say(format!("The sum is {}.", c.results.join(" and ")))
    }
}

/// An OpenAI-compatible gateway in front of `model` with these stdio servers (name, binary), all
/// connected; `top` is TOML put before the rest (a `[server]` table).
async fn with_servers(model: &Model, top: &str, servers: &[(&str, &str)]) -> Gateway {
    let list: String = servers
        .iter()
        .map(|(name, bin)| stdio_server(name, bin, &[]))
        .collect();
    let gw = Gateway::start(&format!(
        "{top}\n{}",
        config(model, "openai-compatible", &list)
    ))
    .await;
    ready_servers(&gw, servers.len()).await;
    gw
}

/// A model that makes `calls` first, then answers with the tool results joined by " | ".
pub fn calls_then_results(
    calls: &[(&str, Value)],
) -> impl Fn(&Conv) -> Turn + Send + Sync + 'static {
    let first = Turn::call(calls);
    move |c: &Conv| {
        if c.results.is_empty() {
            first.clone()
        } else {
            Turn::say(c.results.join(" | "))
        }
    }
}

pub async fn ready_servers(gw: &Gateway, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = gw.get("/api/mcp/servers", None).await.json().await.unwrap();
        let up = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "connected")
            .count();
        if up >= n {
            return;
        }
        assert!(Instant::now() < deadline, "MCP servers not connected: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "mock/m", "stream": stream, "messages": [{"role": "user", "content": "What is 2 + 3?"}]})
}

async fn post_with(
    gw: &Gateway,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = gw.http.post(gw.url(path)).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// A gateway with one provider of `kind` at `url` and the calculator MCP server, ready.
async fn with_calculator(kind: &str, url: &str) -> Gateway {
    let gw = Gateway::start(&format!(
        "[[providers]]\nname = \"mock\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\nkeys = [\"sk-test-fixed-0123456789\"]\n\n{}",
        stdio_server("calc", "mcp-calculator", &[])
    ))
    .await;
    ready_servers(&gw, 1).await;
    gw
}

/// With tools offered but none called, the model's answer comes back as it gave it: from
/// OpenAI's API byte for byte, and from any provider with its usage details (the loop used to
/// rebuild the usage from its own totals, without them).
#[tokio::test]
async fn an_answer_without_tool_calls_comes_back_as_the_model_gave_it() {
    use crate::conformance::{OPENAI_ANSWER, fixed_answer};
    let url = fixed_answer(OPENAI_ANSWER).await;
    for kind in ["openai", "openai-compatible"] {
        let gw = with_calculator(kind, &url).await;
        let r = post_with(&gw, "/v1/chat/completions", &chat_body(false), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(r.headers(), "x-switchyard-mcp-tool-calls"), "0");
        let text = r.text().await.unwrap();
        if kind == "openai" {
            assert_eq!(text, OPENAI_ANSWER);
        }
        let body: Value = serde_json::from_str(&text).unwrap();
        let want: Value = serde_json::from_str(OPENAI_ANSWER).unwrap();
        assert_eq!(body["usage"], want["usage"], "{kind}: {body}");
        assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    }
}

/// A streamed answer without tool calls, with the gateway's tools offered, reaches the client as
/// the model streamed it: OpenAI's chunks byte for byte, its finish and usage chunks included, and
/// from any provider the usage with its details (the loop used to close every stream with chunks
/// of its own, written from its totals: no usage details, none of the upstream's other members).
#[tokio::test]
async fn a_streamed_answer_without_tool_calls_comes_back_as_the_model_streamed_it() {
    use crate::conformance::{OPENAI_STREAM, fixed_stream};
    let url = fixed_stream().await;
    for kind in ["openai", "openai-compatible"] {
        let gw = with_calculator(kind, &url).await;
        let mut body = chat_body(true);
        body["stream_options"] = json!({"include_usage": true});
        let r = post_with(&gw, "/v1/chat/completions", &body, &[]).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        // Through the loop: its trailer reports no call.
        assert!(
            text.contains(": x-switchyard-mcp-tool-calls=0 x-switchyard-mcp-iterations=0"),
            "{text}"
        );
        let data: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        if kind == "openai" {
            let mut want = OPENAI_STREAM.to_vec();
            want.push("[DONE]");
            assert_eq!(data, want);
        }
        let n = data.len();
        assert_eq!(data[n - 1], "[DONE]", "{kind}");
        let usage: Value = serde_json::from_str(data[n - 2]).unwrap();
        let sent: Value = serde_json::from_str(OPENAI_STREAM[4]).unwrap();
        assert_eq!(usage["usage"], sent["usage"], "{kind}: {text}");
        let finish: Value = serde_json::from_str(data[n - 3]).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop", "{kind}");
        assert_eq!(finish["system_fingerprint"], "fp_1", "{kind}: {text}");
    }
}

#[tokio::test]
async fn loop_runs_a_stdio_tool_and_answers() {
    // OpenAI's own API (whose answers travel undecoded until a tool call needs them) and any
    // OpenAI-compatible server.
    for kind in ["openai", "openai-compatible"] {
        loop_runs_a_stdio_tool_through(kind).await;
    }
}

async fn loop_runs_a_stdio_tool_through(kind: &str) {
    let model = Model::start(adder).await;
    let gw = Gateway::start(&config(
        &model,
        kind,
        &stdio_server("calc", "mcp-calculator", &[]),
    ))
    .await;
    ready_servers(&gw, 1).await;
    let (status, h, body) = gw.chat(&chat_body(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "The sum is 5.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "1");
    assert_eq!(header(&h, "x-switchyard-mcp-iterations"), "1");
    // Usage is summed over both model calls.
    assert_eq!(body["usage"]["prompt_tokens"], 20);
    assert_eq!(body["usage"]["completion_tokens"], 10);
    let seen = model.seen();
    assert_eq!(seen.len(), 2);
    let names: Vec<&str> = seen[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"calc__add") && names.contains(&"calc__sqrt"),
        "{names:?}"
    );
    // The second call carries the assistant's call and the tool's answer.
    let msgs = seen[1]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[1]["tool_calls"][0]["function"]["name"], "calc__add");
    assert_eq!(msgs[2]["role"], "tool");
    assert_eq!(msgs[2]["tool_call_id"], msgs[1]["tool_calls"][0]["id"]);
    assert_eq!(msgs[2]["content"], "5");
    // Per-tool metrics.
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"switchyard_mcp_tool_calls_total{server="calc",tool="add",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"switchyard_mcp_tool_call_duration_seconds_count{server="calc",tool="add"} 1"#
    ));
    assert!(metrics.contains(r#"switchyard_mcp_loops_total{outcome="answered"} 1"#));
}

#[tokio::test]
async fn parallel_calls_run_at_the_same_time() {
    let model = Model::start(calls_then_results(&[
        ("slow__sleep", json!({"ms": 400})),
        ("slow__sleep", json!({"ms": 400})),
        ("calc__mul", json!({"a": 6, "b": 7})),
    ]))
    .await;
    let gw = with_servers(
        &model,
        "",
        &[("calc", "mcp-calculator"), ("slow", "mcp-slow")],
    )
    .await;
    let started = Instant::now();
    let (status, h, body) = gw.chat(&chat_body(false)).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "slept 400 ms | slept 400 ms | 42"
    );
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "3");
    assert!(
        took < Duration::from_millis(750),
        "calls ran one after another: {took:?}"
    );
}

#[tokio::test]
async fn streaming_loop_is_one_coherent_stream() {
    // OpenAI's own API (whose chunks pass as their JSON where the loop leaves them as they are)
    // and any OpenAI-compatible server.
    for kind in ["openai", "openai-compatible"] {
        streaming_loop_is_one_coherent_stream_through(kind).await;
    }
}

async fn streaming_loop_is_one_coherent_stream_through(kind: &str) {
    let model = Model::start(|c: &Conv| {
        if c.results.is_empty() {
            Turn {
                text: "Let me compute. ".into(),
                calls: vec![("calc__add".into(), json!({"a": 2, "b": 3}))],
            }
        } else {
            Turn::say(format!("The sum is {}.", c.results[0]))
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "[server]\nsse_keep_alive_ms = 100\n\n{}",
        config(&model, kind, &stdio_server("calc", "mcp-calculator", &[]))
    ))
    .await;
    ready_servers(&gw, 1).await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = gw.post("/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    let events = sse(resp).await;
    let (text, calls, finish, usage) = fold_openai(&events);
    assert_eq!(text, "Let me compute. The sum is 5.");
    assert!(
        calls.is_empty(),
        "gateway tool calls leaked to the client: {calls:?}"
    );
    assert_eq!(finish.as_deref(), Some("stop"));
    let usage = usage.unwrap();
    assert_eq!(usage["prompt_tokens"], 20);
    assert_eq!(usage["completion_tokens"], 10);
    // One id, one role delta, one finish reason, one [DONE].
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    let ids: std::collections::HashSet<&str> =
        chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["role"].is_string())
        .count();
    assert_eq!(roles, 1);
    let finishes = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"].is_string())
        .count();
    assert_eq!(finishes, 1);
    assert_eq!(events.iter().filter(|e| e.data == "[DONE]").count(), 1);
}

#[tokio::test]
async fn streaming_sends_keep_alives_while_a_tool_runs_and_reports_the_count() {
    let model = Model::start(|c: &Conv| {
        if c.results.is_empty() {
            Turn::call(&[("slow__sleep", json!({"ms": 600}))])
        } else {
            Turn::say("done")
        }
    })
    .await;
    let gw = with_servers(
        &model,
        "[server]\nsse_keep_alive_ms = 100\n",
        &[("slow", "mcp-slow")],
    )
    .await;
    let resp = gw.post("/v1/chat/completions", &chat_body(true)).await;
    let raw = resp.text().await.unwrap();
    assert!(raw.matches(": keep-alive").count() >= 3, "{raw}");
    assert!(
        raw.contains(": x-switchyard-mcp-tool-calls=1 x-switchyard-mcp-iterations=1"),
        "{raw}"
    );
    assert!(raw.trim_end().ends_with("data: [DONE]"), "{raw}");
}

#[tokio::test]
async fn loop_through_the_anthropic_provider() {
    let model = Model::start(adder).await;
    let gw = Gateway::start(&config(
        &model,
        "anthropic",
        &stdio_server("calc", "mcp-calculator", &[]),
    ))
    .await;
    ready_servers(&gw, 1).await;
    let (status, h, body) = gw.chat(&chat_body(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "The sum is 5.");
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "1");
    let seen = model.seen();
    assert_eq!(seen.len(), 2);
    // Anthropic's wire shape: tools by name, the call as tool_use, the result as tool_result.
    assert!(
        seen[0]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "calc__add")
    );
    let msgs = seen[1]["messages"].as_array().unwrap();
    assert_eq!(msgs[1]["content"][0]["type"], "tool_use");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(
        msgs[2]["content"][0]["tool_use_id"],
        msgs[1]["content"][0]["id"]
    );

    // And streaming through the same provider.
    let resp = gw.post("/v1/chat/completions", &chat_body(true)).await;
    let (text, calls, finish, _) = fold_openai(&sse(resp).await);
    assert_eq!(text, "The sum is 5.");
    assert!(calls.is_empty());
    assert_eq!(finish.as_deref(), Some("stop"));
}

#[tokio::test]
async fn loop_through_the_anthropic_ingress() {
    let model = Model::start(adder).await;
    let gw = with_servers(&model, "", &[("calc", "mcp-calculator")]).await;
    let body = json!({"model": "mock/m", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "What is 2 + 3?"}]});
    let resp = gw.post("/anthropic/v1/messages", &body).await;
    assert_eq!(header(resp.headers(), "x-switchyard-mcp-tool-calls"), "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["content"][0]["text"], "The sum is 5.");
    assert_eq!(v["stop_reason"], "end_turn");

    let mut body = body;
    body["stream"] = json!(true);
    let events = sse(gw.post("/anthropic/v1/messages", &body).await).await;
    let mut text = String::new();
    for e in &events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_ne!(v["type"], "error", "{v}");
        assert_ne!(
            v["content_block"]["type"], "tool_use",
            "gateway tool leaked: {v}"
        );
        if let Some(t) = v["delta"]["text"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, "The sum is 5.");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some("message_start"))
            .count(),
        1
    );
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("message_stop")
    );
}

#[tokio::test]
async fn loop_through_the_responses_api() {
    let model = Model::start(adder).await;
    let gw = with_servers(&model, "", &[("calc", "mcp-calculator")]).await;
    let body = json!({"model": "mock/m", "input": "What is 2 + 3?"});
    let resp = gw.post("/v1/responses", &body).await;
    assert_eq!(header(resp.headers(), "x-switchyard-mcp-tool-calls"), "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["status"], "completed");
    // The gateway's own tool round is not shown: one message with the final answer.
    assert_eq!(v["output"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["output"][0]["content"][0]["text"], "The sum is 5.");

    let mut body = body;
    body["stream"] = json!(true);
    let events = sse(gw.post("/v1/responses", &body).await).await;
    let mut text = String::new();
    for e in &events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_ne!(
            v["item"]["type"], "function_call",
            "gateway tool leaked: {v}"
        );
        if v["type"] == "response.output_text.delta" {
            text.push_str(v["delta"].as_str().unwrap());
        }
    }
    assert_eq!(text, "The sum is 5.");
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "response.completed");
}

#[tokio::test]
async fn a_timeout_becomes_a_tool_result_and_the_loop_goes_on() {
    let model = Model::start(calls_then_results(&[
        ("slow__hang", json!({})),
        ("slow__fail", json!({"text": "disk full"})),
    ]))
    .await;
    let cfg = config(
        &model,
        "openai-compatible",
        &stdio_server("slow", "mcp-slow", &[]),
    )
    .replace("tool_timeout_ms = 3000", "tool_timeout_ms = 300");
    let gw = Gateway::start(&cfg).await;
    ready_servers(&gw, 1).await;
    let (status, _, body) = gw.chat(&chat_body(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Error: the tool did not answer within 300 ms | Error: disk full"
    );
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"switchyard_mcp_tool_calls_total{server="slow",tool="hang",outcome="timeout"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"switchyard_mcp_tool_calls_total{server="slow",tool="fail",outcome="tool_error"} 1"#
    ));
    // The server is still connected and answers the next call.
    let v: Value = gw
        .get("/api/mcp/servers/slow", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "connected");
}

#[tokio::test]
async fn a_crashed_server_is_reconnected_and_others_are_not_blocked() {
    let model = Model::start(|c: &Conv| {
        let crash = c.user.contains("crash");
        if !c.results.is_empty() {
            Turn::say(c.results.join(" | "))
        } else if crash {
            Turn::call(&[("slow__crash", json!({}))])
        } else if c.user.contains("echo") {
            Turn::call(&[("slow__echo", json!({"text": "back again"}))])
        } else {
            Turn::say("no tools needed")
        }
    })
    .await;
    let gw = with_servers(&model, "", &[("slow", "mcp-slow")]).await;
    let ask =
        |text: &str| json!({"model": "mock/m", "messages": [{"role": "user", "content": text}]});
    let (status, _, body) = gw.chat(&ask("please crash")).await;
    assert_eq!(status, 200, "{body}");
    let said = body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(said.starts_with("Error: the tool call failed"), "{said}");
    // While it is down, chat that needs no tool is answered at once.
    let started = Instant::now();
    let (status, _, body) = gw.chat(&ask("hello")).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "no tools needed");
    assert!(started.elapsed() < Duration::from_secs(1));
    // It comes back by itself.
    ready_servers(&gw, 1).await;
    let (_, _, body) = gw.chat(&ask("echo please")).await;
    assert_eq!(body["choices"][0]["message"]["content"], "back again");
}

#[tokio::test]
async fn a_dead_server_shows_its_reason_and_chat_goes_on_without_it() {
    let model =
        Model::start(|c: &Conv| Turn::say(format!("tools offered: {}", c.tools.len()))).await;
    let dead = "[[mcp.servers]]\nname = \"dead\"\ntransport = \"stdio\"\ncommand = \"/nonexistent/mcp-server\"\n";
    let gw = Gateway::start(&config(
        &model,
        "openai-compatible",
        &format!("{dead}{}", stdio_server("calc", "mcp-calculator", &[])),
    ))
    .await;
    ready_servers(&gw, 1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let v = loop {
        let v: Value = gw
            .get("/api/mcp/servers/dead", None)
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "reconnecting" || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(v["status"], "reconnecting", "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot start `/nonexistent/mcp-server`"),
        "{v}"
    );
    let (status, _, body) = gw.chat(&chat_body(false)).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "tools offered: 5");
}

#[tokio::test]
async fn registration_through_the_api_with_errors_and_removal() {
    let model = Model::start(adder).await;
    let gw = Gateway::start(&config(&model, "openai-compatible", "")).await;
    let post = |body: Value| {
        let gw = &gw;
        async move {
            let r = gw.post("/api/mcp/servers", &body).await;
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = post(json!({"name": "calc", "command": "/no/such/binary"})).await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("cannot connect to MCP server `calc`")
            && msg.contains("cannot start `/no/such/binary`"),
        "{msg}"
    );
    let (s, v) = post(json!({"name": "bad__name", "command": "x"})).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`__`"),
        "{v}"
    );
    let (s, v) = post(json!({"name": "h", "transport": "http"})).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs a url"),
        "{v}"
    );
    let (s, v) = post(json!({"name": "x", "command": "y", "colour": "red"})).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("colour"),
        "{v}"
    );
    let (s, v) = post(json!({"name": "k", "transport": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "env.SWITCHYARD_TEST_UNSET_VAR"}})).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SWITCHYARD_TEST_UNSET_VAR"),
        "{v}"
    );
    // The gateway keeps serving, with no tools.
    let (status, _, _) = gw
        .chat(&json!({"model": "mock/m", "messages": [{"role": "user", "content": "hi"}], "x": 1}))
        .await;
    assert_eq!(status, 200);

    let calc = server_bin("mcp-calculator").display().to_string();
    let (s, v) =
        post(json!({"name": "calc", "command": calc, "allowed_tools": ["add", "mul", "nope"]}))
            .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"], "connected");
    assert_eq!(v["source"], "api");
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calc__add", "calc__mul"]);
    assert_eq!(v["unknown_allowed_tools"], json!(["nope"]));
    let (s, _) = post(json!({"name": "calc", "command": calc})).await;
    assert_eq!(s, 409);
    let tools: Value = gw.get("/api/mcp/tools", None).await.json().await.unwrap();
    assert_eq!(tools["data"][0]["name"], "calc__add");
    assert_eq!(tools["data"][0]["tool"], "add");
    assert!(tools["data"][0]["input_schema"]["properties"]["a"].is_object());

    let (status, h, body) = gw.chat(&chat_body(false)).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "The sum is 5.");
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "1");

    // What a request is offered follows the registrations as they change (the hub keeps the
    // offer made for the first request and must not serve it after a change).
    let offered = |model: &Model| -> Vec<String> {
        let seen = model.seen();
        let last = seen.last().expect("the model was called");
        last["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| {
                        t["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(offered(&model), ["calc__add", "calc__mul"]);
    let (s, v) = post(json!({"name": "more", "command": calc, "allowed_tools": ["sqrt"]})).await;
    assert_eq!(s, 201, "{v}");
    let ask = json!({"model": "mock/m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(gw.chat(&ask).await.0, 200);
    assert_eq!(offered(&model), ["calc__add", "calc__mul", "more__sqrt"]);
    assert_eq!(gw.delete("/api/mcp/servers/calc").await.status(), 200);
    assert_eq!(gw.chat(&ask).await.0, 200);
    assert_eq!(offered(&model), ["more__sqrt"]);
    assert_eq!(gw.delete("/api/mcp/servers/more").await.status(), 200);
    assert_eq!(gw.chat(&ask).await.0, 200);
    assert_eq!(offered(&model), Vec::<String>::new());

    assert_eq!(gw.delete("/api/mcp/servers/calc").await.status(), 404);
    let list: Value = gw.get("/api/mcp/servers", None).await.json().await.unwrap();
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn config_servers_cannot_be_deleted_through_the_api() {
    let model = Model::start(adder).await;
    let gw = Gateway::start(&config(
        &model,
        "openai-compatible",
        &stdio_server("calc", "mcp-calculator", &[]),
    ))
    .await;
    let r = gw.delete("/api/mcp/servers/calc").await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config file")
    );
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    let model = Model::start(adder).await;
    let data = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = \"{}\"\n{}",
        data.path().display(),
        config(&model, "openai-compatible", "")
    );
    let calc = server_bin("mcp-calculator").display().to_string();
    {
        let gw = Gateway::start(&cfg).await;
        let r = gw
            .post(
                "/api/mcp/servers",
                &json!({"name": "calc", "command": calc}),
            )
            .await;
        assert_eq!(r.status(), 201);
        gw.shutdown().await;
    }
    let gw = Gateway::start(&cfg).await;
    ready_servers(&gw, 1).await;
    let v: Value = gw
        .get("/api/mcp/servers/calc", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["source"], "api");
    let (_, h, body) = gw.chat(&chat_body(false)).await;
    assert_eq!(body["choices"][0]["message"]["content"], "The sum is 5.");
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "1");
    // Removal is persisted too.
    assert_eq!(gw.delete("/api/mcp/servers/calc").await.status(), 200);
    gw.shutdown().await;
    let gw = Gateway::start(&cfg).await;
    let list: Value = gw.get("/api/mcp/servers", None).await.json().await.unwrap();
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn long_names_are_shortened_and_collisions_rejected() {
    let model = Model::start(|c: &Conv| {
        let long = c.tools.iter().find(|t| t.len() == 64).cloned();
        match (c.results.is_empty(), long) {
            (true, Some(name)) => Turn::call(&[(name.as_str(), json!({}))]),
            _ => Turn::say(c.results.join("")),
        }
    })
    .await;
    let gw = Gateway::start(&config(&model, "openai-compatible", "")).await;
    let slow = server_bin("mcp-slow").display().to_string();
    let r = gw
        .post(
            "/api/mcp/servers",
            &json!({"name": "names", "command": slow, "args": ["--extra-names"]}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`dotted.name` and `dotted_name`")
            || msg.contains("`dotted_name` and `dotted.name`"),
        "{msg}"
    );
    assert!(msg.contains("names__dotted_name"), "{msg}");
    let r = gw
        .post(
            "/api/mcp/servers",
            &json!({"name": "names", "command": slow, "args": ["--extra-names"],
                    "allowed_tools": ["dotted.name", "echo_with_a_deliberately_long_name_so_that_the_gateway_must_shorten_it"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"names__dotted_name"), "{names:?}");
    let long = names
        .iter()
        .find(|n| n.len() == 64)
        .expect("a shortened name");
    assert!(
        long.starts_with("names__echo_with_a_deliberately_long_name"),
        "{long}"
    );
    assert!(
        long.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    );
    // The call reaches the tool under its original name.
    let (_, _, body) = gw.chat(&chat_body(false)).await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo_with_a_deliberately_long_name_so_that_the_gateway_must_shorten_it"
    );
}

#[tokio::test]
async fn headers_narrow_what_is_offered() {
    let model = Model::start(|c: &Conv| Turn::say(c.tools.join(","))).await;
    let gw = with_servers(
        &model,
        "",
        &[("calc", "mcp-calculator"), ("slow", "mcp-slow")],
    )
    .await;
    let offered = |headers: Vec<(&'static str, &'static str)>| {
        let gw = &gw;
        async move {
            let mut body = chat_body(false);
            body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
            let r = post_with(gw, "/v1/chat/completions", &body, &headers).await;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (
                status,
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                v,
            )
        }
    };
    let (_, all, _) = offered(vec![]).await;
    assert!(
        all.starts_with("get_weather,"),
        "client tools come first, untouched: {all}"
    );
    assert!(
        all.contains("calc__add") && all.contains("slow__sleep"),
        "{all}"
    );
    let (_, only, _) = offered(vec![("x-switchyard-mcp-servers", "calc")]).await;
    assert_eq!(
        only,
        "get_weather,calc__add,calc__div,calc__mul,calc__sqrt,calc__sub"
    );
    let (_, two, _) = offered(vec![("x-switchyard-mcp-tools", "calc__add, slow__echo")]).await;
    assert_eq!(two, "get_weather,calc__add,slow__echo");
    let (_, off, _) = offered(vec![("x-switchyard-mcp", "off")]).await;
    assert_eq!(off, "get_weather");
    let (s, _, v) = offered(vec![("x-switchyard-mcp-servers", "nope")]).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no MCP server named `nope`"),
        "{v}"
    );
    let (s, _, v) = offered(vec![("x-switchyard-mcp", "sometimes")]).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-switchyard-mcp must be"),
        "{v}"
    );
    let (s, _, _) = offered(vec![("x-switchyard-mcp-max-iterations", "-1")]).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn inject_mode_returns_gateway_calls_to_the_client() {
    let model = Model::start(adder).await;
    let gw = with_servers(&model, "", &[("calc", "mcp-calculator")]).await;
    let r = post_with(
        &gw,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-switchyard-mcp", "inject")],
    )
    .await;
    assert_eq!(header(r.headers(), "x-switchyard-mcp-tool-calls"), "0");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "calc__add"
    );
    assert_eq!(model.seen().len(), 1);
}

#[tokio::test]
async fn mixed_turns_run_gateway_tools_and_return_client_tools_with_history() {
    let model = Model::start(|c: &Conv| match c.results.len() {
        0 => Turn::call(&[
            ("calc__add", json!({"a": 2, "b": 3})),
            ("get_weather", json!({"city": "Paris"})),
        ]),
        _ => Turn::say(format!("results: {}", c.results.join(" | "))),
    })
    .await;
    let gw = with_servers(&model, "", &[("calc", "mcp-calculator")]).await;
    let weather = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    for stream in [false, true] {
        let mut body = chat_body(stream);
        body["tools"] = weather.clone();
        let resp = gw.post("/v1/chat/completions", &body).await;
        let (content, calls, finish) = if stream {
            let (t, c, f, _) = fold_openai(&sse(resp).await);
            (t, c, f)
        } else {
            assert_eq!(header(resp.headers(), "x-switchyard-mcp-tool-calls"), "1");
            let v: Value = resp.json().await.unwrap();
            let m = &v["choices"][0]["message"];
            let calls = m["tool_calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["function"]["name"].as_str().unwrap().to_owned(),
                        serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
                    )
                })
                .collect();
            (
                m["content"].as_str().unwrap_or_default().to_owned(),
                calls,
                v["choices"][0]["finish_reason"].as_str().map(str::to_owned),
            )
        };
        assert_eq!(content, "");
        assert_eq!(
            calls,
            vec![("get_weather".to_owned(), json!({"city": "Paris"}))],
            "stream={stream}"
        );
        assert_eq!(finish.as_deref(), Some("tool_calls"));
    }
    // The client continues (non-streaming answer above): echo its assistant message, add its result.
    let mut body = chat_body(false);
    body["tools"] = weather.clone();
    let first: Value = gw
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    let assistant = first["choices"][0]["message"].clone();
    let call_id = assistant["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen_before = model.seen().len();
    body["messages"] = json!([
        {"role": "user", "content": "What is 2 + 3?"},
        assistant,
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"}
    ]);
    let (status, _, v) = gw.chat(&body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "results: 5 | sunny");
    // The model saw the whole turn: both calls, then both results.
    let seen = model.seen();
    assert_eq!(seen.len(), seen_before + 1);
    let msgs = seen.last().unwrap()["messages"].as_array().unwrap().clone();
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    let names: Vec<&str> = msgs[1]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["calc__add", "get_weather"]);
    assert_eq!(msgs[2]["content"], "5");
    assert_eq!(msgs[3]["content"], "sunny");
    assert_eq!(msgs[3]["tool_call_id"], json!(call_id));
}

#[tokio::test]
async fn the_iteration_bound_stops_the_loop_and_says_so() {
    let model = Model::start(|c: &Conv| {
        if c.tool_choice.as_deref() == Some("none") {
            Turn::say(format!("stopping after {} results", c.results.len()))
        } else {
            Turn::call(&[("calc__add", json!({"a": 1, "b": 1}))])
        }
    })
    .await;
    let gw = with_servers(&model, "", &[("calc", "mcp-calculator")]).await;
    let r = post_with(
        &gw,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-switchyard-mcp-max-iterations", "2")],
    )
    .await;
    let h = r.headers().clone();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "stopping after 2 results"
    );
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "2");
    assert_eq!(header(&h, "x-switchyard-mcp-iterations"), "2");
    assert_eq!(header(&h, "x-switchyard-mcp-stopped"), "max-iterations");
    assert_eq!(model.seen().len(), 3);
    assert_eq!(model.seen()[2]["tool_choice"], "none");
    // The header can only narrow the config's bound (8 here): 50 means 8.
    let model2 =
        Model::start(|_: &Conv| Turn::call(&[("calc__add", json!({"a": 1, "b": 1}))])).await;
    let gw2 = Gateway::start(
        &config(
            &model2,
            "openai-compatible",
            &stdio_server("calc", "mcp-calculator", &[]),
        )
        .replace("[mcp]\n", "[mcp]\nmax_iterations = 3\n"),
    )
    .await;
    ready_servers(&gw2, 1).await;
    let r = post_with(
        &gw2,
        "/v1/chat/completions",
        &chat_body(false),
        &[("x-switchyard-mcp-max-iterations", "50")],
    )
    .await;
    let h = r.headers().clone();
    let v: Value = r.json().await.unwrap();
    // A model that keeps calling even when told not to: its calls are dropped, the answer ends.
    assert_eq!(header(&h, "x-switchyard-mcp-stopped"), "max-iterations");
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "3");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(
        v["choices"][0]["message"].get("tool_calls").is_none(),
        "{v}"
    );
    assert_eq!(model2.seen().len(), 4);
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_loop() {
    let model = Model::start(|c: &Conv| {
        if c.results.is_empty() {
            Turn::call(&[("slow__sleep", json!({"ms": 3000}))])
        } else {
            Turn::say("too late")
        }
    })
    .await;
    let gw = with_servers(
        &model,
        "[server]\nsse_keep_alive_ms = 50\n",
        &[("slow", "mcp-slow")],
    )
    .await;
    let mut resp = gw.post("/v1/chat/completions", &chat_body(true)).await;
    // The first chunk (the role) arrives, then the client goes away while the tool sleeps.
    let first = resp.chunk().await.unwrap();
    assert!(first.is_some());
    drop(resp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    let in_flight = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_in_flight_requests "))
        .unwrap()
        .to_owned();
    assert_eq!(
        in_flight, "switchyard_in_flight_requests 0",
        "the loop is still running"
    );
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        model.seen().len(),
        1,
        "the model was called again after the client left"
    );
}

#[tokio::test]
async fn streamable_http_server_with_a_header_from_the_environment() {
    // mcp-kv over streamable HTTP, behind a bearer token read from the environment.
    let token = "kv-secret-token";
    let (mut child, url) = start_kv(token).await;
    let model = Model::start(|c: &Conv| match c.results.len() {
        0 => Turn::call(&[("kv__set", json!({"key": "colour", "value": "teal"}))]),
        1 => Turn::call(&[("kv__get", json!({"key": "colour"}))]),
        _ => Turn::say(c.results.join(" / ")),
    })
    .await;
    let server = format!(
        "[[mcp.servers]]\nname = \"kv\"\ntransport = \"http\"\nurl = \"{url}\"\nheaders = {{ Authorization = \"env.KV_AUTH\" }}\n"
    );
    let env = move |k: &str| (k == "KV_AUTH").then(|| format!("Bearer {token}"));
    let gw = Gateway::start_env(&config(&model, "openai-compatible", &server), &env).await;
    ready_servers(&gw, 1).await;
    let (status, h, body) = gw.chat(&chat_body(false)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "stored colour / teal"
    );
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "2");
    // The API shows the header's name, never its value.
    let v = gw
        .get("/api/mcp/servers/kv", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(v.contains("Authorization") && !v.contains(token), "{v}");

    // Without the token the server refuses: registration through the API reports it.
    let r = gw
        .post(
            "/api/mcp/servers",
            &json!({"name": "kv2", "transport": "http", "url": url}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let _ = child.kill().await;
}

#[tokio::test]
async fn the_gateway_is_an_mcp_server_at_slash_mcp() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;

    let model = Model::start(adder).await;
    let gw = Gateway::start(&format!(
        "[server]\nadmin_token = \"adm\"\n{}",
        config(
            &model,
            "openai-compatible",
            &stdio_server("calc", "mcp-calculator", &[])
        )
    ))
    .await;
    // Without the admin token: 401.
    let r = gw
        .http
        .post(gw.url("/mcp"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .get("/api/mcp/tools", Some("adm"))
        .await
        .json::<Value>()
        .await
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
            gw.url("/mcp"),
        )
        .auth_header("adm"),
    );
    let client = ().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert!(names.contains(&"calc__add".to_owned()), "{names:?}");
    let mut args = serde_json::Map::new();
    args.insert("a".into(), json!(20));
    args.insert("b".into(), json!(22));
    let r = client
        .call_tool(CallToolRequestParams::new("calc__add").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(r.content[0].as_text().unwrap().text, "42");
    assert_ne!(r.is_error, Some(true));
    let r = client
        .call_tool(CallToolRequestParams::new("calc__nope"))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn answers_built_on_tool_results_are_not_cached_and_modes_do_not_share_entries() {
    let model = Model::start(|c: &Conv| {
        if c.user.contains("no tools") {
            Turn::say("plain answer")
        } else {
            adder(c)
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "[cache]\nmode = \"exact\"\n\n{}",
        config(
            &model,
            "openai-compatible",
            &stdio_server("calc", "mcp-calculator", &[])
        )
    ))
    .await;
    gw.wait_ready().await;
    ready_servers(&gw, 1).await;
    let entries = || async {
        let v: Value = gw.get("/api/cache/stats", None).await.json().await.unwrap();
        v["entries"].as_u64().unwrap()
    };
    let send = |body: Value, mode: &'static str| {
        let gw = &gw;
        async move {
            let r = post_with(
                gw,
                "/v1/chat/completions",
                &body,
                &[("x-switchyard-mcp", mode)],
            )
            .await;
            let cache = header(r.headers(), "x-switchyard-cache");
            let v: Value = r.json().await.unwrap();
            (cache, v)
        }
    };
    // The loop ran a tool: not stored, the next identical request runs it again.
    let (c, v) = send(chat_body(false), "auto").await;
    assert_eq!(
        (c.as_str(), v["choices"][0]["message"]["content"].as_str()),
        ("miss", Some("The sum is 5."))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(entries().await, 0);
    let (c, _) = send(chat_body(false), "auto").await;
    assert_eq!(c, "miss");
    assert_eq!(model.seen().len(), 4);
    // No tool ran: stored and served.
    let plain =
        json!({"model": "mock/m", "messages": [{"role": "user", "content": "no tools please"}]});
    assert_eq!(send(plain.clone(), "auto").await.0, "miss");
    let deadline = Instant::now() + Duration::from_secs(5);
    while entries().await < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(send(plain.clone(), "auto").await.0, "hit-exact");
    // inject stores the model's tool call; auto must not be served that answer.
    assert_eq!(send(chat_body(false), "inject").await.0, "miss");
    while entries().await < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (c, v) = send(chat_body(false), "inject").await;
    assert_eq!(c, "hit-exact");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "calc__add"
    );
    let (c, v) = send(chat_body(false), "auto").await;
    assert_eq!(c, "miss");
    assert_eq!(v["choices"][0]["message"]["content"], "The sum is 5.");
    // Other offered tools, another entry: the same request offered calc__add alone misses, is
    // stored, and is then served (the offered set's key is stable).
    let only_add = || async {
        let r = post_with(
            &gw,
            "/v1/chat/completions",
            &chat_body(false),
            &[
                ("x-switchyard-mcp", "inject"),
                ("x-switchyard-mcp-tools", "calc__add"),
            ],
        )
        .await;
        header(r.headers(), "x-switchyard-cache")
    };
    assert_eq!(only_add().await, "miss");
    let offered = model.seen().last().expect("the model was called")["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|t| t["function"]["name"].clone())
                .collect::<Vec<_>>()
        });
    assert_eq!(offered, Some(vec![json!("calc__add")]));
    while entries().await < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(only_add().await, "hit-exact");
    // off: no tools in the request, its own entry.
    assert_eq!(send(plain, "off").await.0, "miss");
}

#[tokio::test]
async fn pii_redact_gives_tools_the_real_values_and_hides_their_results_from_the_model() {
    let token = "kv-secret-token";
    let (_child, url) = start_kv(token).await;
    // The model stores what the user gave (it only ever sees a placeholder), reads it back, and
    // says what it read.
    let model = Model::start(|c: &Conv| match c.results.len() {
        0 => {
            let value = c
                .user
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned();
            Turn::call(&[("kv__set", json!({"key": "mail", "value": value}))])
        }
        1 => Turn::call(&[("kv__get", json!({"key": "mail"}))]),
        _ => Turn::say(format!("I read back {}", c.results[1])),
    })
    .await;
    let extra = format!(
        "[[mcp.servers]]\nname = \"kv\"\ntransport = \"http\"\nurl = \"{url}\"\nheaders = {{ Authorization = \"env.KV_AUTH\" }}\n\n[[plugins]]\nname = \"pii-redact\"\nkind = \"builtin\"\n"
    );
    let env = move |k: &str| (k == "KV_AUTH").then(|| format!("Bearer {token}"));
    let gw = Gateway::start_env(&config(&model, "openai-compatible", &extra), &env).await;
    ready_servers(&gw, 1).await;
    let body = json!({"model": "mock/m", "messages": [{"role": "user", "content": "Remember my address ada@example.com"}]});
    let (status, _, body) = gw.chat(&body).await;
    assert_eq!(status, 200, "{body}");
    // The user sees their own value; the model never saw it, not even in the tool's result.
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "I read back ada@example.com"
    );
    let seen = serde_json::to_string(&model.seen()).unwrap();
    assert!(!seen.contains("ada@example.com"), "{seen}");
    assert!(seen.contains("[EMAIL_1]"), "{seen}");
    // The tool got the real value.
    let r = gw
        .post("/api/mcp/tools/kv__get/call", &json!({"key": "mail"}))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["text"], "ada@example.com", "{v}");
    let plugins: Value = gw.get("/api/plugins", None).await.json().await.unwrap();
    let stats = &plugins["data"][0]["stats"];
    assert_eq!(stats["tool_call"]["calls"], 2, "{plugins}");
    assert_eq!(stats["tool_result"]["calls"], 2, "{plugins}");
}

#[tokio::test]
async fn a_wasm_plugin_can_deny_a_tool_call_in_the_loop() {
    let (_child, url) = start_kv("t").await;
    let model = Model::start(|c: &Conv| match c.results.len() {
        0 => Turn::call(&[("kv__set", json!({"key": "k", "value": "v"}))]),
        _ => Turn::say(format!("The tool said: {}", c.results[0])),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = crate::plugins_wasm::module(
        dir.path(),
        "no-writes",
        &crate::plugins_wasm::answering_on(
            "on_tool_call",
            r#"{"action":"deny","message":"writes are off today"}"#,
        ),
    );
    let extra = format!(
        "[[mcp.servers]]\nname = \"kv\"\ntransport = \"http\"\nurl = \"{url}\"\nheaders = {{ Authorization = \"Bearer t\" }}\n\n{}",
        crate::plugins_wasm::entry("no-writes", &path, "")
    );
    let gw = Gateway::start(&config(&model, "openai-compatible", &extra)).await;
    ready_servers(&gw, 1).await;
    let body = json!({"model": "mock/m", "messages": [{"role": "user", "content": "store it"}]});
    let (status, _, body) = gw.chat(&body).await;
    assert_eq!(status, 200, "{body}");
    let said = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        said.contains("writes are off today") && said.contains("no-writes"),
        "{said}"
    );
    // The tool never ran: the key is not there.
    let r = gw
        .post("/api/mcp/tools/kv__get/call", &json!({"key": "k"}))
        .await;
    let v: Value = r.json().await.unwrap();
    assert_ne!(v["text"], "v", "{v}");
    let plugins: Value = gw.get("/api/plugins", None).await.json().await.unwrap();
    assert_eq!(
        plugins["data"][0]["stats"]["tool_call"]["blocks"], 1,
        "{plugins}"
    );
}

/// Starts mcp-kv over streamable HTTP behind `token`; returns the process and its URL.
async fn start_kv(token: &str) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(server_bin("mcp-kv"))
        .args(["--listen", "127.0.0.1:0"])
        .env("MCP_KV_TOKEN", token)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    loop {
        let line = lines.next_line().await.unwrap().expect("mcp-kv exited");
        if let Some(u) = line.strip_prefix("mcp-kv listening on ") {
            return (child, u.trim().to_owned());
        }
    }
}
