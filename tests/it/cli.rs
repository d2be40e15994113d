//! The real binary: `switchyard check`.

use std::process::Command;

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

/// Runs `switchyard check` on a temporary file holding `config`.
pub fn check(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    switchyard()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn check_prints_every_problem_and_fails() {
    let out = check(
        "[[providers]]\nname = \"o\"\nkind = \"opnai\"\nkeys = [\"env.SWITCHYARD_TEST_UNSET_VAR\"]\nbogus = 1\n\n[[routes]]\nmodel = \"r\"\ntargets = [{ model = \"x/y\", weight = -2 }]\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "5 problem(s)",
        "providers[0].kind: unknown kind `opnai`",
        "providers[0].keys[0]: environment variable `SWITCHYARD_TEST_UNSET_VAR` is not set",
        "providers[0].bogus: unknown field",
        "routes[0].targets[0].weight",
        "routes[0].targets[0].model: unknown provider `x`",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

#[test]
fn check_accepts_a_good_config() {
    let out = check("[[providers]]\nname = \"local\"\nkind = \"ollama\"\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ok (1 provider(s), 0 route(s))"));
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = switchyard()
        .args(["check", "--config", "/nonexistent/switchyard.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// SIGTERM: the real binary stops accepting, finishes the request in flight, and exits 0.
#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    use std::time::Duration;

    use crate::mock::{Mock, Reply};

    let mock = Mock::start().await;
    mock.always(Reply::Slow(Duration::from_millis(600)));
    let mut gw = crate::gateway::Binary::start(&format!(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"k\"]\n",
        mock.url()
    ))
    .await;
    let req = crate::gateway::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&serde_json::json!({"model": "p/m", "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    let pending = tokio::spawn(req);
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.terminate();
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the request in flight completes");
    let status = tokio::time::timeout(Duration::from_secs(10), gw.wait())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
