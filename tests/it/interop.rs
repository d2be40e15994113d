//! Interop: the official OpenAI and Anthropic Python SDKs against the real `switchyard` binary.
//!
//! `.ci/run` creates `.venv` with both SDKs. Without it the tests say so and pass locally, but
//! fail under CI (`CI` set), so CI can never skip them silently.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::mock::Mock;

fn python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SWITCHYARD_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide .venv with the openai and anthropic SDKs (see .ci/run)"
    );
    eprintln!(
        "skipping SDK interop: no .venv (run .ci/run or create .venv with openai and anthropic)"
    );
    None
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real binary with a config pointing at `mock`, and waits for /health.
async fn start_binary(mock: &Mock) -> (Running, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{0}/v1\"\nkeys = [\"sk-upstream-openai\"]\n\n[[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nkeys = [\"sk-upstream-anthropic\"]\n\n[[routes]]\nmodel = \"fast\"\ntargets = [{{ model = \"openai/gpt-4o-mini\" }}]\n",
        mock.url()
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, cfg).unwrap();
    let child = Running(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("SWITCHYARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = crate::gateway::client();
    for _ in 0..100 {
        if client.get(format!("{url}/health")).send().await.is_ok() {
            return (child, url, dir);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway did not start");
}

async fn run_script(script: &str) {
    let Some(py) = python() else { return };
    let mock = Mock::start().await;
    let (_gw, url, _dir) = start_binary(&mock).await;
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(py)
        .arg(&path)
        .env("SWITCHYARD_URL", &url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("interop: ok"), "{stdout}");
    assert!(
        mock.calls() >= 10,
        "the SDK calls reached the upstream ({} calls)",
        mock.calls()
    );
}

#[tokio::test]
async fn openai_python_sdk() {
    run_script("openai_sdk.py").await;
}

#[tokio::test]
async fn anthropic_python_sdk() {
    run_script("anthropic_sdk.py").await;
}
