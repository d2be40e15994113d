//! Interop: the official OpenAI and Anthropic Python SDKs against the real `switchyard` binary.
//!
//! `.ci/run` creates `.venv` with both SDKs. Without it the tests say so and pass locally, but
//! fail under CI (`CI` set), so CI can never skip them silently.

use std::path::PathBuf;

use crate::gateway::Binary;
use crate::mock::Mock;

pub fn python() -> Option<PathBuf> {
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

async fn run_script(script: &str) {
    run_script_with(script, "", 10).await;
}

/// Runs `script` against the binary with `extra` config, expecting at least `min_calls` upstream.
async fn run_script_with(script: &str, extra: &str, min_calls: usize) {
    let Some(py) = python() else { return };
    let mock = Mock::start().await;
    let gw = Binary::start(&format!(
        "{extra}\n[[providers]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{0}/v1\"\nkeys = [\"sk-upstream-openai\"]\n\n[[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nkeys = [\"sk-upstream-anthropic\"]\n\n[[providers]]\nname = \"gemini\"\nkind = \"gemini\"\nbase_url = \"{0}\"\nkeys = [\"sk-upstream-gemini\"]\n\n[[providers]]\nname = \"bedrock\"\nkind = \"bedrock\"\nbase_url = \"{0}\"\nregion = \"us-east-1\"\naws_access_key_id = \"AKIDEXAMPLE\"\naws_secret_access_key = \"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"\n\n[[routes]]\nmodel = \"fast\"\ntargets = [{{ model = \"openai/gpt-4o-mini\" }}]\n",
        mock.url()
    ))
    .await;
    let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(py)
        .arg(&path)
        .env("SWITCHYARD_URL", &gw.url)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("interop: ok"), "{stdout}");
    assert!(
        mock.calls() >= min_calls,
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

#[tokio::test]
async fn cache_hits_replay_like_live_streams_to_both_sdks() {
    run_script_with("cache_sdk.py", "[cache]\nenabled = true\n", 3).await;
}

#[tokio::test]
async fn governance_errors_as_both_sdks_see_them() {
    run_script_with("governance_sdk.py", "", 2).await;
}

#[tokio::test]
async fn governance_errors_as_both_sdks_see_them_on_redis() {
    let Some(redis) = crate::redis_server::RedisServer::start() else {
        return;
    };
    let gov = format!(
        "[governance]\nstore = \"redis\"\nredis_url = \"{}\"\n",
        redis.url
    );
    run_script_with("governance_sdk.py", &gov, 2).await;
}

#[tokio::test]
async fn openai_python_sdk_responses_api() {
    run_script_with("responses_sdk.py", "", 40).await;
}

#[tokio::test]
async fn google_genai_python_sdk() {
    run_script_with("genai_sdk.py", "", 25).await;
}

#[tokio::test]
async fn plugins_as_the_sdks_see_them() {
    let plugins = format!(
        "[[plugins]]\nname = \"prompt-guard\"\nkind = \"builtin\"\nconfig = {{ rules = [{{ name = \"no-keys\", pattern = \"(?i)private key\" }}] }}\n\n[[plugins]]\nname = \"pii-redact\"\nkind = \"builtin\"\n\n{}",
        crate::plugins_wasm::entry(
            "tag-and-route",
            &crate::plugins_wasm::sample(),
            "config = { rules = [{ model = \"openai/*\", contains = \"route me\", to = \"anthropic/claude-sonnet-4-5\" }] }"
        )
    );
    run_script_with("plugins_sdk.py", &plugins, 3).await;
}
