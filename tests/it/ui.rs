//! The web UI in a real headless Chromium (tests/ui/ui.mjs, playwright-core driving Debian's
//! chromium): every page loads without console errors, login, an MCP registration and a tool
//! call through the UI, log detail and filters, the what-if, a team and a key made, rotated and
//! disabled; screenshots go to
//! tests/ui/screenshots/. `.ci/run` installs chromium and `tests/run.sh` the node module; where
//! either is missing the test fails under CI and says why elsewhere.

use std::path::Path;

use serde_json::json;

use crate::conformance::{FAST_ROUTER, hello};
use crate::gateway::Gateway;
use crate::mcp::server_bin;
use crate::mock::{Mock, Reply};

#[tokio::test]
async fn the_web_ui_works_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let module = root.join("tests/ui/node_modules/playwright-core");
    if !Path::new(&chromium).exists() || !module.exists() {
        let why = format!(
            "needs {chromium} (apt-get install chromium) and {} (npm ci in tests/ui)",
            module.display()
        );
        assert!(std::env::var("CI").is_err(), "UI test cannot run: {why}");
        eprintln!("skipping the UI test: {why}");
        return;
    }
    let mock = Mock::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\ndata_dir = {:?}\nadmin_token = \"ui-admin-token\"\n\n[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"sk-ui-secret-0001\"]\n\n[[routes]]\nmodel = \"smart\"\ntargets = [{{ model = \"mock/gpt-4o-mini\" }}]\n\n[[routes]]\nmodel = \"shadowed\"\ntargets = [{{ model = \"mock/gpt-4o-mini\" }}]\ncache = {{ mode = \"shadow\" }}\n\n[[plugins]]\nname = \"prompt-guard\"\nkind = \"builtin\"\nconfig = {{ rules = [{{ name = \"no-keys\", pattern = \"(?i)private key\" }}] }}\n\n{FAST_ROUTER}\n[cache]\n",
        dir.path(),
        mock.url()
    );
    let gw = Gateway::start(&cfg).await;
    gw.wait_ready().await;
    // Some traffic for the dashboard, the log and the cache pages.
    for q in ["Hello", "What is the capital of France?", "Hello"] {
        let mut body = hello("smart");
        body["messages"][1]["content"] = json!(q);
        assert_eq!(gw.chat(&body).await.0, 200);
    }
    // A route in shadow mode: the second request is a shadow hit, answered live.
    for _ in 0..2 {
        let mut body = hello("shadowed");
        body["messages"][1]["content"] = json!("Tell me a joke");
        assert_eq!(gw.chat(&body).await.0, 200);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    mock.script([Reply::Status(400, None)]);
    let mut body = hello("mock/gpt-4o-mini");
    body["messages"][1]["content"] = json!("A request the provider refuses");
    body["max_tokens"] = json!(5);
    assert_eq!(gw.chat(&body).await.0, 400);

    let shots = root.join("tests/ui/screenshots");
    let out = tokio::process::Command::new("node")
        .arg(root.join("tests/ui/ui.mjs"))
        .arg(format!("http://{}", gw.addr))
        .arg("ui-admin-token")
        .arg(server_bin("mcp-calculator"))
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .env("MOCK_URL", mock.url())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "UI test failed:\n{stdout}\n{stderr}");
    for page in [
        "dashboard",
        "providers",
        "providers-added",
        "mcp",
        "cache",
        "logs",
        "plugins",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
    // The registration made in the browser is real: the gateway lists and persists it.
    let servers: serde_json::Value = gw
        .get("/api/mcp/servers", Some("ui-admin-token"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        servers["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "calc" && s["status"] == "connected"),
        "{servers}"
    );
    // The provider and route added in the browser are real, served, and recorded as the UI's.
    let versions: serde_json::Value = gw
        .get("/api/config/versions", Some("ui-admin-token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        versions["data"][0]["action"], "create route ui-route",
        "{versions}"
    );
    assert_eq!(versions["data"][0]["actor"], "ui", "{versions}");
    let (status, h, _) = gw.chat(&hello("ui-route")).await;
    assert_eq!(status, 200);
    assert_eq!(
        crate::gateway::header(&h, "x-switchyard-provider"),
        "ui-added"
    );
    // The key made in the browser is real, disabled there, and kept by hash only.
    let key: serde_json::Value = gw
        .get("/api/keys/ui-key", Some("ui-admin-token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(key["team"], "ui-team", "{key}");
    assert_eq!(key["active"], false, "{key}");
    assert_eq!(key["mcp_tools"][0], "calc__*", "{key}");
    // The answer reported wrong in the browser is gone, its pair kept.
    let reported: serde_json::Value = gw
        .get("/api/cache/feedback", Some("ui-admin-token"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        reported["data"][0]["cached_prompt"], "What is the capital of France?",
        "{reported}"
    );
    for page in ["keys", "teams", "customers", "cache-feedback"] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
    gw.shutdown().await;
}
