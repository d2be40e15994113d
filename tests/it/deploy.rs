//! The docker compose stack, checked without a Docker engine: the gateway config it mounts is
//! valid, and tests/deploy/validate.py checks the compose file against the Compose schema,
//! Prometheus's config with promtool, and that every metric the Grafana dashboard queries is
//! one this gateway exports (from a live scrape).

use std::path::Path;

use switchyard::config::Config;

use crate::conformance::hello;
use crate::gateway::Gateway;
use crate::interop::python;
use crate::mock::Mock;

#[tokio::test]
async fn the_compose_stack_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/switchyard.toml")).unwrap();
    let env = |k: &str| {
        [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "SWITCHYARD_ADMIN_TOKEN",
            "MCP_KV_BEARER",
        ]
        .contains(&k)
        .then(|| "x".to_string())
    };
    let cfg =
        Config::parse(&text, &env).unwrap_or_else(|e| panic!("deploy/switchyard.toml: {e:?}"));
    assert_eq!(cfg.mcp.servers.len(), 1);
    assert!(cfg.telemetry.otlp_endpoint.is_some());

    let Some(py) = python() else { return };
    let mock = Mock::start().await;
    let gw = Gateway::start(&format!(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"k\"]\n",
        mock.url()
    ))
    .await;
    assert_eq!(gw.chat(&hello("p/m")).await.0, 200);
    let metrics = gw.get("/metrics", None).await.text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, metrics).unwrap();
    let out = tokio::process::Command::new(py)
        .arg(root.join("tests/deploy/validate.py"))
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("deploy: all checks passed"), "{stdout}");
}
