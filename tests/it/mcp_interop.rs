//! MCP interop: the official MCP Python SDK as a client of `/mcp` and as a legacy SSE server, and
//! a third-party MCP server from PyPI (`mcp-server-time`) in the tool loop. `.ci/run` installs
//! them into `.venv` (tests/interop/requirements.txt).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gateway::{Gateway, header};
use crate::interop::python;
use crate::mcp::server_bin;
use crate::model::{Conv, Model, Turn};

fn config(model: &Model, extra: &str) -> String {
    format!(
        "[[providers]]\nname = \"mock\"\nkind = \"openai-compatible\"\nbase_url = \"{}\"\nkeys = [\"sk-test\"]\n\n[mcp]\ntool_timeout_ms = 10000\n\n{extra}",
        model.openai_url()
    )
}

fn chat() -> Value {
    json!({"model": "mock/m", "messages": [{"role": "user", "content": "go"}]})
}

#[tokio::test]
async fn official_mcp_sdk_lists_and_calls_tools_on_slash_mcp() {
    let Some(py) = python() else { return };
    let model = Model::start(|_: &Conv| Turn::say("unused")).await;
    let calc = format!(
        "[[mcp.servers]]\nname = \"calc\"\ncommand = \"{}\"\n",
        server_bin("mcp-calculator").display()
    );
    let gw = Gateway::start(&format!(
        "[server]\nadmin_token = \"admin-secret\"\n{}",
        config(&model, &calc)
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = gw
            .get("/api/mcp/servers/calc", Some("admin-secret"))
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "connected" {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let script = format!("{}/tests/interop/mcp_client.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(py)
        .arg(&script)
        .env("SWITCHYARD_URL", gw.url(""))
        .env("SWITCHYARD_ADMIN_TOKEN", "admin-secret")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mcp_client.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("interop: ok"), "{stdout}");
    assert!(stdout.contains("calc__add"), "{stdout}");
}

#[tokio::test]
async fn a_third_party_server_from_pypi_runs_in_the_loop() {
    let Some(py) = python() else { return };
    let bin = py.with_file_name("mcp-server-time");
    assert!(
        bin.exists(),
        "{} missing: pip install -r tests/interop/requirements.txt",
        bin.display()
    );
    let model = Model::start(crate::mcp::calls_then_results(&[(
        "time__get_current_time",
        json!({"timezone": "Europe/Paris"}),
    )]))
    .await;
    // Registering a stdio server through the API needs the opt-in (no admin token here).
    let cfg = config(&model, "").replace("[mcp]\n", "[mcp]\nallow_stdio_registration = true\n");
    let gw = Gateway::start(&cfg).await;
    let r = gw
        .post(
            "/api/mcp/servers",
            &json!({"name": "time", "command": bin.display().to_string(), "args": ["--local-timezone", "UTC"]}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"time__get_current_time") && names.contains(&"time__convert_time"),
        "{names:?}"
    );
    let (status, h, body) = gw.chat(&chat()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "1");
    let answer: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(answer["timezone"], "Europe/Paris", "{answer}");
    assert!(
        answer["datetime"].as_str().unwrap().starts_with("20"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_legacy_sse_server_built_with_the_official_sdk() {
    let Some(py) = python() else { return };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let script = format!(
        "{}/tests/interop/mcp_sse_server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut child = tokio::process::Command::new(py)
        .args([script, port.to_string()])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the SSE server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let model = Model::start(crate::mcp::calls_then_results(&[(
        "legacy__shout",
        json!({"text": "hello over sse"}),
    )]))
    .await;
    let gw = Gateway::start(&config(&model, "")).await;
    let url = format!("http://127.0.0.1:{port}/sse");
    let r = gw
        .post(
            "/api/mcp/servers",
            &json!({"name": "legacy", "transport": "sse", "url": url}),
        )
        .await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["transport"], "sse");
    assert_eq!(v["tools"][0]["name"], "legacy__shout");
    let (status, h, body) = gw.chat(&chat()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "HELLO OVER SSE");
    assert_eq!(header(&h, "x-switchyard-mcp-tool-calls"), "1");
    // A URL that is not a legacy SSE endpoint is a clear registration error.
    let r = gw
        .post("/api/mcp/servers", &json!({"name": "wrong", "transport": "sse", "url": format!("http://127.0.0.1:{port}/nope")}))
        .await;
    assert_eq!(r.status(), 400);
    let _ = child.kill().await;
}
